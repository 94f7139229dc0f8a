"""Data-key rotation on a large store: re-encryption speed, and the API's resolve throughput while
the server re-encrypts in the background, as a share of its idle throughput in the same run.

    flock /work/coord/bench.lock python benchmarks/bench_keys.py --home /work/benchdata/issue-13/vault \
        [--size 1000000] [--seconds 10] [--workers 2] [--share 0.15] [--rounds 3]

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

Only 127.0.0.1 is loaded; each phase is bounded by ``--seconds``.
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

sys.path.insert(0, str(Path(__file__).parent))

from _openbao import free_port
from _wrk import WrkResult, run_wrk
from bench_api_resolve import BATCH, _resolve_bodies, _wait_for
from bench_vault import build
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


def _usage(home: Path) -> tuple[int, dict[int, int]]:
    vault = open_vault(load_settings(env={"SENDVAULT_HOME": str(home)}))
    try:
        vault.refresh_keys()
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


def served(home: Path, tokens: list[str], args: argparse.Namespace, rng: random.Random) -> dict[str, float]:
    """Idle resolve load, then the same load during background re-encryption."""
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
        _cli(home, "keys", "rotate", "dek")
        rotated = time.monotonic()
        # The server's re-encryption polls every 5 s; the load starts once it has begun.
        time.sleep(5)
        during = load()
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    stopped = time.monotonic()
    current, usage = _usage(home)
    moved = usage.get(current, 0)
    # Finish the move in the foreground, so the next round starts from one key again.
    _cli(home, "keys", "reencrypt")
    _retire_old(home)
    bad = during.bad + during.non2xx + during.socket_errors + idle.bad + idle.non2xx + idle.socket_errors
    return {
        "idle": idle.items_per_s,
        "during": during.items_per_s,
        "idle_p99": idle.p99_ms,
        "during_p99": during.p99_ms,
        "moved_rows_per_s": moved / (stopped - rotated),
        "bad": bad,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--home", type=Path, default=Path("/work/benchdata/issue-13/vault"))
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--share", type=float, default=0.15, help="reencrypt_share of the server")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    args.home.mkdir(parents=True, exist_ok=True)
    vault = open_vault(load_settings(env={"SENDVAULT_HOME": str(args.home)}))
    if vault.store.count() < args.size:
        build(vault, args.size)
    vault.close()
    db = sqlite3.connect(args.home / "sendvault.db")
    tokens = [t for (t,) in db.execute("SELECT token FROM contacts WHERE erased_at IS NULL LIMIT 200000")]
    (live,) = db.execute("SELECT count(*) FROM contacts WHERE erased_at IS NULL").fetchone()
    db.close()
    rng = random.Random(13)

    rows, seconds = foreground(args.home)
    print(f"store: {live:,} live tokens (SQLite), 2-core machine")
    print(f"keys reencrypt alone: {rows:,} rows in {seconds:.1f} s = {rows / seconds:,.0f} rows/s")
    results = [served(args.home, tokens, args, rng) for _ in range(args.rounds)]
    print(
        f"serve --dev --workers {args.workers}, reencrypt_share {args.share}; wrk 50 connections, "
        f"500-token resolve batches, {args.seconds} s per phase:"
    )
    print(f"{'round':6} {'idle items/s':>13} {'during items/s':>15} {'ratio':>6} {'p99 idle/during ms':>20} "
          f"{'moved rows/s':>13} {'bad':>4}")  # fmt: skip
    for n, r in enumerate(results, start=1):
        print(
            f"{n:<6} {r['idle']:13,.0f} {r['during']:15,.0f} {r['during'] / r['idle']:6.0%} "
            f"{r['idle_p99']:9.1f}/{r['during_p99']:<10.1f} {r['moved_rows_per_s']:13,.0f} {int(r['bad']):4}"
        )
    idle = statistics.median(r["idle"] for r in results)
    during = statistics.median(r["during"] for r in results)
    ratio = statistics.median(r["during"] / r["idle"] for r in results)
    print(
        f"resolve during background re-encryption / idle: median of the rounds' ratios {ratio:.0%}, "
        f"ratio of the medians {during / idle:.0%} (target >= 70%)"
    )
    moved = statistics.median(r["moved_rows_per_s"] for r in results)
    print(
        f"background re-encryption under load: {moved:,.0f} rows/s "
        f"({moved / (rows / seconds):.0%} of the foreground rate); a 1,000,000-row store moves in "
        f"{1_000_000 / moved / 60:.0f} min"
    )


if __name__ == "__main__":
    main()
