"""`sendvault scan ssh` vs the ssh-audit CLI on the same loopback sshd, same run, same verdicts?

    flock /work/coord/bench.lock python benchmarks/bench_scan_ssh.py [--runs 5] [--config legacy]

Starts Debian's sshd (tests/scan/ssh_servers.py, ``modern`` or ``legacy`` configuration) on a
free 127.0.0.1 port, then times, alternating run by run, a fresh `sendvault scan ssh --json`
process (as a user runs it, and with ``--fingerprints``, which reads every host key as ssh-audit
does, Ed25519 and ECDSA too) and ssh-audit (`pip install -e '.[dev]'`) twice: as a user runs it
by default, and with ``--skip-rate-test`` (without its DHEat connection-rate test, which
sendvault does not make: the peer the issue's target is judged on). Prints the medians, the
ratios, and whether both tools flag the same algorithms. Both CLIs start a Python interpreter;
the in-process figure shows the scan without it. Each run starts 0.2 s after the one before, so
that no run pays for the server processes of another.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))
from tests.scan.ssh_servers import sshd

from sendvault.scan.ssh import scan_ssh


def _timed(args: list[str]) -> tuple[float, str]:
    # Bytecode as an installed package has it (pip compiles ssh-audit's at install time).
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    # The server's processes for the previous run's connections have gone by now: no run pays
    # for the one before it (the machine has two cores, and sshd is on it).
    time.sleep(0.2)
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, check=False, env=env)
    return time.perf_counter() - t0, done.stdout


def _flagged_ours(doc: str) -> set[str]:
    (target,) = json.loads(doc)["targets"]
    names = set()
    for f in target["findings"]:
        if f["rule"] in (
            "ssh.rsa-key-exchange",
            "ssh.weak-kex",
            "ssh.weak-cipher",
            "ssh.weak-mac",
            "ssh.terrapin",
        ):
            names.update(f["detail"].split(": ", 1)[1].split(", "))
    return names


def _flagged_theirs(doc: str) -> set[str]:
    # The categories and reasons sendvault judges (see tests/scan/test_against_ssh_audit.py).
    ignored = ("backdoored", "post-quantum", "encrypt-and-MAC", "weak random number")
    data = json.loads(doc)
    names = set()
    for category in ("kex", "enc", "mac"):
        for entry in data.get(category, []):
            notes = [n for level in ("fail", "warn") for n in entry.get("notes", {}).get(level, [])]
            if entry["algorithm"].startswith("diffie-hellman-"):
                notes = [n for n in notes if "112-bits" not in n]
            if any(not any(i in n for i in ignored) for n in notes):
                names.add(entry["algorithm"])
    return names


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--config", choices=["modern", "legacy"], default="legacy")
    parser.add_argument("--ssh-audit", default=shutil.which("ssh-audit"))
    args = parser.parse_args()
    if not args.ssh_audit:
        raise SystemExit("ssh-audit not found: pip install -e '.[dev]'")
    with sshd(args.config) as server:
        target = f"127.0.0.1:{server.port}"
        ours_cmd = [sys.executable, "-m", "sendvault", "scan", "ssh", target, "--json"]
        every_cmd = [*ours_cmd, "--fingerprints"]
        fast_cmd = [args.ssh_audit, "-j", "--skip-rate-test", target]
        full_cmd = [args.ssh_audit, "-j", target]
        _timed(ours_cmd)  # warm-up: writes our bytecode once, as an install would
        ours, every, fast, full, inproc = [], [], [], [], []
        for _ in range(args.runs):
            time.sleep(0.2)
            t0 = time.perf_counter()
            scan_ssh("127.0.0.1", server.port)
            inproc.append(time.perf_counter() - t0)
            ours.append(_timed(ours_cmd))
            every.append(_timed(every_cmd))
            fast.append(_timed(fast_cmd))
            full.append(_timed(full_cmd))
    t_ours = statistics.median(t for t, _ in ours)
    t_every = statistics.median(t for t, _ in every)
    t_fast = statistics.median(t for t, _ in fast)
    t_full = statistics.median(t for t, _ in full)
    t_inproc = statistics.median(inproc)
    print(f"sshd configuration: {args.config}; median of {args.runs} runs, alternating (machine shared)")
    print(f"ssh-audit --skip-rate-test:  {t_fast * 1000:6.0f} ms")
    print(f"ssh-audit (default):         {t_full * 1000:6.0f} ms")
    print(f"sendvault scan ssh (CLI):    {t_ours * 1000:6.0f} ms   "
          f"ratio {t_fast / t_ours:.1f}x vs --skip-rate-test (target >= 5x), {t_full / t_ours:.1f}x vs default")  # fmt: skip
    print(f"  with --fingerprints:       {t_every * 1000:6.0f} ms   "
          f"ratio {t_fast / t_every:.1f}x vs --skip-rate-test (every host key read, as ssh-audit reads them)")  # fmt: skip
    print(f"sendvault scan ssh (in-process): {t_inproc * 1000:4.0f} ms   "
          f"ratio {t_fast / t_inproc:.1f}x vs --skip-rate-test (no interpreter or CLI start-up)")  # fmt: skip
    a, b = _flagged_ours(ours[0][1]), _flagged_theirs(fast[0][1])
    print(
        f"flagged algorithms agree: {a == b} ({len(a)} flagged)"
        + ("" if a == b else f" ours-only {a - b} theirs-only {b - a}")
    )


if __name__ == "__main__":
    main()
