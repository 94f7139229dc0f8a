"""`sendvault serve`: dev mode files, restarts, workers, refusals of unsafe settings, clients CLI."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from tests.helpers import run_cli as _cli
from tests.server.conftest import free_port, start_dev_server, stop_dev_server
from tests.server.helpers import auth_header, https_request


def test_dev_mode_files_restart_keeps_the_secret_and_two_workers_serve(tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = start_dev_server(home)
    out = stop_dev_server(first)
    assert "curl --cacert" in out
    client = json.loads((home / "dev-client.json").read_text())
    assert set(client) >= {"url", "username", "password", "ca_file", "token_url"}
    assert client["url"] == f"https://127.0.0.1:{first.https_port}"
    assert client["token_url"] == client["url"] + "/oauth/token"
    assert Path(client["ca_file"]).is_absolute()
    for private in ("dev-client.json", "certs/server.key", "certs/ca.key", "keys/master.key"):
        assert stat.S_IMODE((home / private).stat().st_mode) == 0o600, private

    second = start_dev_server(home, "--workers", "2")
    try:
        assert second.client["password"] == client["password"]
        headers = {"Authorization": auth_header(second), "Content-Type": "application/json"}
        for i in range(6):
            body = {
                "tokenValues": [
                    {"tokenRequestId": "1", "tokenValue": f"w{i}@example.com", "tokenType": "Email"}
                ]
            }
            assert https_request(second, "POST", "/v1/mc/tokens", body, headers)[0] == 200
    finally:
        stop_dev_server(second)


def test_serve_refuses_a_world_readable_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_dev_server(home)
    stop_dev_server(server)
    (home / "certs" / "server.key").chmod(0o644)
    result = _cli(home, "serve", "--https-port", str(free_port()), "--http-port", "0", "--admin-port", "0")
    assert result.returncode == 2
    assert "tls_key_file" in result.stderr
    assert "chmod 600" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_without_dev_needs_a_client(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_dev_server(home)
    stop_dev_server(server)
    assert _cli(home, "clients", "remove", "dev").returncode == 0
    result = _cli(home, "serve", "--https-port", str(free_port()), "--http-port", "0", "--admin-port", "0")
    assert result.returncode == 2
    assert "clients add" in result.stderr


def test_clients_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    added = _cli(home, "clients", "add", "mc", "--scopes", "resolve", "--allow", "192.0.2.0/24", "--json")
    assert added.returncode == 0, added.stderr
    secret = json.loads(added.stdout)["client_secret"]
    assert len(secret) >= 40
    assert _cli(home, "clients", "add", "mc").returncode == 1
    listed = json.loads(_cli(home, "clients", "list", "--json").stdout)
    # Lists are lists, as `clients add --json` gives them.
    assert listed == [
        {"client_id": "mc", "scopes": ["resolve"], "allow": ["192.0.2.0/24"], "tokenize_rate": 0.0}
    ]
    assert secret not in _cli(home, "clients", "list").stdout
    rotated = _cli(home, "clients", "rotate-secret", "mc")
    assert rotated.returncode == 0
    assert rotated.stdout.strip() != secret
    bad_scope = _cli(home, "clients", "add", "x", "--scopes", "admin")
    assert bad_scope.returncode == 2  # a usage error, said in words
    assert "admin is not a scope; give one or more of: resolve, tokenize" in bad_scope.stderr
    assert _cli(home, "clients", "remove", "mc").returncode == 0
    assert _cli(home, "clients", "remove", "mc").returncode == 1


def test_certs_cli_issues_server_and_client_certificates(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert _cli(home, "certs", "server", "api.example.org", "10.0.0.5").returncode == 0
    assert _cli(home, "certs", "client", "mc-prod").returncode == 0
    for key in ("server.key", "mc-prod.key", "ca.key"):
        assert stat.S_IMODE((home / "certs" / key).stat().st_mode) == 0o600
    from cryptography import x509

    cert = x509.load_pem_x509_certificate((home / "certs" / "server.pem").read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "api.example.org" in names.get_values_for_type(x509.DNSName)


def test_client_certificates_when_required(tmp_path: Path) -> None:
    import ssl
    import time

    from tests.server.helpers import client_context

    home = tmp_path / "home"
    assert _cli(home, "certs", "client", "mc-prod").returncode == 0
    certs = home / "certs"
    server = start_dev_server(
        home,
        env={"SENDVAULT_TLS_CLIENT_CERT": "required", "SENDVAULT_TLS_CLIENT_CA_FILE": str(certs / "ca.pem")},
    )
    try:
        with_cert = client_context(server)
        with_cert.load_cert_chain(certs / "mc-prod.pem", certs / "mc-prod.key")
        deadline = time.monotonic() + 60
        while True:
            try:
                status = https_request(server, "GET", "/healthz", context=with_cert)[0]
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert status == 200
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            https_request(server, "GET", "/healthz", context=client_context(server))
    finally:
        stop_dev_server(server)


def _ports(*busy: str) -> tuple[list[str], list[object]]:
    """serve's port options on free ports, except those named, which are held by a listener."""
    import socket

    args, held = [], []
    for option in ("--https-port", "--http-port", "--admin-port"):
        if option.removeprefix("--") in busy:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen(1)
            held.append(sock)
            args += [option, str(sock.getsockname()[1])]
        else:
            args += [option, str(free_port())]
    return args, held


