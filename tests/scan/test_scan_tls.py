"""`scan tls` against loopback servers with one weakness each."""

from __future__ import annotations

import datetime as dt
import ssl
import warnings
from pathlib import Path

import pytest
import trustme
from tests.scan.conftest import ca_file, tls_server

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
        (("other.example",), {}, True, "tls.cert-hostname"),
        (("127.0.0.1",), {}, False, "tls.cert-untrusted"),
    ],
    ids=["expired", "expiring", "wrong-name", "untrusted"],
)
def test_certificate_problems(
    tmp_path: Path, names: tuple[str, ...], kwargs: dict[str, object], use_ca: bool, rule: str
) -> None:
    ca = trustme.CA()
    with tls_server(_modern, ca.issue_cert(*names, **kwargs)) as server:  # type: ignore[arg-type]
        result = scan_tls("127.0.0.1", server.port, ca_file=ca_file(ca, tmp_path) if use_ca else None)
    assert _rules(result) == {rule}


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
    # A trusted endpoint is judged from getpeercert(), an untrusted one from its DER bytes:
    # both must see the same subject, validity and names.
    import ssl

    from sendvault.scan.tls import _Cert, _Target

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
        verify = ssl.create_default_context(cafile=ca_file(ca, tmp_path))
        verify.check_hostname = False
        verified = _Cert.from_verified(target.peer_certificate(verify))
        plain = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        plain.check_hostname = False
        plain.verify_mode = ssl.CERT_NONE
        unverified = _Cert.from_der(target.handshake(plain)[2])
    assert verified == unverified
    assert "O=Example\\, Inc." in verified.subject
    assert verified.names("127.0.0.1")
    assert verified.names("edge.cdn.example.test")
    assert not verified.names("a.b.cdn.example.test")
    assert not verified.names("other.example.test")


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
