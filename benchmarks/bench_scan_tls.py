"""Full `sendvault scan tls` of one loopback endpoint vs the sslyze CLI, same run, same verdicts?

    python benchmarks/bench_scan_tls.py [--sslyze PATH] [--runs 3]

sslyze is AGPL and pins an older cryptography, so it lives in its own virtualenv
(``python3 -m venv /tmp/sslyze && /tmp/sslyze/bin/pip install sslyze``); pass its ``sslyze``
executable with ``--sslyze``. The endpoint is a loopback server with an RSA certificate that
accepts TLS 1.2 with ECDHE, RSA key exchange and a CBC suite, so both tools have something to
find. Prints both times (median of ``--runs``), the ratio (issue 6's target: >= 5x faster) and
whether the verdicts on protocol versions and RSA key exchange agree.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trustme

sys.path.insert(0, str(Path(__file__).parent.parent))
from tests.scan.conftest import tls_server

from sendvault.scan import scan_tls


def configure(ctx: ssl.SSLContext) -> None:
    """TLS 1.2 only, with one ECDHE, one RSA-key-exchange and one CBC suite."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256:AES128-SHA")


def ours(port: int, ca: str) -> tuple[float, dict[str, bool], bool]:
    t0 = time.perf_counter()
    result = scan_tls("127.0.0.1", port, ca_file=ca)
    elapsed = time.perf_counter() - t0
    versions = {k: v == "accepted" for k, v in result.facts.items() if k.startswith("TLSv")}
    return elapsed, versions, any(f.rule == "tls.rsa-key-exchange" for f in result.findings)


def ours_cli(port: int, ca: str) -> tuple[float, dict[str, bool], bool]:
    """The same scan as a user runs it: a fresh `sendvault scan tls` process."""
    # Bytecode as an installed package has it: pip compiles sslyze's modules at install time, and
    # a PYTHONDONTWRITEBYTECODE inherited from the shell would make every run of ours recompile.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "tls", f"127.0.0.1:{port}", "--ca", ca, "--json"],
        capture_output=True, timeout=300, check=False, env=env,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    (target,) = json.loads(done.stdout)["targets"]
    versions = {k: v == "accepted" for k, v in target["facts"].items() if k.startswith("TLSv")}
    return elapsed, versions, any(f["rule"] == "tls.rsa-key-exchange" for f in target["findings"])


def theirs(sslyze: str, port: int, ca: str, tmp: Path) -> tuple[float, dict[str, bool], bool]:
    out = tmp / "sslyze.json"
    t0 = time.perf_counter()
    subprocess.run(
        [sslyze, "--quiet", f"--json_out={out}", "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3", "--certinfo",
         f"--certinfo_ca_file={ca}", f"127.0.0.1:{port}"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    elapsed = time.perf_counter() - t0
    doc = json.loads(out.read_text())
    scan = doc["server_scan_results"][0]["scan_result"]
    names = {"TLSv1.0": "tls_1_0_cipher_suites", "TLSv1.1": "tls_1_1_cipher_suites",
             "TLSv1.2": "tls_1_2_cipher_suites", "TLSv1.3": "tls_1_3_cipher_suites"}  # fmt: skip
    versions = {}
    rsa = False
    for label, key in names.items():
        accepted = scan[key]["result"]["accepted_cipher_suites"]
        versions[label] = bool(accepted)
        for suite in accepted:
            name = suite["cipher_suite"]["openssl_name"]
            if name.startswith(("AES", "DES", "RC4", "CAMELLIA", "SEED", "IDEA")):  # no ECDHE/DHE prefix
                rsa = True
    return elapsed, versions, rsa


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sslyze", default=shutil.which("sslyze") or "/tmp/sslyze/bin/sslyze")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if not Path(args.sslyze).exists():
        raise SystemExit(f"sslyze not found at {args.sslyze}; see the module docstring")
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        ca.cert_pem.write_to_path(tmp / "ca.pem")
        ca_file = str(tmp / "ca.pem")
        with tls_server(configure, ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA)) as server:
            a = [ours(server.port, ca_file) for _ in range(args.runs)]
            ours_cli(server.port, ca_file)  # warm-up: writes our bytecode once, as an install would
            c = [ours_cli(server.port, ca_file) for _ in range(args.runs)]
            b = [theirs(args.sslyze, server.port, ca_file, tmp) for _ in range(args.runs)]
    t_ours = statistics.median(x[0] for x in a)
    t_theirs = statistics.median(x[0] for x in b)
    t_cli = statistics.median(x[0] for x in c)
    print(f"sslyze CLI:                      {t_theirs * 1000:6.0f} ms   (median of {args.runs})")
    print(
        f"sendvault scan tls (CLI):        {t_cli * 1000:6.0f} ms   ratio {t_theirs / t_cli:.1f}x (target >= 5x)"
    )
    print(
        f"sendvault scan tls (in-process): {t_ours * 1000:6.0f} ms   ratio {t_theirs / t_ours:.1f}x (no interpreter start-up)"
    )
    print(f"protocols: sendvault {c[0][1]}  sslyze {b[0][1]}  agree: {c[0][1] == b[0][1] == a[0][1]}")
    print(f"RSA key exchange: sendvault {c[0][2]}  sslyze {b[0][2]}  agree: {c[0][2] == b[0][2] == a[0][2]}")


if __name__ == "__main__":
    main()
