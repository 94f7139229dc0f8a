"""`scan tls` against loopback servers with one weakness each."""

from __future__ import annotations

import datetime as dt
import http.server
import socket
import ssl
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import trustme
from tests.scan.conftest import TlsServer, ca_file, http_server, tls_server

from sendvault.scan import Severity, exit_code, scan_tls
from sendvault.scan.tls import local_support
from sendvault.server.tls import TLS12_CIPHERS


def _modern(ctx: ssl.SSLContext) -> None:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)


def _rules(result: object) -> set[str]:
    return {f.rule for f in result.findings}  # type: ignore[attr-defined]


def test_modern_endpoint_passes(tmp_path: Path) -> None:
    ca = trustme.CA()
    with tls_server(_modern, ca.issue_cert("127.0.0.1", "localhost")) as server:
        result = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path))
    assert result.findings == []
    assert result.facts["TLSv1.2"] == "accepted"
    assert result.facts["TLSv1.3"] == "accepted"
    assert result.facts["TLSv1.0"] == "refused"
    assert exit_code([result], Severity.MEDIUM) == 0


def test_legacy_protocol_is_reported(tmp_path: Path) -> None:
    if not local_support()["TLSv1.0"]:
        pytest.skip("this machine's OpenSSL cannot offer TLS 1.0")
    ca = trustme.CA()

    def legacy(ctx: ssl.SSLContext) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers("ALL:@SECLEVEL=0")

    with tls_server(legacy, ca.issue_cert("127.0.0.1")) as server:
        result = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path))
    assert "tls.legacy-protocol" in _rules(result)
    assert exit_code([result], Severity.MEDIUM) == 1


def test_rsa_key_exchange_and_cbc_are_reported_beside_ecdhe(tmp_path: Path) -> None:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)

    def rsa(ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256:AES128-GCM-SHA256:AES128-SHA")

    with tls_server(rsa, ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA)) as server:
        result = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path))
    assert _rules(result) == {"tls.rsa-key-exchange", "tls.weak-cipher"}
    rsa_finding = next(f for f in result.findings if f.rule == "tls.rsa-key-exchange")
    assert "AES128-GCM-SHA256" in rsa_finding.detail
    assert "ECDHE" not in rsa_finding.detail


@pytest.mark.parametrize(
    ("names", "kwargs", "use_ca", "rule"),
    [
        (
            ("127.0.0.1",),
            {"not_after": dt.datetime.now(dt.UTC) - dt.timedelta(days=1)},
            True,
            "tls.cert-expired",
        ),
        (
            ("127.0.0.1",),
            {"not_after": dt.datetime.now(dt.UTC) + dt.timedelta(days=10)},
            True,
            "tls.cert-expiring",
        ),
        (
            ("127.0.0.1",),
            {"not_before": dt.datetime.now(dt.UTC) + dt.timedelta(days=1)},
            True,
            "tls.cert-expired",
        ),
        (("other.example",), {}, True, "tls.cert-hostname"),
        (("127.0.0.1",), {}, False, "tls.cert-untrusted"),
    ],
    ids=["expired", "expiring", "not-yet-valid", "wrong-name", "untrusted"],
)
def test_certificate_problems(
    tmp_path: Path, names: tuple[str, ...], kwargs: dict[str, object], use_ca: bool, rule: str
) -> None:
    ca = trustme.CA()
    with tls_server(_modern, ca.issue_cert(*names, **kwargs)) as server:  # type: ignore[arg-type]
        result = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path) if use_ca else None)
    assert [f.rule for f in result.findings] == [rule]  # each problem once, under its own rule


def test_sni_is_matched_instead_of_the_host(tmp_path: Path) -> None:
    ca = trustme.CA()
    with tls_server(_modern, ca.issue_cert("api.example.test")) as server:
        result = scan_tls("127.0.0.1", server.port, sni="api.example.test", ca_file=ca_file(ca, tmp_path))
    assert result.findings == []


def test_unreachable_endpoint_is_unknown_not_pass() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = scan_tls("127.0.0.1", port, timeout=1)
    assert result.passed == 0
    assert result.unknown
    assert exit_code([result], Severity.MEDIUM) == 2


