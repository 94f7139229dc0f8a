"""`scan db` against a MariaDB the test starts (with and without require_secure_transport) and
the machine's PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from tests.conftest import PG_ADMIN_URL
from tests.server.conftest import free_port

from sendvault.scan.db import scan_db

MARIADBD = shutil.which("mariadbd") or "/usr/sbin/mariadbd"
INSTALL_DB = shutil.which("mariadb-install-db")


@pytest.fixture(scope="module")
def mariadb_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, trustme.CA]:
    """An installed data directory (the template every server copies) and TLS files."""
    if not (Path(MARIADBD).exists() and INSTALL_DB):
        pytest.skip("MariaDB server binaries are not installed")
    base = tmp_path_factory.mktemp("mariadb")
    done = subprocess.run(
        [INSTALL_DB, "--no-defaults", f"--datadir={base / 'template'}", "--user=root", "--skip-test-db"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not (base / "template" / "mysql").is_dir():
        pytest.fail(f"mariadb-install-db failed (exit {done.returncode}): {done.stderr[-500:]}")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_pem.write_to_path(base / "key.pem")
    cert.cert_chain_pems[0].write_to_path(base / "cert.pem")
    ca.cert_pem.write_to_path(base / "ca.pem")
    return base, ca


# Generous for a shared 2-core machine: InnoDB's start and shutdown have taken over a minute there.
_START_SECONDS, _STOP_SECONDS = 240, 180


@pytest.fixture(scope="module", params=["required", "optional"])
def mariadb(
    request: pytest.FixtureRequest, mariadb_files: tuple[Path, trustme.CA]
) -> Iterator[tuple[int, Path, str]]:
    """One server per mode for the module, on a fresh copy of the template data directory, so
    no server ever starts on a directory another one left behind."""
    base, _ = mariadb_files
    mode = request.param
    run = base / mode
    shutil.copytree(base / "template", run / "data")
    port = free_port()
    proc = subprocess.Popen(
        [MARIADBD, "--no-defaults", f"--datadir={run / 'data'}", f"--port={port}",
         "--bind-address=127.0.0.1", f"--socket={run / 'sock'}", "--user=root", f"--pid-file={run / 'pid'}",
         f"--log-error={run / 'err.log'}",
         f"--ssl-cert={base / 'cert.pem'}", f"--ssl-key={base / 'key.pem'}", f"--ssl-ca={base / 'ca.pem'}",
         f"--require-secure-transport={'ON' if mode == 'required' else 'OFF'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + _START_SECONDS
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (run / "err.log").read_text() if (run / "err.log").exists() else ""
                    pytest.fail("mariadbd did not start: " + log[-500:])
                time.sleep(0.2)
        # root logs in over the socket (unix_socket auth); make a TCP account for the probe.
        client = shutil.which("mariadb") or "mysql"
        # Host-specific entries: an anonymous ''@'localhost' would otherwise win over 'scan'@'%'.
        sql = "".join(
            f"CREATE USER 'scan'@'{h}' IDENTIFIED BY 'scan-pw';" for h in ("%", "localhost", "127.0.0.1")
        )
        subprocess.run([client, f"--socket={run / 'sock'}", "-u", "root", "-e", sql], check=True, timeout=120)
        yield port, base, mode
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=60)


def test_mariadb_tls_offered_and_required_or_not(mariadb: tuple[int, Path, str]) -> None:
    port, base, mode = mariadb
    anonymous = scan_db("mysql", "127.0.0.1", port, ca_file=str(base / "ca.pem"))
    assert "db.tls-not-required" not in {f.rule for f in anonymous.findings}
    assert anonymous.unknown  # without an account, MariaDB's 1045 cannot tell; never a pass
    result = scan_db(
        "mysql", "127.0.0.1", port, ca_file=str(base / "ca.pem"), user="scan", password="scan-pw"
    )
    rules = {f.rule for f in result.findings}
    assert not result.unknown
    assert "db.tls-unavailable" not in rules
    assert result.facts["tls"]["TLSv1.2"] == "accepted"  # type: ignore[index]
    if mode == "required":
        assert "db.tls-not-required" not in rules
    else:
        assert "db.tls-not-required" in rules
    assert "db.tls-files-rejected" not in rules


def test_mariadb_wrong_ca_is_rejected(mariadb: tuple[int, Path, str], tmp_path: Path) -> None:
    port, _, mode = mariadb
    if mode != "required":
        pytest.skip("one server is enough")
    other = trustme.CA()
    other.cert_pem.write_to_path(tmp_path / "other.pem")
    result = scan_db("mysql", "127.0.0.1", port, ca_file=str(tmp_path / "other.pem"))
    assert "db.tls-files-rejected" in {f.rule for f in result.findings}


def test_machine_postgres_without_tls_is_reported() -> None:
    from tests.conftest import _pg_available

    if _pg_available() is not None:
        if os.environ.get("SENDVAULT_TEST_REQUIRE_PG"):
            pytest.fail("PostgreSQL is required but unreachable")
        pytest.skip("PostgreSQL unreachable")
    host_port = PG_ADMIN_URL.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.split(":")
    result = scan_db("postgres", host, int(port))
    rules = {f.rule for f in result.findings}
    # This machine's PostgreSQL runs without TLS, with trust authentication on 127.0.0.1.
    assert rules == {"db.tls-unavailable", "db.tls-not-required"}


def test_cli_db_exit_code() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "db", "postgres", "127.0.0.1:5432", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode in (1, 2)
    assert "Traceback" not in run.stderr


def test_cli_db_takes_the_password_from_the_environment(mariadb: tuple[int, Path, str]) -> None:
    port, base, mode = mariadb
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "db", "mysql", f"127.0.0.1:{port}", "--user", "scan",
         "--ca", str(base / "ca.pem"), "--json", "--fail-on", "high"],
        capture_output=True, text=True, timeout=120, check=False,
        env={**os.environ, "SENDVAULT_SCAN_DB_PASSWORD": "scan-pw"},
    )  # fmt: skip
    [target] = json.loads(run.stdout)["targets"]
    assert target["unknown"] == []
    rules = {f["rule"] for f in target["findings"]}
    assert ("db.tls-not-required" in rules) == (mode == "optional")
    assert run.returncode == (1 if mode == "optional" else 0)  # MariaDB's CBC suites are medium
    assert "scan-pw" not in run.stdout + run.stderr


def test_targets_file_db_password_comes_from_the_environment(
    mariadb: tuple[int, Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sendvault.scan.targets import scan_targets

    port, base, mode = mariadb
    monkeypatch.setenv("SCAN_PW", "scan-pw")
    targets = tmp_path / "t.toml"
    targets.write_text(
        f'[[db]]\nkind = "mysql"\ntarget = "127.0.0.1:{port}"\nuser = "scan"\npassword_env = "SCAN_PW"\n'
        f'ca = "{base / "ca.pem"}"\n'
    )
    [result] = scan_targets(targets)
    assert result.unknown == []
    assert ("db.tls-not-required" in {f.rule for f in result.findings}) == (mode == "optional")


def test_cli_db_password_without_user_is_a_usage_error() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "db", "mysql", "127.0.0.1:9", "--password"],
        capture_output=True, text=True, timeout=60, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert run.returncode == 2
    assert run.stderr.startswith("error: --password needs --user")


def test_a_ca_file_that_does_not_load_leaves_the_files_unknown(
    mariadb: tuple[int, Path, str], tmp_path: Path
) -> None:
    port, _, _ = mariadb
    not_a_ca = tmp_path / "hostname"
    not_a_ca.write_text("db-1.example\n")
    result = scan_db("mysql", "127.0.0.1", port, ca_file=str(not_a_ca), user="scan", password="scan-pw")
    assert any(f.rule == "db.unknown" and "cannot be loaded" in f.detail for f in result.findings)
    assert "db.tls-files-rejected" not in {f.rule for f in result.findings}
    assert result.facts["tls"]["TLSv1.2"] == "accepted"  # type: ignore[index]
