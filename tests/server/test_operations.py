"""A real server as an operator runs it: log lines, refusals at start-up, certificate renewal.

The renewal tests keep one HTTPS connection open (as Marketing Cloud keeps its keep-alive
connections) across the reload and check it still works, while new connections get the new
certificate from every worker.
"""

from __future__ import annotations

import http.client
import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from tests.helpers import run_cli
from tests.server.conftest import DevServer, free_port, start_dev_server, stop_dev_server
from tests.server.helpers import auth_header, client_context, https_request


def _serial(server: DevServer) -> int:
    """The serial of the certificate a new connection is served."""
    with (
        socket.create_connection(("127.0.0.1", server.https_port), timeout=10) as raw,
        client_context(server).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def _file_serial(home: Path) -> int:
    return x509.load_pem_x509_certificate((home / "certs" / "server.pem").read_bytes()).serial_number


def _renew(home: Path) -> int:
    """Issue a new certificate and key (as a renewal does); returns the new serial."""
    result = run_cli(home, "certs", "server", "localhost", "127.0.0.1", "::1")
    assert result.returncode == 0, result.stderr
    return _file_serial(home)


def _wait_for_serial(server: DevServer, wanted: int, connections: int = 6, seconds: float = 15) -> None:
    """Every one of several new connections (spread over the workers) gets ``wanted``."""
    deadline = time.monotonic() + seconds
    while True:
        seen = {_serial(server) for _ in range(connections)}
        if seen == {wanted}:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"new connections still get {seen}, not {wanted}")
        time.sleep(0.2)


def _keepalive(server: DevServer) -> http.client.HTTPSConnection:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.https_port, context=client_context(server), timeout=30
    )
    conn.request("GET", "/healthz")
    response = conn.getresponse()
    assert response.status == 200
    response.read()
    return conn


def _still_serves(conn: http.client.HTTPSConnection, server: DevServer) -> None:
    body = {"tokenValues": [{"tokenRequestId": "1", "tokenValue": "kept@example.com", "tokenType": "Email"}]}
    headers = {"Authorization": auth_header(server), "Content-Type": "application/json"}
    conn.request("POST", "/v1/mc/tokens", json.dumps(body), headers)
    response = conn.getresponse()
    assert response.status == 200
    response.read()
    assert conn.sock is not None


def _json_lines(text: str) -> list[dict[str, object]]:
    lines = []
    for line in text.splitlines():
        if line.startswith("{"):
            lines.append(json.loads(line))
    return lines


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """Two workers, JSON logs, no file watch: a reload here comes from SIGHUP only."""
    home = tmp_path_factory.mktemp("ops") / "home"
    env = {"SENDVAULT_LOG_FORMAT": "json", "SENDVAULT_TLS_RELOAD_SECONDS": "0"}
    srv = start_dev_server(home, "--workers", "2", env=env)
    yield srv
    if srv.proc.poll() is None:
        stop_dev_server(srv)


def test_sighup_serves_a_renewed_certificate_and_keeps_open_connections(server: DevServer) -> None:
    old = _serial(server)
    kept = _keepalive(server)
    sock = kept.sock

    # A renewal caught half-done (a key that is not the certificate's) is refused, and the
    # current certificate stays in service.
    good_key = (server.home / "certs" / "server.key").read_bytes()
    (server.home / "certs" / "server.key").write_bytes((server.home / "certs" / "ca.key").read_bytes())
    server.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "certificate not reloaded" not in server.output() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "certificate not reloaded" in server.output()
    assert {_serial(server) for _ in range(4)} == {old}
    (server.home / "certs" / "server.key").write_bytes(good_key)

    new = _renew(server.home)
    assert new != old
    server.proc.send_signal(signal.SIGHUP)
    _wait_for_serial(server, new)
    _still_serves(kept, server)
    assert kept.sock is sock  # the same TLS connection, not a reconnect
    kept.close()
    assert server.proc.poll() is None