def test_rules_reference_is_current() -> None:
    from sendvault.scan.findings import rules_reference

    docs = Path(__file__).parent.parent.parent / "docs" / "rules.md"
    assert docs.read_text() == rules_reference(), "regenerate: python -m sendvault.scan > docs/rules.md"


def test_mixed_content_and_tls_rules_are_at_least_medium() -> None:
    from sendvault.scan import RULES

    for rule in RULES.values():
        if rule.id.startswith(("tls.", "content.mixed")) and rule.id not in (
            "tls.cert-expiring",
            "tls.unknown",
        ):
            assert rule.severity >= Severity.MEDIUM, rule.id


def test_verified_and_unverified_readings_of_a_certificate_agree(tmp_path: Path) -> None:
    # A trusted endpoint's chain comes from the verified handshake, an untrusted one's from a
    # second, unverified handshake: both must see the same subject, validity, names and key.
    from sendvault.scan.tls import _read_certificate, _Target, load_ca

    ca = trustme.CA()
    leaf = ca.issue_cert(
        "127.0.0.1",
        "api.example.test",
        "*.cdn.example.test",
        common_name="api.example.test",
        organization_name="Example, Inc.",
        organization_unit_name="Mail+SMS",
    )
    with tls_server(_modern, leaf) as server:
        target = _Target("127.0.0.1", server.port, "127.0.0.1")
        verified = _read_certificate(target, lambda: load_ca(ca_file(ca, tmp_path)))
        unverified = _read_certificate(target, lambda: load_ca(None))
    assert verified.untrusted is None
    assert unverified.untrusted is not None
    assert verified.chain == unverified.chain
    cert = verified.chain[0]
    assert "O=Example\\, Inc." in cert.subject
    assert cert.key == "EC 256"
    assert cert.names("127.0.0.1")
    assert cert.names("edge.cdn.example.test")
    assert not cert.names("a.b.cdn.example.test")
    assert not cert.names("other.example.test")


def test_a_refusal_the_local_stack_cannot_prove_is_unknown_not_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sendvault.scan.tls as tls

    cannot = {"TLSv1.0": False, "TLSv1.1": False, "TLSv1.2": True, "TLSv1.3": True}
    monkeypatch.setattr(tls, "local_support", lambda: cannot)
    ca = trustme.CA()
    with tls_server(_modern, ca.issue_cert("127.0.0.1")) as server:
        result = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path))
    assert result.facts["TLSv1.0"] == result.facts["TLSv1.1"] == "unknown"
    assert _rules(result) == {"tls.unknown"}
    assert exit_code([result], Severity.MEDIUM) == 2


def _tls10_only(ciphers: str):  # type: ignore[no-untyped-def]
    def configure(ctx: ssl.SSLContext) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1
        ctx.set_ciphers(ciphers)

    return configure


def test_a_port_that_speaks_no_tls_is_unknown_not_pass() -> None:
    def plain(h: http.server.BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "0")
        h.end_headers()

    with http_server(plain) as port:
        result = scan_tls("127.0.0.1", port, timeout=2)
    assert [f.rule for f in result.findings] == ["tls.unknown"]
    assert "no TLS handshake completed" in result.findings[0].detail
    assert result.passed == 0
    assert result.facts["TLSv1.2"] == "unknown"
    assert exit_code([result], Severity.MEDIUM) == 2


def test_a_null_suite_is_rsa_key_exchange_without_encryption(tmp_path: Path) -> None:
    ca = trustme.CA(key_type=trustme.KeyType.RSA)

    def null(ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256:NULL-SHA256:@SECLEVEL=0")

    with tls_server(null, ca.issue_cert("127.0.0.1", key_type=trustme.KeyType.RSA)) as server:
        result = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path))
    details = {f.rule: f.detail for f in result.findings}
    assert details.keys() == {"tls.rsa-key-exchange", "tls.weak-cipher"}
    assert "NULL-SHA256" in details["tls.rsa-key-exchange"]
    assert "NULL-SHA256 (no encryption)" in details["tls.weak-cipher"]