def test_a_world_readable_master_key_stops_start_up_before_serving(tmp_path: Path) -> None:
    home = tmp_path / "home"
    stop_dev_server(start_dev_server(home))
    (home / "keys" / "master.key").chmod(0o644)
    args, _ = _ports()
    result = _cli(home, "serve", "--dev", "--host", "127.0.0.1", *args)
    assert result.returncode != 0
    assert "master.key" in result.stderr
    assert "serving" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("busy", ["http-port", "admin-port"])
def test_a_busy_port_is_named_in_one_line(tmp_path: Path, busy: str) -> None:
    args, held = _ports(busy)
    try:
        result = _cli(tmp_path / "home", "serve", "--dev", "--host", "127.0.0.1", *args)
    finally:
        for sock in held:
            sock.close()  # type: ignore[attr-defined]
    assert result.returncode == 2
    setting = busy.replace("-", "_")
    assert f"setting {setting} (from flag --{busy}): cannot listen" in result.stderr
    assert "serving" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_worker_that_dies_stops_the_server_with_an_error(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess

    server = start_dev_server(tmp_path / "home")
    try:
        listed = subprocess.run(
            ["pgrep", "-P", str(server.proc.pid)], check=False, capture_output=True, text=True
        )
        commands = {int(pid): Path(f"/proc/{pid}/cmdline").read_text() for pid in listed.stdout.split()}
        workers = [
            pid for pid, cmd in commands.items() if "spawn_main" in cmd and "resource_tracker" not in cmd
        ]
        assert workers
        os.kill(workers[0], signal.SIGKILL)
        server.proc.wait(timeout=60)
        out = server.output()
    finally:
        if server.proc.poll() is None:
            stop_dev_server(server)
    assert server.proc.returncode != 0
    assert "a worker exited" in out


def test_serve_takes_its_own_config_option(tmp_path: Path) -> None:
    config = tmp_path / "sendvault.toml"
    config.write_text('tls_min_version = "1.0"\n')
    args, _ = _ports()
    result = _cli(tmp_path / "home", "serve", "--dev", "--config", str(config), *args)
    assert result.returncode == 2
    assert "setting tls_min_version" in result.stderr  # the file was read


def test_a_failed_start_keeps_the_dev_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    stop_dev_server(start_dev_server(home))
    secret = json.loads((home / "dev-client.json").read_text())["password"]
    args, held = _ports("https-port")
    try:
        assert _cli(home, "serve", "--dev", "--host", "127.0.0.1", *args).returncode == 2
    finally:
        for sock in held:
            sock.close()  # type: ignore[attr-defined]
    again = start_dev_server(home)
    try:
        assert again.client["password"] == secret
    finally:
        stop_dev_server(again)
