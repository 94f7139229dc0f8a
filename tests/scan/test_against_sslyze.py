"""Where sslyze is installed, our verdicts on protocols, RSA key exchange and the certificate match
its results on the same servers: modern, RSA key exchange beside ECDHE, a NULL suite, TLS 1.0
only, expired, wrong name, an expired intermediate, a 1024-bit RSA leaf and a SHA-1-signed leaf.

sslyze is AGPL and pins an older cryptography, so it is never a dependency: point
SENDVAULT_TEST_SSLYZE at an sslyze executable in its own virtualenv (or put one on PATH).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import ssl
import subprocess
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trustme
from tests.scan import _pki
from tests.scan.conftest import ca_file, tls_server

from sendvault.scan import scan_tls
from sendvault.scan.tls import local_support

SSLYZE = os.environ.get("SENDVAULT_TEST_SSLYZE") or shutil.which("sslyze")
_SUITES = {"TLSv1.0": "tls_1_0", "TLSv1.1": "tls_1_1", "TLSv1.2": "tls_1_2", "TLSv1.3": "tls_1_3"}
# Every OpenSSL suite name whose key exchange is not RSA starts so (TLS 1.3 suites with TLS_).
_NOT_RSA_KX = ("ECDHE-", "DHE-", "EDH-", "AECDH-", "ADH-", "PSK-", "SRP-", "TLS_")


def _tls12_plus(ciphers: str) -> Callable[[ssl.SSLContext], None]:
    def configure(ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers)

    return configure


def _tls10_only(ctx: ssl.SSLContext) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
    ctx.set_ciphers("ALL:@SECLEVEL=0")


_MODERN = _tls12_plus("ECDHE-RSA-AES128-GCM-SHA256")
_YESTERDAY = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)


def _sslyze(port: int, ca: str, out: Path) -> dict[str, Any]:
    assert SSLYZE is not None
    subprocess.run(
        [SSLYZE, "--quiet", f"--json_out={out}", "--tlsv1", "--tlsv1_1", "--tlsv1_2", "--tlsv1_3",
         "--certinfo", f"--certinfo_ca_file={ca}", f"localhost:{port}{{127.0.0.1}}"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.read_text())["server_scan_results"][0]["scan_result"]
    return result


def _accepted(theirs: dict[str, Any], key: str) -> list[str]:
    suites = theirs[f"{key}_cipher_suites"]["result"]["accepted_cipher_suites"]
    return [str(s["cipher_suite"]["openssl_name"]) for s in suites]


# A certificate for a server: trustme's (whose critical subjectAltName cryptography's verifier,
# and so sslyze, rejects) or one of tests/scan/_pki.py's chains (which both sides can judge).
_Make = Callable[[Path], tuple[Any, str]]


def _trustme(name: str, not_after: dt.datetime | None = None) -> _Make:
    def make(tmp_path: Path) -> tuple[Any, str]:
        ca = trustme.CA(key_type=trustme.KeyType.RSA)
        return ca.issue_cert(name, not_after=not_after, key_type=trustme.KeyType.RSA), ca_file(ca, tmp_path)

    return make


def _expired_intermediate(tmp_path: Path) -> tuple[Any, str]:
    pki = _pki.chain(tmp_path, "localhost", intermediate_not_after=_YESTERDAY)
    return pki, str(pki.ca_file)


def _rsa1024_leaf(tmp_path: Path) -> tuple[Any, str]:
    pki = _pki.chain(tmp_path, "localhost", leaf_key=_pki.rsa_key(1024))
    return pki, str(pki.ca_file)


def _sha1_leaf(tmp_path: Path) -> tuple[Any, str]:
    pki = _pki.sha1_leaf(tmp_path, 2048)
    return pki, str(pki.ca_file)


def _weak_keys(theirs: dict[str, Any]) -> bool:
    deployment = theirs["certificate_info"]["result"]["certificate_deployments"][0]
    minimum = {"RSAPublicKey": 2048, "DSAPublicKey": 2048, "EllipticCurvePublicKey": 256}
    return any(
        (c["public_key"].get("key_size") or 0) < minimum.get(c["public_key"]["algorithm"], 0)
        for c in deployment["received_certificate_chain"]
    )


_LEVEL0 = _tls12_plus("ECDHE+AESGCM:@SECLEVEL=0")


@pytest.mark.skipif(SSLYZE is None, reason="sslyze is not installed (set SENDVAULT_TEST_SSLYZE)")
@pytest.mark.parametrize(
    ("configure", "make", "pki"),
    [
        (_MODERN, _trustme("localhost"), False),
        (_tls12_plus("ECDHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256:AES128-SHA"), _trustme("localhost"),
         False),
        (_tls12_plus("ECDHE-RSA-AES128-GCM-SHA256:NULL-SHA256:@SECLEVEL=0"), _trustme("localhost"), False),
        (_tls10_only, _trustme("localhost"), False),
        (_MODERN, _trustme("localhost", _YESTERDAY), False),
        (_MODERN, _trustme("other.example"), False),
        (_LEVEL0, _expired_intermediate, True),
        (_LEVEL0, _rsa1024_leaf, True),
        (_LEVEL0, _sha1_leaf, True),
    ],
    ids=["modern", "rsa-key-exchange", "null-suite", "tls1.0-only", "expired", "wrong-name",
         "expired-intermediate", "rsa1024-leaf", "sha1-leaf"],
)  # fmt: skip
def test_verdicts_match_sslyze(
    tmp_path: Path, configure: Callable[[ssl.SSLContext], None], make: _Make, pki: bool
) -> None:
    if configure is _tls10_only and not local_support()["TLSv1.0"]:
        pytest.skip("this machine's OpenSSL cannot offer TLS 1.0")
    cert, ca = make(tmp_path)
    with tls_server(configure, cert) as server:
        ours = scan_tls("127.0.0.1", server.port, sni="localhost", ca_file=ca)
        theirs = _sslyze(server.port, ca, tmp_path / "sslyze.json")
    rules = {f.rule for f in ours.findings}
    accepted = {label: _accepted(theirs, key) for label, key in _SUITES.items()}
    for label, suites in accepted.items():
        assert (ours.facts[label] == "accepted") == bool(suites), label
    theirs_rsa = any(not s.startswith(_NOT_RSA_KX) for suites in accepted.values() for s in suites)
    assert ("tls.rsa-key-exchange" in rules) == theirs_rsa
    # sslyze validates with cryptography's verifier, which also rejects trustme's critical SAN;
    # so its verdict is read from the reason it gives, as ours is from the rule.
    deployment = theirs["certificate_info"]["result"]["certificate_deployments"][0]
    [supplied] = [
        p for p in deployment["path_validation_results"] if p["trust_store"]["name"] == "Supplied CA file"
    ]
    reason = str(supplied.get("validation_error") or "")
    assert ("tls.cert-expired" in rules) == ("not valid at validation time" in reason)
    assert ("tls.cert-hostname" in rules) == ("no matching subjectAltName" in reason)
    assert ("tls.weak-key" in rules) == _weak_keys(theirs)
    if pki:
        # Without trustme's critical SAN, any other reason sslyze gives is a trust verdict.
        other = (
            bool(reason) and "not valid at validation time" not in reason and "subjectAltName" not in reason
        )
        assert ("tls.cert-untrusted" in rules) == other, reason