def test_an_anonymous_suite_is_weak(tmp_path: Path) -> None:
    ca = trustme.CA()

    def anonymous(ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES128-GCM-SHA256:AECDH-AES128-SHA:@SECLEVEL=0")

    with tls_server(anonymous, ca.issue_cert("127.0.0.1")) as server:
        result = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path))
    weak = next(f for f in result.findings if f.rule == "tls.weak-cipher")
    assert "AECDH-AES128-SHA (no authentication)" in weak.detail


def test_anonymous_aead_and_rsa_psk_suites_are_classified() -> None:
    # Suites a test server cannot easily be made to accept (DH parameters, a PSK) are judged
    # from the same description OpenSSL gives of an accepted one.
    from sendvault.scan.tls import _candidate_ciphers, _is_rsa_key_exchange, _weakness

    known = {str(c["name"]): c for c in _candidate_ciphers(ssl.TLSVersion.TLSv1_2)}
    assert _weakness(known["ADH-AES128-GCM-SHA256"]) == "no authentication"
    assert _is_rsa_key_exchange(known["RSA-PSK-AES128-GCM-SHA256"])
    assert not _is_rsa_key_exchange(known["ECDHE-RSA-AES128-GCM-SHA256"])
    assert _weakness(known["ECDHE-RSA-AES128-GCM-SHA256"]) is None


class _PicksTripleDes(TlsServer):
    """A TLS 1.2 server that, like old ones, picks DES-CBC3-SHA whenever a ClientHello offers it.

    This machine's OpenSSL cannot speak 3DES, so the answer is a bare ServerHello; every other
    ClientHello gets a real handshake. ``answer`` replaces that ServerHello when set.
    """

    answer: bytes | None = None

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        hello = b""
        while len(hello) < 5 or len(hello) < 5 + int.from_bytes(hello[3:5], "big"):
            peeked = conn.recv(65536, socket.MSG_PEEK)
            if len(peeked) == len(hello):
                break
            hello = peeked
        version, sid = hello[9:11], hello[43]
        count = int.from_bytes(hello[44 + sid : 46 + sid], "big")
        offered = {hello[46 + sid + i : 48 + sid + i] for i in range(0, count, 2)}
        if b"\x00\x0a" not in offered:
            super()._serve(conn)
            return
        conn.recv(len(hello))
        body = version + bytes(32) + b"\x00" + b"\x00\x0a" + b"\x00"
        handshake = b"\x02" + len(body).to_bytes(3, "big") + body
        conn.sendall(self.answer or b"\x16" + version + len(handshake).to_bytes(2, "big") + handshake)
        conn.close()


def _picks_triple_des(ca: trustme.CA, answer: bytes | None = None) -> _PicksTripleDes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(ctx)
    _modern(ctx)
    server = _PicksTripleDes(ctx)
    server.answer = answer
    return server


def test_a_suite_this_machines_openssl_cannot_offer_is_still_reported(tmp_path: Path) -> None:
    ca = trustme.CA()
    server = _picks_triple_des(ca)
    try:
        result = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path))
    finally:
        server.stop()
    details = {f.rule: f.detail for f in result.findings}
    assert details.keys() == {"tls.rsa-key-exchange", "tls.weak-cipher"}
    assert "DES-CBC3-SHA" in details["tls.rsa-key-exchange"]
    assert "DES-CBC3-SHA (broken cipher)" in details["tls.weak-cipher"]
    assert "DES-CBC3-SHA" in result.facts["ciphers"]["TLSv1.2"]  # type: ignore[index]


def test_a_suite_that_cannot_be_checked_is_unknown_not_pass(tmp_path: Path) -> None:
    ca = trustme.CA()
    server = _picks_triple_des(ca, answer=b"HTTP/1.1 400 Bad Request\r\n\r\n")
    try:
        result = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path))
    finally:
        server.stop()
    assert _rules(result) == {"tls.unknown"}
    assert "RC4, DES, 3DES and export suites" in result.findings[0].detail
    assert exit_code([result], Severity.MEDIUM) == 2


def test_the_certificate_of_a_tls10_only_server_is_judged(tmp_path: Path) -> None:
    if not local_support()["TLSv1.0"]:
        pytest.skip("this machine's OpenSSL cannot offer TLS 1.0")
    ca = trustme.CA()
    with tls_server(
        _tls10_only("ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"), ca.issue_cert("other.example")
    ) as server:
        result = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path))
    assert _rules(result) == {"tls.legacy-protocol", "tls.weak-cipher", "tls.cert-hostname"}
    assert not result.unknown
    assert "certificate" in result.facts


