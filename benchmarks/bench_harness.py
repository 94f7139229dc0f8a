"""`sendvault harness load` beside wrk: the same load on the same server, in one run.

    flock /work/coord/bench.lock python benchmarks/bench_harness.py [--seconds 10] [--rounds 3] [--workers 2]

Starts `sendvault serve --dev --workers N` in a throwaway home, makes a pool of 10,000 tokens
through Get Token (the harness's own pool: the same values, so both generators resolve the same
tokens), then alternates, ``--rounds`` times, wrk (2 threads, a Lua script that checks each
answer's item count) and `harness load` (which checks every item's value), both with 50 keep-alive
connections POSTing 500-token resolve batches for ``--seconds``. Prints each generator's tokens/s,
p50/p99, its own CPU seconds, and the ratio of the medians: the issue's target is that the harness
reaches at least 80% of wrk, i.e. the generator is not the bottleneck. Only 127.0.0.1 is loaded.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _openbao import free_port
from _wrk import WrkResult, run_wrk
from sendvault.harness import Credentials, Target, TlsOptions
from sendvault.harness._http import Endpoint
from sendvault.harness.load import LoadOptions, _make_pool, run_load

BATCH, CONNECTIONS, POOL = 500, 50, 10_000


def _start(home: Path, workers: int) -> tuple[subprocess.Popen[bytes], dict[str, str], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sendvault", "serve", "--dev", "--https-port", str(port), "--http-port", "0",
         "--admin-port", "0", "--workers", str(workers)],
        env={**os.environ, "SENDVAULT_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    path = home / "dev-client.json"
    deadline = time.monotonic() + 120
    while not (path.exists() and path.stat().st_size):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("server did not start")
        time.sleep(0.2)
    time.sleep(3)  # workers import and open the store
    return proc, json.loads(path.read_text()), port


def _wrk(url: str, auth: str, tokens: list[str], seconds: int, rng: random.Random) -> tuple[WrkResult, float]:
    bodies = []
    for _ in range(64):
        picks = rng.sample(tokens, BATCH)
        items = [{"tokenRequestId": str(i), "token": t} for i, t in enumerate(picks)]
        bodies.append(json.dumps({"tokens": items}, separators=(",", ":")))
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = run_wrk(url, bodies, headers, '"tokenValue"', BATCH, connections=CONNECTIONS, seconds=seconds)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return result, cpu


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    parser.add_argument("--processes", type=int, default=0, help="harness generator processes (0: per core)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-harness-") as tmp:
        home = Path(tmp) / "home"
        proc, client, port = _start(home, args.workers)
        try:
            url = f"https://127.0.0.1:{port}"
            target = Target(
                url,
                Credentials(user=client["username"], password=client["password"]),
                TlsOptions(client["ca_file"]),
            )
            options = LoadOptions(
                connections=CONNECTIONS,
                batch=BATCH,
                duration=float(args.seconds),
                pool=POOL,
                processes=args.processes,
            )
            made = asyncio.run(_make_pool(target, options, Endpoint.parse(url)))
            tokens = [token for _, _, token in made]
            auth = "Basic " + base64.b64encode(f"{client['username']}:{client['password']}".encode()).decode()
            rng = random.Random(5)
            _wrk(url + "/v1/mc/resolve", auth, tokens, 3, rng)  # warm-up
            runs: dict[str, list[tuple[float, float, float, float, int]]] = {"wrk": [], "harness": []}
            for n in range(args.rounds):
                for who in ("wrk", "harness") if n % 2 == 0 else ("harness", "wrk"):
                    if who == "wrk":
                        r, cpu = _wrk(url + "/v1/mc/resolve", auth, tokens, args.seconds, rng)
                        runs["wrk"].append(
                            (r.items_per_s, r.p50_ms, r.p99_ms, cpu, r.bad + r.non2xx + r.socket_errors)
                        )
                    else:
                        report = run_load(target, options)
                        s = report.summary
                        bad = sum(s.errors.values())
                        runs["harness"].append(
                            (s.tokens_per_s, s.latency_ms.p50, s.latency_ms.p99, s.generator.cpu_seconds, bad)
                        )
                        if s.generator.warning:
                            print(f"  (harness round {n + 1}: {s.generator.warning})")
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    def median(rows: list[tuple[float, float, float, float, int]]) -> tuple[float, float, float, float, int]:
        return sorted(rows)[len(rows) // 2]

    print(
        f"{CONNECTIONS} connections, {BATCH} tokens per resolve call, {args.seconds} s per run, "
        f"{args.rounds} rounds alternating, server --workers {args.workers}, {os.cpu_count()} cores shared:"
    )
    print(f"{'generator':34} {'tokens/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'gen CPU s':>9} {'bad':>5}")
    for who, label in (
        ("wrk", "wrk -t2 (item count checked)"),
        ("harness", "harness load (every value checked)"),
    ):
        for i, row in enumerate(runs[who]):
            print(
                f"  {label + f' #{i + 1}':32} {row[0]:10,.0f} {row[1]:8.1f} {row[2]:8.1f} {row[3]:9.2f} {row[4]:5}"
            )
    w, h = median(runs["wrk"]), median(runs["harness"])
    print(f"{'median wrk':34} {w[0]:10,.0f} {w[1]:8.1f} {w[2]:8.1f} {w[3]:9.2f}")
    print(f"{'median harness load':34} {h[0]:10,.0f} {h[1]:8.1f} {h[2]:8.1f} {h[3]:9.2f}")
    print(f"ratio harness / wrk (tokens/s, medians): {h[0] / w[0]:.0%} (target >= 80%)")
    print(f"generator CPU per 1,000 tokens: wrk {w[3] / (w[0] * args.seconds) * 1000 * 1000:.2f} ms, "
          f"harness {h[3] / (h[0] * args.seconds) * 1000 * 1000:.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