def _issue_dated(home: Path, name: str, start_days: float, end_days: float) -> tuple[Path, Path]:
    """A certificate for localhost from the home's local CA, valid from/until days from now."""
    import datetime as dt

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_cert = x509.load_pem_x509_certificate((home / "certs" / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((home / "certs" / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=start_days))
        .not_valid_after(now + dt.timedelta(days=end_days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem, key_file = home / f"{name}.pem", home / f"{name}.key"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    return pem, key_file


@pytest.mark.parametrize(("start", "end", "said"), [(-30, -1, "expired on"), (5, 100, "is not valid until")])
def test_a_renewal_callers_would_refuse_is_not_served(
    server: DevServer, start: float, end: float, said: str
) -> None:
    old = _serial(server)
    certs = server.home / "certs"
    kept = {f: (certs / f).read_bytes() for f in ("server.pem", "server.key")}
    pem, key = _issue_dated(server.home, "dated", start, end)
    before = server.output().count("certificate not reloaded")
    (certs / "server.key").write_bytes(key.read_bytes())
    (certs / "server.pem").write_bytes(pem.read_bytes())
    try:
        server.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while server.output().count("certificate not reloaded") == before and time.monotonic() < deadline:
            time.sleep(0.1)
        refusal = [line for line in server.output().splitlines() if "certificate not reloaded" in line]
        assert len(refusal) == before + 1
        assert f"the new certificate {said}" in refusal[-1]
        assert {_serial(server) for _ in range(4)} == {old}
    finally:
        for f, data in kept.items():
            (certs / f).write_bytes(data)


def test_metrics_carry_the_certificate_expiry_and_the_audit_health(server: DevServer) -> None:
    import urllib.request

    url = f"http://127.0.0.1:{server.admin_port}/metrics"
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    # One family per name in the OpenMetrics form Prometheus asks for by default (a counter's
    # family there is its name without _total): a scraper refuses a name declared twice.
    accept = {"Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"}
    with urllib.request.urlopen(urllib.request.Request(url, headers=accept), timeout=30) as resp:
        openmetrics = resp.read().decode()
    declared = [line.split()[2] for line in openmetrics.splitlines() if line.startswith("# TYPE ")]
    assert len(declared) == len(set(declared)), sorted(n for n in declared if declared.count(n) > 1)
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    served = x509.load_pem_x509_certificate((server.home / "certs" / "server.pem").read_bytes())
    left = served.not_valid_after_utc.timestamp() - time.time()
    assert abs(values["sendvault_certificate_expiry_seconds"] - left) < 120
    assert (
        values["sendvault_certificate_not_after_timestamp_seconds"] == served.not_valid_after_utc.timestamp()
    )
    # The SIGHUP tests before this one: one refused renewal, one served, then an expired and a
    # not-yet-valid renewal refused.
    assert values['sendvault_certificate_reloads_total{result="ok"}'] == 1
    assert values['sendvault_certificate_reloads_total{result="failed"}'] == 3
    assert values["sendvault_audit_verified"] == 1
    assert values["sendvault_audit_head_record"] >= 1
    assert values['sendvault_key_provider_up{provider="local"}'] == 1
    assert values['sendvault_stored_tokens{state="live"}'] >= 1
    assert values["sendvault_attention"] == 0
    assert values["sendvault_data_key_age_seconds"] >= 0
    # The workers' own counters are still there beside them.
    assert any(name.startswith("sendvault_requests_total") for name in values)


def test_start_access_and_stop_lines_are_json_without_secrets(server: DevServer) -> None:
    headers = {"Authorization": auth_header(server), "Content-Type": "application/json"}
    body = {
        "tokenValues": [
            {"tokenRequestId": "1", "tokenValue": "logged-never@example.com", "tokenType": "Email"}
        ]
    }
    status, _, answer = https_request(server, "POST", "/v1/mc/tokens", body, headers)
    assert status == 200
    token = json.loads(answer)["tokens"][0]["token"]
    resolve = {"tokens": [{"tokenRequestId": "a", "token": token}]}
    assert https_request(server, "POST", "/v1/mc/resolve", resolve, headers)[0] == 200
    output = stop_dev_server(server)

    lines = _json_lines(output)
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    start = next(line for line in lines if line.get("event") == "start")
    assert start["version"]
    assert start["workers"] == 2
    assert start["key_provider"] == "local"
    assert start["url"] == f"https://127.0.0.1:{server.https_port}"
    assert str(start["database"]).startswith("SQLite ")
    assert start["metrics"] == f"http://127.0.0.1:{server.admin_port}/metrics"
    access = [line for line in lines if line.get("event") == "access"]
    routes = [(a["route"], a["status"], a["items"], a["client"]) for a in access]
    assert ("/v1/mc/tokens", 200, 1, "dev") in routes
    assert ("/v1/mc/resolve", 200, 1, "dev") in routes
    assert any(line.get("event") == "cert-reload" for line in lines)
    assert [line["event"] for line in lines if line.get("event") in ("stopping", "stop")] == [
        "stopping",
        "stop",
    ]
    logged = "\n".join(line for line in output.splitlines() if line.startswith("{"))
    for secret in ("logged-never", token, server.client["password"]):
        # (dev mode prints its client's secret once, in the ready-made curl command: not a log line)
        assert secret not in logged
    assert "Traceback" not in output


def test_the_file_watch_serves_a_renewed_certificate(tmp_path: Path) -> None:
    srv = start_dev_server(tmp_path / "home", env={"SENDVAULT_TLS_RELOAD_SECONDS": "1"})
    try:
        kept = _keepalive(srv)
        new = _renew(srv.home)
        _wait_for_serial(srv, new, connections=2)
        _still_serves(kept, srv)
        kept.close()
    finally:
        output = stop_dev_server(srv)
    assert "certificate reloaded (file change)" in output


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SENDVAULT_ALLOW_CIDRS", "10.0.0.0/33 nonsense"), ("SENDVAULT_TRUSTED_PROXIES", "bogus")],
)
def test_serve_refuses_a_bad_network_setting_in_one_line(tmp_path: Path, variable: str, value: str) -> None:
    args = ["serve", "--dev", "--https-port", str(free_port()), "--http-port", "0", "--admin-port", "0"]
    result = run_cli(tmp_path / "home", *args, env={variable: value})
    assert result.returncode == 2
    setting = variable.removeprefix("SENDVAULT_").lower()
    assert result.stderr.startswith(f"error: setting {setting} (from environment {variable}): ")
    assert "allowed:" in result.stderr
    for noise in ("Traceback", "InvalidValue", "invalid-network", "worker exited"):
        assert noise not in result.stderr


def test_serve_refuses_client_certificates_without_a_ca_and_a_short_master_key(tmp_path: Path) -> None:
    args = ["serve", "--dev", "--https-port", str(free_port()), "--http-port", "0", "--admin-port", "0"]
    home = tmp_path / "home"
    mtls = run_cli(home, *args, env={"SENDVAULT_TLS_CLIENT_CERT": "required"})
    assert mtls.returncode == 2
    assert "setting tls_client_ca_file" in mtls.stderr
    assert "tls_client_cert is required" in mtls.stderr
    short = run_cli(home, *args, env={"SENDVAULT_MASTER_KEY": "short"})
    assert short.returncode == 2
    assert short.stderr.startswith("error: setting master_key (from environment SENDVAULT_MASTER_KEY)")
    assert "openssl rand -base64 32" in short.stderr
    # Neither left anything behind: the checks run before anything is created.
    assert not (home / "sendvault.db").exists()
