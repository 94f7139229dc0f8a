"""Transport policy against a real server: TLS versions, key exchange, 308, HSTS, metrics."""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import urllib.request
import warnings
from pathlib import Path

import pytest
import trustme
from tests.server.conftest import DevServer
from tests.server.helpers import auth_header, client_context, handshake, https_request

from sendvault.scan.tls import local_support
from sendvault.server.tls import server_context


def _pin(ctx: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    # Python deprecates the legacy versions; pinning them is the point of these tests.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    return ctx


def _legacy_client(server: DevServer, version: ssl.TLSVersion) -> ssl.SSLContext:
    return _pin(client_context(server), version)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1], ids=["TLS1.0", "TLS1.1"])
def test_legacy_protocols_are_refused(dev_server: DevServer, version: ssl.TLSVersion) -> None:
    # The scanner's own loopback check: can this machine's OpenSSL offer the version at all?
    label = {ssl.TLSVersion.TLSv1: "TLSv1.0", ssl.TLSVersion.TLSv1_1: "TLSv1.1"}[version]
    if not local_support()[label]:
        pytest.skip(f"this machine's OpenSSL cannot offer {version.name} even at SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(dev_server.https_port, _legacy_client(dev_server, version))


def test_tls12_ecdhe_and_tls13_are_accepted(dev_server: DevServer) -> None:
    ctx12 = client_context(dev_server)
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    version, cipher = handshake(dev_server.https_port, ctx12)
    assert version == "TLSv1.2"
    assert cipher is not None
    assert cipher[0].startswith("ECDHE-")
    assert "GCM" in cipher[0] or "CHACHA20" in cipher[0]
    assert handshake(dev_server.https_port, client_context(dev_server))[0] == "TLSv1.3"


def test_rsa_key_exchange_only_client_is_refused_even_with_an_rsa_certificate(tmp_path: Path) -> None:
    """The policy, not the certificate type, refuses RSA key exchange: try it with an RSA cert."""
    import socket
    import threading

    ca = trustme.CA(key_type=trustme.KeyType.RSA)
    cert = ca.issue_cert("localhost", key_type=trustme.KeyType.RSA)
    cert.private_key_pem.write_to_path(tmp_path / "k.pem")
    (tmp_path / "k.pem").chmod(0o600)
    cert.cert_chain_pems[0].write_to_path(tmp_path / "c.pem")
    server_ctx = server_context(tmp_path / "c.pem", tmp_path / "k.pem")

    def client(ciphers: str) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        ca.configure_trust(ctx)
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers(ciphers)
        return ctx

    results: list[str] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(2)
        port = listener.getsockname()[1]

        def serve_two() -> None:
            for _ in range(2):
                conn, _ = listener.accept()
                try:
                    with server_ctx.wrap_socket(conn, server_side=True) as tls:
                        results.append(str(tls.cipher()[0]))
                except (ssl.SSLError, OSError) as exc:
                    results.append(f"refused:{getattr(exc, 'reason', exc)}")
                finally:
                    conn.close()

        thread = threading.Thread(target=serve_two)
        thread.start()
        with pytest.raises(ssl.SSLError):
            handshake(port, client("AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA"))
        assert handshake(port, client("ECDHE-RSA-AES128-GCM-SHA256"))[0] == "TLSv1.2"
        thread.join(timeout=10)
    assert results[0] == "refused:NO_SHARED_CIPHER"
    assert results[1] == "ECDHE-RSA-AES128-GCM-SHA256"


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_plain_http_gets_308_to_the_same_path_and_query(dev_server: DevServer, method: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", dev_server.http_port, timeout=10)
    try:
        conn.request(method, "/v1/mc/resolve?x=1&y=%20", b'{"tokens": []}' if method == "POST" else None)
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    assert resp.status == 308
    assert resp.getheader("Location") == f"https://127.0.0.1:{dev_server.https_port}/v1/mc/resolve?x=1&y=%20"


def test_plain_http_never_serves_the_api(dev_server: DevServer) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", dev_server.http_port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.read() == b""
    finally:
        conn.close()
    assert resp.status == 308


def test_hsts_on_https_answers(dev_server: DevServer) -> None:
    for path, headers in (("/healthz", {}), ("/v1/mc/resolve", {})):
        status, got, _ = https_request(dev_server, "POST" if "mc" in path else "GET", path, b"{}", headers)
        assert got["strict-transport-security"] == "max-age=63072000; includeSubDomains", (path, status)


def test_resolve_over_https_with_basic(dev_server: DevServer) -> None:
    headers = {"Authorization": auth_header(dev_server), "Content-Type": "application/json"}
    body = {"tokenValues": [{"tokenRequestId": "1", "tokenValue": "tls@example.com", "tokenType": "Email"}]}
    status, _, raw = https_request(dev_server, "POST", "/v1/mc/tokens", body, headers)
    assert status == 200
    import json

    token = json.loads(raw)["tokens"][0]["token"]
    status, _, raw = https_request(
        dev_server, "POST", "/v1/mc/resolve", {"tokens": [{"tokenRequestId": "r", "token": token}]}, headers
    )
    assert json.loads(raw)["resolvedTokens"][0]["tokenValue"] == "tls@example.com"


def test_metrics_on_admin_listener_only(dev_server: DevServer) -> None:
    # A refused handshake, counted by reason.
    ctx = client_context(dev_server)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):
        handshake(dev_server.https_port, ctx)
    https_request(dev_server, "GET", "/healthz")
    with urllib.request.urlopen(f"http://127.0.0.1:{dev_server.admin_port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    assert 'sendvault_requests_total{route="/healthz",status="200"}' in text
    assert 'sendvault_request_seconds_count{route="/healthz",status_class="2xx"}' in text
    if local_support()["TLSv1.1"]:
        # A client that offers nothing newer than TLS 1.1 is counted as protocol-too-old.
        with pytest.raises((ssl.SSLError, ConnectionResetError)):
            handshake(dev_server.https_port, _legacy_client(dev_server, ssl.TLSVersion.TLSv1_1))
        with urllib.request.urlopen(f"http://127.0.0.1:{dev_server.admin_port}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        assert 'sendvault_tls_handshake_failures_total{reason="protocol-too-old"}' in text
    assert 'sendvault_tls_handshake_failures_total{reason="no-shared-cipher"}' in text
    assert https_request(dev_server, "GET", "/metrics")[0] == 404


def test_a_forged_forwarded_for_does_not_pass_the_allowlist(dev_server: DevServer) -> None:
    # No trusted proxies are configured: the TCP peer (127.0.0.1) is the caller, whatever
    # X-Forwarded-For claims, and it is outside this client's network.
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "sendvault", "clients", "add", "branch", "--allow", "10.0.0.0/8", "--json"],
        env={**os.environ, "SENDVAULT_HOME": str(dev_server.home)},
        capture_output=True,
        check=True,
    )
    secret = json.loads(done.stdout)["client_secret"]
    basic = "Basic " + base64.b64encode(f"branch:{secret}".encode()).decode()
    body = {"tokens": [{"tokenRequestId": "r", "token": "x@tokens.sendvault.invalid"}]}
    for extra in ({}, {"X-Forwarded-For": "10.1.1.1"}, {"Forwarded": "for=10.1.1.1"}):
        headers = {"Authorization": basic, "Content-Type": "application/json", **extra}
        assert https_request(dev_server, "POST", "/v1/mc/resolve", body, headers)[0] == 403, extra


def test_behind_a_port_mapping_the_308_names_the_public_port(tmp_path: Path) -> None:
    from tests.server.conftest import start_dev_server, stop_dev_server

    server = start_dev_server(
        tmp_path / "home",
        env={"SENDVAULT_PUBLIC_HOST": "api.example.com", "SENDVAULT_PUBLIC_HTTPS_PORT": "443"},
    )
    try:
        locations = []
        # Whatever Host a caller sends (ours, a stranger's, none), the 308 names public_host.
        for host in (None, "evil.example.com", "localhost", "127.0.0.1:80"):
            conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
            try:
                conn.putrequest("POST", "/v1/mc/resolve?x=1", skip_host=True)
                if host is not None:
                    conn.putheader("Host", host)
                conn.putheader("Content-Length", "0")
                conn.endheaders()
                resp = conn.getresponse()
                resp.read()
            finally:
                conn.close()
            assert resp.status == 308
            locations.append(resp.getheader("Location"))
    finally:
        stop_dev_server(server)
    assert locations == ["https://api.example.com/v1/mc/resolve?x=1"] * 4
