"""Where sslyze is installed, our verdicts on protocols and RSA key exchange match its results.

sslyze is AGPL and pins an older cryptography, so it is never a dependency: point
SENDVAULT_TEST_SSLYZE at an sslyze executable in its own virtualenv (or put one on PATH).
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import subprocess
from pathlib import Path

import pytest
import trustme
from tests.scan.conftest import ca_file, tls_server

from sendvault.scan import scan_tls

SSLYZE = os.environ.get("SENDVAULT_TEST_SSLYZE") or shutil.which("sslyze")
_SUITES = {"TLSv1.0": "tls_1_0", "TLSv1.1": "tls_1_1", "TLSv1.2": "tls_1_2", "TLSv1.3": "tls_1_3"}


@pytest.mark.skipif(SSLYZE is None, reason="sslyze is not installed (set SENDVAULT_TEST_SSLYZE)")
@pytest.mark.parametrize(
    "ciphers", ["ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256:AES128-SHA"]
)
def test_verdicts_match_sslyze(tmp_path: Path, ciphers: str) -> None:
    assert SSLYZE is not None
    ca = trustme.CA(key_type=trustme.KeyType.RSA)

    def configure(ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers)

    with tls_server(configure, ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA)) as server:
        ours = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path))
        out = tmp_path / "sslyze.json"
        subprocess.run(
            [SSLYZE, "--quiet", f"--json_out={out}", "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3",
             f"127.0.0.1:{server.port}"],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
    scan = json.loads(out.read_text())["server_scan_results"][0]["scan_result"]
    for label, key in _SUITES.items():
        accepted = bool(scan[f"{key}_cipher_suites"]["result"]["accepted_cipher_suites"])
        assert (ours.facts[label] == "accepted") == accepted, label
    theirs_rsa = any(
        not s["cipher_suite"]["openssl_name"].startswith(("ECDHE", "DHE", "TLS_"))
        for key in _SUITES.values()
        for s in scan[f"{key}_cipher_suites"]["result"]["accepted_cipher_suites"]
    )
    assert any(f.rule == "tls.rsa-key-exchange" for f in ours.findings) == theirs_rsa
