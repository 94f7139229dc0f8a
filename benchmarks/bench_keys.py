"""Key rotation on a large store: re-encryption (or re-indexing) speed, and the API's resolve
throughput while the server re-encrypts (re-indexes) in the background, as a share of its idle
throughput in the same run.

    flock /work/coord/bench.lock python benchmarks/bench_keys.py --home /work/benchdata/issue-13/vault \
        [--kind dek|index] [--size 1000000] [--seconds 10] [--workers 2] [--share 0.15] [--rounds 3] \
        [--lookup-batches 200]

``--kind dek`` (the default) rotates the data key, ``--kind index`` the blind-index key.

The store (``--size`` tokens, benchmarks/bench_vault.py's values) is built once and reused; each
measurement rotates to a fresh data key and retires the previous one, so every run re-encrypts
the whole store. Three figures, same store, same run:

1. ``sendvault keys reencrypt`` alone (no traffic): rows/s, the foreground command an operator runs.
2. ``sendvault serve --dev --workers N`` with ``reencrypt_share`` = ``--share``: wrk (50 keep-alive
   TLS connections, 500-token resolve batches, every answer checked) for ``--seconds`` while idle,
   then ``keys rotate dek`` and the same wrk load for ``--seconds`` while the server re-encrypts in
   the background; the server is then stopped and the rows moved in that window counted.
3. The ratio resolve-during / resolve-idle (target >= 70%) of each round, their median, and the
   ratio of the medians. The machine is shared: compare within a round, not across runs.

With ``--kind index`` the same store and the same steps measure the blind index's rotation
(``keys rotate index``): step 1 is ``keys reencrypt``'s re-indexing, once per round (rows/s, each
round's and the median; the run must retire the old key itself), steps 2 and 3 the server's
background re-indexing, and a fourth figure is added:

4. Get Token of known values while two blind-index keys are live (lookups ask for both) against
   one key, in process (``Vault.tokenize_many``, the call behind Get Token; ``--lookup-batches``
   batches of 500 values drawn from the store, one thread), values/s: one key just before each
   round's ``keys rotate index``, two keys just after it (no row moved yet). Each round's ratio
   and their median are printed, and every value must get the same token under two keys as under
   one, in every round.

Only 127.0.0.1 is loaded; each phase is bounded by ``--seconds`` (the foreground re-encryption or
re-indexing by the store's size: 20,000-35,000 rows/s on this machine, under a minute per million).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _openbao import free_port
from _wrk import WrkResult, run_wrk
from bench_api_resolve import BATCH, _resolve_bodies, _wait_for
from bench_vault import BATCH as LOOKUP_BATCH
from bench_vault import E, build, value_of
from sendvault.config import load_settings
from sendvault.vault import open_vault


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "sendvault", *args],
        env={**os.environ, "SENDVAULT_HOME": str(home)},
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    if done.returncode != 0:
        raise SystemExit(f"sendvault {' '.join(args)} failed: {done.stderr[-1000:]}")
    return done


def _usage(home: Path, kind: str = "dek") -> tuple[int, dict[int, int]]:
    """The current data (or blind-index) key, and the live rows under each key of that kind."""
    vault = open_vault(load_settings(env={"SENDVAULT_HOME": str(home)}))
    try:
        vault.refresh_keys()
        if kind == "index":
            return vault.index_key_ids[-1], vault.store.index_usage()
        return vault.keyring.current_key_id, vault.store.key_usage()
    finally:
        vault.close()


def _retire_old(home: Path) -> None:
    current, usage = _usage(home)
    vault = open_vault(load_settings(env={"SENDVAULT_HOME": str(home)}))
    try:
        for key in vault.store.load_keys():
            if key.purpose == "data" and key.id != current and not usage.get(key.id):
                vault.store.retire_key(key.id)
    finally:
        vault.close()


def foreground(home: Path) -> tuple[int, float]:
    """Rotate, then `keys reencrypt` with nothing else running: (rows, seconds)."""
    _cli(home, "keys", "rotate", "dek")
    done = json.loads(_cli(home, "keys", "reencrypt", "--json").stdout)
    _retire_old(home)
    return int(done["rows"]), float(done["seconds"])


def foreground_index(home: Path) -> tuple[int, float, list[int]]:
    """`keys reencrypt` after `keys rotate index`, nothing else running: (rows, seconds, retired)."""
    done = json.loads(_cli(home, "keys", "reencrypt", "--json").stdout)["index"]
    if not done["complete"]:
        raise SystemExit(f"keys reencrypt left the re-indexing incomplete: {done}")
    return int(done["rows"]), float(done["seconds"]), list(done["retired"])


def lookups(home: Path, batches: list[list[tuple[Any, str]]]) -> tuple[float, int, list[str]]:
    """Get Token of known values, in process: (values/s, blind-index keys live, the tokens)."""
    vault = open_vault(load_settings(env={"SENDVAULT_HOME": str(home)}))
    try:
        vault.refresh_keys()
        vault.tokenize_many(batches[0])  # warm the connection, the statements and the keys
        tokens: list[str] = []
        started = time.perf_counter()
        for batch in batches:
            tokens += [r.token or "" for r in vault.tokenize_many(batch) if not r.created]
        seconds = time.perf_counter() - started
        keys = len(vault.index_key_ids)
    finally:
        vault.close()
    if len(tokens) != sum(map(len, batches)) or not all(tokens):
        raise SystemExit("a known value got no token, or a new one: the benchmark store is not what it was")
    return len(tokens) / seconds, keys, tokens


def served(home: Path, tokens: list[str], args: argparse.Namespace, rng: random.Random) -> dict[str, float]:
    """Idle resolve load, then the same load during background re-encryption (or re-indexing)."""
    port = free_port()
    (home / "dev-client.json").unlink(missing_ok=True)
    env = {**os.environ, "SENDVAULT_HOME": str(home), "SENDVAULT_REENCRYPT_SHARE": str(args.share)}
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
        auth = base64.b64encode(f"{client['username']}:{client['password']}".encode()).decode()
        headers = {"Authorization": f"Basic {auth}", "Content-Type": "application/json"}
        url = f"https://127.0.0.1:{port}/v1/mc/resolve"

        def load() -> WrkResult:
            return run_wrk(
                url, _resolve_bodies(tokens, rng), headers, '"tokenValue"', BATCH, seconds=args.seconds
            )

        run_wrk(url, _resolve_bodies(tokens, rng), headers, '"tokenValue"', BATCH, seconds=3)  # warm-up
        idle = load()
        _cli(home, "keys", "rotate", args.kind)
        rotated = time.monotonic()
        # The server's background work polls every 5 s; the load starts once it has begun.
        time.sleep(5)
        during = load()
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    stopped = time.monotonic()
    current, usage = _usage(home, args.kind)
    moved = usage.get(current, 0)
    # All moved before the server stopped: the rate over the window is then a lower bound.
    finished = not any(n for key, n in usage.items() if key != current)
    # Finish the move in the foreground, so the next round starts from one key again (the
    # re-indexing retires the old blind-index key itself).
    _cli(home, "keys", "reencrypt")
    if args.kind == "dek":
        _retire_old(home)
    bad = during.bad + during.non2xx + during.socket_errors + idle.bad + idle.non2xx + idle.socket_errors
    return {
        "idle": idle.items_per_s,
        "during": during.items_per_s,
        "idle_p99": idle.p99_ms,
        "during_p99": during.p99_ms,
        "moved_rows_per_s": moved / (stopped - rotated),
        "finished": finished,
        "bad": bad,
    }


def _served_table(results: list[dict[str, float]], args: argparse.Namespace, work: str) -> float:
    """Print the served rounds; the median background rate (rows/s)."""
    print(
        f"serve --dev --workers {args.workers}, reencrypt_share {args.share}; wrk 50 connections, "
        f"500-token resolve batches, {args.seconds} s per phase:"
    )
    print(f"{'round':6} {'idle items/s':>13} {'during items/s':>15} {'ratio':>6} {'p99 idle/during ms':>20} "
          f"{'moved rows/s':>13} {'bad':>4}")  # fmt: skip
    for n, r in enumerate(results, start=1):
        print(
            f"{n:<6} {r['idle']:13,.0f} {r['during']:15,.0f} {r['during'] / r['idle']:6.0%} "
            f"{r['idle_p99']:9.1f}/{r['during_p99']:<10.1f} {'>=' if r['finished'] else '':>2}"
            f"{r['moved_rows_per_s']:11,.0f} {int(r['bad']):4}"
        )
    if any(r["finished"] for r in results):
        print("(>=: every row had moved before the server stopped, so the window's rate is a lower bound)")
    idle = statistics.median(r["idle"] for r in results)
    during = statistics.median(r["during"] for r in results)
    ratio = statistics.median(r["during"] / r["idle"] for r in results)
    print(
        f"resolve during background {work} / idle: median of the rounds' ratios {ratio:.0%}, "
        f"ratio of the medians {during / idle:.0%} (target >= 70%)"
    )
    return statistics.median(r["moved_rows_per_s"] for r in results)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path("/work/benchdata/issue-13/vault"))
    parser.add_argument(
        "--kind", choices=("dek", "index"), default="dek", help="the key rotated: data key or blind index"
    )
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--share", type=float, default=0.15, help="reencrypt_share of the server")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--lookup-batches", type=int, default=200, help="--kind index: Get Token batches of 500 per figure"
    )
    args = parser.parse_args()

    args.home.mkdir(parents=True, exist_ok=True)
    vault = open_vault(load_settings(env={"SENDVAULT_HOME": str(args.home)}))
    if vault.store.count() < args.size:
        build(vault, args.size)
    vault.refresh_keys()
    unfinished = len(vault.index_key_ids) > 1
    vault.close()
    if unfinished:  # an earlier run stopped mid-rotation: one key again before measuring
        _cli(args.home, "keys", "reencrypt")
    db = sqlite3.connect(args.home / "sendvault.db")
    tokens = [t for (t,) in db.execute("SELECT token FROM contacts WHERE erased_at IS NULL LIMIT 200000")]
    (live,) = db.execute("SELECT count(*) FROM contacts WHERE erased_at IS NULL").fetchone()
    db.close()
    rng = random.Random(13)
    print(f"store: {live:,} live tokens (SQLite), 2-core machine")
    if args.kind == "index":
        index_rotation(args, tokens, rng)
        return

    rows, seconds = foreground(args.home)
    print(f"keys reencrypt alone: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s")
    results = [served(args.home, tokens, args, rng) for _ in range(args.rounds)]
    moved = _served_table(results, args, "re-encryption")
    print(
        f"background re-encryption under load: {moved:,.0f} rows/s "
        f"({moved / (rows / seconds):.0%} of the foreground rate); a 1,000,000-row store moves in "
        f"{1_000_000 / moved / 60:.0f} min"
    )


def index_rotation(args: argparse.Namespace, tokens: list[str], rng: random.Random) -> None:
    """``--kind index``: Get Token lookups under one blind-index key, then two (just rotated), and
    the foreground re-indexing, each round; then resolve during background re-indexing."""
    picks = random.Random(16)
    batches = [
        [(E, value_of(i)) for i in picks.sample(range(args.size), LOOKUP_BATCH)]
        for _ in range(args.lookup_batches)
    ]
    pairs: list[tuple[float, float]] = []
    moves: list[tuple[int, float]] = []
    reference: list[str] = []
    for _ in range(args.rounds):
        one, keys, found = lookups(args.home, batches)
        if keys != 1:
            raise SystemExit(f"expected one blind-index key before the rotation, found {keys}")
        reference[:] = reference or found
        if found != reference:
            raise SystemExit("a known value's token changed between rounds")
        _cli(args.home, "keys", "rotate", "index")
        both, keys, found = lookups(args.home, batches)
        if keys != 2:
            raise SystemExit(f"expected two blind-index keys after the rotation, found {keys}")
        if found != reference:
            raise SystemExit("a known value got another token while two blind-index keys were live")
        pairs.append((one, both))
        rows, seconds, retired = foreground_index(args.home)
        if not retired:
            raise SystemExit("keys reencrypt re-indexed every row but kept the old blind-index key")
        moves.append((rows, seconds))
    print("keys reencrypt after keys rotate index (re-indexing alone; the old key retired by the run):")
    for n, (rows, seconds) in enumerate(moves, start=1):
        print(f"  round {n}: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s")
    rate = statistics.median(rows / seconds for rows, seconds in moves)
    print(f"  median {rate:,.0f} rows/s; a 1,000,000-row store re-indexes in {1_000_000 / rate:.0f} s")
    print(
        f"Get Token of known values, in process, {args.lookup_batches} batches of {LOOKUP_BATCH}, "
        "one thread; two keys: just after keys rotate index, no row moved yet:"
    )
    print(f"{'round':6} {'one key values/s':>17} {'two keys values/s':>18} {'ratio':>6}")
    for n, (one, both) in enumerate(pairs, start=1):
        print(f"{n:<6} {one:17,.0f} {both:18,.0f} {both / one:6.0%}")
    ratio = statistics.median(both / one for one, both in pairs)
    print(f"Get Token with two blind-index keys live / one: median of the rounds' ratios {ratio:.0%}")
    results = [served(args.home, tokens, args, rng) for _ in range(args.rounds)]
    moved = _served_table(results, args, "re-indexing")
    print(
        f"background re-indexing under load: {moved:,.0f} rows/s ({moved / rate:.0%} of the "
        f"foreground rate); a 1,000,000-row store moves in {1_000_000 / moved / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