def test_a_ca_file_that_does_not_load_leaves_only_the_chain_unknown(tmp_path: Path) -> None:
    ca = trustme.CA()
    not_a_ca = tmp_path / "hostname"
    not_a_ca.write_text("db-1.example\n")
    with tls_server(_modern, ca.issue_cert("127.0.0.1")) as server:
        result = scan_tls("127.0.0.1", server.port, ca_file=str(not_a_ca))
    assert [f.rule for f in result.findings] == ["tls.unknown"]
    assert "cannot be loaded" in result.findings[0].detail
    assert result.facts["TLSv1.2"] == "accepted"
    assert "certificate" in result.facts
    assert exit_code([result], Severity.MEDIUM) == 2


@pytest.mark.parametrize("command", [["tls", "127.0.0.1:9"], ["http", "http://127.0.0.1:9/"]])
def test_cli_a_ca_file_that_does_not_load_is_a_usage_error(tmp_path: Path, command: list[str]) -> None:
    not_a_ca = tmp_path / "hostname"
    not_a_ca.write_text("db-1.example\n")
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", *command, "--ca", str(not_a_ca)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.startswith(f"error: the CA file {not_a_ca} cannot be loaded")
    assert "hint:" in run.stderr
    assert "Traceback" not in run.stderr


# -- every certificate of the chain is judged; key strength apart from trust (issue 14) ---------


def test_an_expired_intermediate_is_reported_not_passed(tmp_path: Path) -> None:
    from tests.scan._pki import chain

    pki = chain(tmp_path, "127.0.0.1", intermediate_not_after=dt.datetime.now(dt.UTC) - dt.timedelta(days=2))
    with tls_server(_modern, pki) as server:  # type: ignore[arg-type]
        result = scan_tls("127.0.0.1", server.port, ca_file=str(pki.ca_file))
    [finding] = result.findings
    assert finding.rule == "tls.cert-expired"
    assert "intermediate" in finding.detail
    assert "depth 1" in finding.detail
    assert exit_code([result], Severity.MEDIUM) == 1


def test_an_intermediate_expiring_soon_is_reported(tmp_path: Path) -> None:
    from tests.scan._pki import chain

    pki = chain(tmp_path, "127.0.0.1", intermediate_not_after=dt.datetime.now(dt.UTC) + dt.timedelta(days=9))
    with tls_server(_modern, pki) as server:  # type: ignore[arg-type]
        result = scan_tls("127.0.0.1", server.port, ca_file=str(pki.ca_file))
    [finding] = result.findings
    assert finding.rule == "tls.cert-expiring"
    assert "depth 1" in finding.detail


def test_an_intermediate_not_yet_valid_is_reported(tmp_path: Path) -> None:
    from tests.scan._pki import chain

    soon = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    pki = chain(tmp_path, "127.0.0.1", intermediate_not_before=soon,
                intermediate_not_after=soon + dt.timedelta(days=365))  # fmt: skip
    with tls_server(_modern, pki) as server:  # type: ignore[arg-type]
        result = scan_tls("127.0.0.1", server.port, ca_file=str(pki.ca_file))
    assert [f.rule for f in result.findings] == ["tls.cert-expired"]


def test_a_valid_chain_with_an_intermediate_passes(tmp_path: Path) -> None:
    from tests.scan._pki import chain

    pki = chain(tmp_path, "127.0.0.1")
    with tls_server(_modern, pki) as server:  # type: ignore[arg-type]
        result = scan_tls("127.0.0.1", server.port, ca_file=str(pki.ca_file))
    assert result.findings == []
    assert not result.unknown
    assert [c["depth"] for c in result.facts["chain"]] == [0, 1]  # type: ignore[index]


