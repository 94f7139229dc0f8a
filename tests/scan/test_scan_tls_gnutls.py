"""RC4 and 3DES acceptance against a real server: GnuTLS's ``gnutls-serv`` (Debian's gnutls-bin).

Debian's OpenSSL (and so stunnel4) is built without any RC4 or 3DES TLS suite, but GnuTLS 3.7
still has both behind its priority string. ``gnutls-serv`` cannot be told which address to
listen on (it takes every one), so it runs in a network namespace of its own with only a
loopback interface, and the scan runs beside it there.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import trustme

_NEEDS = ("gnutls-serv", "unshare", "ip")

# Inside the namespace: bring loopback up, start gnutls-serv on a free port, scan it, stop it.
_SCRIPT = r"""
import socket, subprocess, sys, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = subprocess.Popen(
    ["gnutls-serv", "-q", "-p", str(port), "--x509certfile", sys.argv[1], "--x509keyfile", sys.argv[2],
     "--priority", "NORMAL:+3DES-CBC:+ARCFOUR-128:+RSA:-VERS-TLS1.3:-VERS-TLS1.1:-VERS-TLS1.0"],
    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
try:
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.05)
    done = subprocess.run([sys.executable, "-m", "sendvault", "scan", "tls", f"127.0.0.1:{port}",
                           "--ca", sys.argv[3], "--json"], capture_output=True, text=True, timeout=120)
    sys.stdout.write(done.stdout)
    sys.exit(done.returncode)
finally:
    server.terminate()
    server.wait(timeout=10)
"""


def test_rc4_and_3des_accepted_by_a_real_gnutls_server_are_reported(tmp_path: Path) -> None:
    missing = [tool for tool in _NEEDS if shutil.which(tool) is None]
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"{missing} missing: .ci/run installs gnutls-bin, util-linux and iproute2")
        pytest.skip(f"{missing} not installed (apt-get install gnutls-bin)")
    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    leaf = ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA)
    leaf.cert_chain_pems[0].write_to_path(tmp_path / "cert.pem")
    leaf.private_key_pem.write_to_path(tmp_path / "key.pem")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    run = subprocess.run(
        ["unshare", "--net", "--", sys.executable, "-c", _SCRIPT,
         str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), str(tmp_path / "ca.pem")],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    if "unshare failed" in run.stderr or "Operation not permitted" in run.stderr:
        pytest.skip(f"no network namespace here: {run.stderr.strip()[:200]}")
    assert run.returncode == 1, run.stderr
    [target] = json.loads(run.stdout)["targets"]
    details = {f["rule"]: f["detail"] for f in target["findings"]}
    assert set(details) == {"tls.rsa-key-exchange", "tls.weak-cipher"}
    tls12 = target["facts"]["ciphers"]["TLSv1.2"]
    for suite in ("RC4-SHA", "DES-CBC3-SHA", "ECDHE-RSA-RC4-SHA", "ECDHE-RSA-DES-CBC3-SHA"):
        assert suite in tls12
        assert f"{suite} (broken cipher)" in details["tls.weak-cipher"]
    assert "RC4-SHA" in details["tls.rsa-key-exchange"]
    assert "ECDHE-RSA-RC4-SHA" not in details["tls.rsa-key-exchange"]
    assert target["facts"]["TLSv1.0"] == "refused"