def test_an_expired_root_that_was_not_sent_is_untrusted(tmp_path: Path) -> None:
    # OpenSSL says "certificate has expired" about a certificate of its path the server never
    # sent: nothing the scan judged by date covers it, so the chain is reported untrusted.
    from tests.scan import _pki

    pki = _pki.chain(tmp_path, "127.0.0.1", with_intermediate=False)
    root_key = _pki.ec_key()
    yesterday = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    root = _pki._cert("sendvault test root", root_key, None, root_key, ca=True, not_after=yesterday)
    leaf_key = _pki.ec_key()
    leaf = _pki._cert("127.0.0.1", leaf_key, root, root_key, ca=False, names=("127.0.0.1",))
    pki.cert_file.write_bytes(_pki._pem(leaf))
    pki.key_file.write_bytes(
        leaf_key.private_bytes(
            _pki.serialization.Encoding.PEM,
            _pki.serialization.PrivateFormat.PKCS8,
            _pki.serialization.NoEncryption(),
        )
    )
    pki.ca_file.write_bytes(_pki._pem(root))
    with tls_server(_modern, pki) as server:  # type: ignore[arg-type]
        result = scan_tls("127.0.0.1", server.port, ca_file=str(pki.ca_file))
    assert [f.rule for f in result.findings] == ["tls.cert-untrusted"]
    assert "expired" in result.findings[0].detail


@pytest.mark.parametrize(("bits", "weak"), [(1024, True), (2048, False)], ids=["rsa1024", "rsa2048"])
def test_a_weak_leaf_key_is_its_own_rule_and_trust_stays_apart(tmp_path: Path, bits: int, weak: bool) -> None:
    from tests.scan._pki import chain, rsa_key

    pki = chain(tmp_path, "127.0.0.1", leaf_key=rsa_key(bits))

    def configure(ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE+AESGCM:@SECLEVEL=0")

    with tls_server(configure, pki) as server:  # type: ignore[arg-type]
        result = scan_tls("127.0.0.1", server.port, ca_file=str(pki.ca_file))
    assert [f.rule for f in result.findings] == (["tls.weak-key"] if weak else [])
    if weak:
        assert f"{bits}" in result.findings[0].detail
        assert "depth 0" in result.findings[0].detail


def test_a_weak_key_under_an_untrusted_ca_is_both(tmp_path: Path) -> None:
    from tests.scan._pki import chain, rsa_key

    pki = chain(tmp_path, "127.0.0.1", leaf_key=rsa_key(1024))

    def configure(ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE+AESGCM:@SECLEVEL=0")

    with tls_server(configure, pki) as server:  # type: ignore[arg-type]
        result = scan_tls("127.0.0.1", server.port, ca_file=None)
    assert _rules(result) == {"tls.weak-key", "tls.cert-untrusted"}


def test_a_sha1_signed_leaf_stays_untrusted_when_its_key_is_also_weak(tmp_path: Path) -> None:
    # Trust is judged again at security level 0 to see past a weak key; that level also allows
    # SHA-1 signatures, which clients refuse, so the scan checks them itself.
    from tests.scan._pki import sha1_leaf

    pki = sha1_leaf(tmp_path, 1024)

    def configure(ctx: ssl.SSLContext) -> None:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE+AESGCM:@SECLEVEL=0")

    with tls_server(configure, pki) as server:  # type: ignore[arg-type]
        result = scan_tls("127.0.0.1", server.port, ca_file=str(pki.ca_file))
    assert _rules(result) == {"tls.weak-key", "tls.cert-untrusted"}
    assert "sha1" in next(f.detail for f in result.findings if f.rule == "tls.cert-untrusted").lower()


def test_an_ec_key_under_256_bits_is_weak(tmp_path: Path) -> None:
    # No client offers P-224 any more, so no handshake can show such a leaf: the judgement is
    # tested on the certificate itself, as the scan reads it.
    from cryptography.hazmat.primitives.asymmetric import ec
    from tests.scan._pki import chain, ec_key

    from sendvault.scan._certs import Cert, Reading, judge
    from sendvault.scan.findings import CheckResult

    for curve, weak in ((ec.SECP224R1(), True), (ec.SECP256R1(), False), (ec.SECP384R1(), False)):
        pki = chain(tmp_path, "127.0.0.1", leaf_key=ec_key(curve), with_intermediate=False)
        cert = Cert.from_der(ssl.PEM_cert_to_DER_cert(pki.cert_file.read_text()))
        result = CheckResult("tls", "x")
        judge(Reading(chain=(cert,)), "127.0.0.1", dt.datetime.now(dt.UTC), result)
        assert ([f.rule for f in result.findings] == ["tls.weak-key"]) is weak, curve.name


@pytest.mark.parametrize(("bits", "weak"), [(1024, True), (2048, False)])
def test_a_dsa_key_is_measured_without_touching_deprecated_dsa(bits: int, weak: bool) -> None:
    # cryptography 51 warns on any use of its DSA classes, and tests run with warnings as errors:
    # the scan reads a DSA key's size from the DER, and no other key type goes near dsa at all.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import dsa
    from cryptography.utils import CryptographyDeprecationWarning
    from tests.scan import _pki

    from sendvault.scan._certs import Cert, Reading, judge
    from sendvault.scan.findings import CheckResult

    ca_key = _pki.ec_key()
    ca = _pki._cert("dsa test ca", ca_key, None, ca_key, ca=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        leaf_key = dsa.generate_private_key(bits)
        leaf = _pki._cert("dsa leaf", leaf_key, ca, ca_key, ca=False, names=("127.0.0.1",))  # type: ignore[arg-type]
    cert = Cert.from_der(leaf.public_bytes(serialization.Encoding.DER))
    assert cert.key == f"DSA {bits}"
    result = CheckResult("tls", "x")
    judge(Reading(chain=(cert,)), "127.0.0.1", dt.datetime.now(dt.UTC), result)
    assert ("tls.weak-key" in [f.rule for f in result.findings]) is weak


def test_an_expired_certificate_sent_beside_a_chain_that_verifies_is_still_reported(tmp_path: Path) -> None:
    # As servers sent Let's Encrypt's expired cross-signature: OpenSSL 3 verifies the chain
    # without it, older clients build their path through it and fail.
    from tests.scan import _pki

    pki = _pki.chain(tmp_path, "127.0.0.1", with_intermediate=False)
    stale_key = _pki.ec_key()
    stale = _pki._cert("old cross-signed root", stale_key, None, stale_key, ca=True,
                       not_after=dt.datetime.now(dt.UTC) - dt.timedelta(days=3))  # fmt: skip
    pki.cert_file.write_bytes(pki.cert_file.read_bytes() + _pki._pem(stale))
    with tls_server(_modern, pki) as server:  # type: ignore[arg-type]
        result = scan_tls("127.0.0.1", server.port, ca_file=str(pki.ca_file))
    [finding] = result.findings
    assert finding.rule == "tls.cert-expired"
    assert "depth 1" in finding.detail
    assert "the chain verifies here without it" in finding.detail


def test_findings_and_rules_compare_by_value_and_rules_are_frozen() -> None:
    from sendvault.scan.findings import RULES, CheckResult, Finding

    assert Finding("ssh.weak-mac", "x", line=3) == Finding("ssh.weak-mac", "x", line=3)
    assert Finding("ssh.weak-mac", "x") != Finding("ssh.weak-mac", "y")
    assert len({Finding("ssh.weak-mac", "x"), Finding("ssh.weak-mac", "x")}) == 1
    assert CheckResult("ssh", "t", [], 1) == CheckResult("ssh", "t", passed=1)
    with pytest.raises(AttributeError, match="frozen"):
        RULES["ssh.weak-mac"].severity = RULES["ssh.weak-mac"].severity
    with pytest.raises(AttributeError, match="frozen"):
        del RULES["ssh.weak-mac"].severity


def test_findings_copy_pickle_and_match_as_the_dataclasses_did() -> None:
    import copy
    import pickle

    from sendvault.scan.findings import RULES, CheckResult, Finding, Severity

    finding = Finding("ssh.small-host-key", "x", "f.py", 3, Severity.HIGH)
    result = CheckResult("ssh", "t", [finding], 1, ["u"], {"k": [1]})
    assert copy.deepcopy(result) == result
    assert pickle.loads(pickle.dumps(result)) == result
    assert copy.copy(RULES["ssh.weak-mac"]) == RULES["ssh.weak-mac"]
    match finding:
        case Finding(rule, detail, file, line):
            assert (rule, detail, file, line) == ("ssh.small-host-key", "x", "f.py", 3)
        case _:
            pytest.fail("no match")
