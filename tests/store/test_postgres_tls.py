"""The database link over TLS with certificate verification and a client certificate, against a
PostgreSQL cluster the test starts (``ssl = on``, only ``hostssl ... cert`` rules), with files
that `sendvault certs` issues."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.pgcluster import Cluster, require_pg_bin

from sendvault.config import load_settings
from sendvault.errors import ConfigError
from sendvault.server.certs import CertAuthority
from sendvault.store.postgres import TLSFiles
from sendvault.vault import open_vault
from sendvault.vault.normalize import Kind

pytest.importorskip("psycopg")

USER = "sendvault"


def sendvault(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sendvault", *args],
        capture_output=True, text=True, timeout=120, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip


@dataclass
class Link:
    cluster: Cluster
    certs: Path

    @property
    def url(self) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.cluster.port}/{USER}"

    def env(self, home: Path, **files: str) -> dict[str, str]:
        env = {"SENDVAULT_HOME": str(home), "SENDVAULT_DATABASE_URL": self.url}
        env.update({f"SENDVAULT_DATABASE_SSL_{k.upper()}": v for k, v in files.items()})
        return env

    def files(self) -> dict[str, str]:
        return {
            "ca_file": str(self.certs / "ca.pem"),
            "cert_file": str(self.certs / f"{USER}.pem"),
            "key_file": str(self.certs / f"{USER}.key"),
        }


@pytest.fixture(scope="module")
def link(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Link]:
    bindir = require_pg_bin()
    certs = tmp_path_factory.mktemp("db-certs")
    home = str(tmp_path_factory.mktemp("issuer"))
    # The operator's commands: a server certificate for the name sendvault dials, and a client
    # certificate whose CN is the database user.
    for args in (
        ("certs", "database", "127.0.0.1", "--dir", str(certs)),
        ("certs", "client", USER, "--dir", str(certs)),
    ):
        done = sendvault(*args, env={"SENDVAULT_HOME": home})
        assert done.returncode == 0, done.stderr
    cluster = Cluster.init(
        bindir,
        {
            "ssl": "on",
            "ssl_cert_file": "'server.pem'",
            "ssl_key_file": "'server.key'",
            "ssl_ca_file": "'ca.pem'",
            "ssl_min_protocol_version": "'TLSv1.2'",
            # Forward secrecy and AEAD only: what `scan db` asks of a database link.
            "ssl_ciphers": "'ECDHE+AESGCM:ECDHE+CHACHA20'",
        },
        ["hostssl all all 127.0.0.1/32 cert"],
    )
    try:
        for source, target in (
            ("database.pem", "server.pem"),
            ("database.key", "server.key"),
            ("ca.pem", "ca.pem"),
        ):
            shutil.copy(certs / source, cluster.data / target)
            (cluster.data / target).chmod(0o600)
            cluster.own(cluster.data / target)
        cluster.start()
        cluster.sql(f"CREATE ROLE {USER} LOGIN", f"CREATE DATABASE {USER} OWNER {USER}")
        yield Link(cluster, certs)
    finally:
        cluster.destroy()


def test_the_three_files_connect_and_the_vault_works(link: Link, tmp_path: Path) -> None:
    settings = load_settings(env=link.env(tmp_path / "home", **link.files()))
    vault = open_vault(settings)
    try:
        [made] = vault.tokenize_many([(Kind.EMAIL, "tls@example.com")])
        assert made.token is not None
        [back] = vault.resolve_many([made.token])
        assert back.value == "tls@example.com"
        # The link really is TLS, verified, with the client certificate: the server says so.
        sessions = link.cluster.sql(
            "SELECT s.ssl, s.version, s.client_dn FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
            f"WHERE a.usename = '{USER}'"
        )
    finally:
        vault.close()
    assert sessions
    assert all(ssl is True and version in ("TLSv1.2", "TLSv1.3") for ssl, version, _ in sessions)
    assert {dn for _, _, dn in sessions} == {f"/CN={USER}"}


def test_the_files_can_be_given_in_the_url(link: Link, tmp_path: Path) -> None:
    files = link.files()
    url = (
        f"{link.url}?sslmode=verify-full&sslrootcert={files['ca_file']}"
        f"&sslcert={files['cert_file']}&sslkey={files['key_file']}"
    )
    done = sendvault(
        "clients", "list", env={"SENDVAULT_HOME": str(tmp_path / "h"), "SENDVAULT_DATABASE_URL": url}
    )
    assert done.returncode == 0, done.stderr


def _one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def test_without_the_files_it_fails_in_one_clear_line(link: Link, tmp_path: Path) -> None:
    done = sendvault("clients", "list", env=link.env(tmp_path / "home"))
    line = _one_error_line(done)
    assert "cannot connect to PostgreSQL" in line
    # libpq's default (sslmode=prefer) tries TLS without a certificate; the cert rule says no.
    assert "connection requires a valid client certificate" in line


def test_a_plain_link_is_refused_by_the_server(link: Link, tmp_path: Path) -> None:
    env = {**link.env(tmp_path / "home"), "SENDVAULT_DATABASE_URL": f"{link.url}?sslmode=disable"}
    line = _one_error_line(sendvault("clients", "list", env=env))
    assert "no pg_hba.conf entry" in line
    assert "no encryption" in line


def test_a_certificate_without_its_key_is_refused_before_connecting(link: Link, tmp_path: Path) -> None:
    files = link.files()
    done = sendvault(
        "clients", "list",
        env=link.env(tmp_path / "home", ca_file=files["ca_file"], cert_file=files["cert_file"]),
    )  # fmt: skip
    line = _one_error_line(done)
    assert "setting database_ssl_key_file" in line
    assert "is needed when database_ssl_cert_file is set" in line


def test_the_ca_alone_is_not_enough(link: Link, tmp_path: Path) -> None:
    done = sendvault("clients", "list", env=link.env(tmp_path / "home", ca_file=link.files()["ca_file"]))
    line = _one_error_line(done)
    assert "cannot connect to PostgreSQL" in line
    assert "connection requires a valid client certificate" in line


def test_a_wrong_ca_fails_in_one_clear_line(link: Link, tmp_path: Path) -> None:
    other = CertAuthority.load_or_create(tmp_path / "other-ca")
    files = {**link.files(), "ca_file": str(other.cert_path)}
    done = sendvault("clients", "list", env=link.env(tmp_path / "home", **files))
    line = _one_error_line(done)
    assert "cannot connect to PostgreSQL" in line
    assert "certificate verify failed" in line


def test_a_key_others_can_read_is_refused(link: Link, tmp_path: Path) -> None:
    key = tmp_path / "open.key"
    shutil.copy(link.files()["key_file"], key)
    key.chmod(0o644)
    with pytest.raises(ConfigError, match=r"database_ssl_key_file.*can be read by others"):
        open_vault(load_settings(env=link.env(tmp_path / "home", **{**link.files(), "key_file": str(key)})))


def test_a_key_of_another_certificate_is_refused(link: Link, tmp_path: Path) -> None:
    CertAuthority.load_or_create(link.certs).issue(tmp_path / "x.pem", tmp_path / "x.key", ["x"], client=True)
    files = {**link.files(), "key_file": str(tmp_path / "x.key")}
    with pytest.raises(ConfigError, match="is not the key of the client certificate"):
        open_vault(load_settings(env=link.env(tmp_path / "home", **files)))


def test_config_check_names_the_link_problem(link: Link, tmp_path: Path) -> None:
    done = sendvault("config", "check", "--no-ports", env=link.env(tmp_path / "home"))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "error: database: setting database_url" in done.stderr
    assert "connection requires a valid client certificate" in done.stderr


def test_scan_db_reports_the_cluster_compliant(link: Link) -> None:
    files = link.files()
    done = sendvault(
        "scan", "db", "postgres", f"127.0.0.1:{link.cluster.port}", "--ca", files["ca_file"],
        "--cert", files["cert_file"], "--key", files["key_file"], "--json",
    )  # fmt: skip
    [target] = json.loads(done.stdout)["targets"]
    assert target["findings"] == [], target
    assert target["unknown"] == [], target
    assert done.returncode == 0, done.stderr


def test_the_url_wins_over_the_settings_and_a_clear_text_mode_is_refused(link: Link) -> None:
    files = link.files()
    tls = TLSFiles(files["ca_file"], files["cert_file"], files["key_file"])
    # Settings fill in what the URL does not say; the CA implies verify-full.
    assert tls.check(link.url, "database_url") == {
        "sslrootcert": files["ca_file"], "sslcert": files["cert_file"], "sslkey": files["key_file"],
        "sslmode": "verify-full",
    }  # fmt: skip
    assert tls.check(f"{link.url}?sslmode=verify-ca&sslrootcert={files['ca_file']}", "database_url") == {
        "sslcert": files["cert_file"], "sslkey": files["key_file"],
    }  # fmt: skip
    for mode in ("disable", "allow", "prefer"):
        with pytest.raises(ConfigError, match=f"sslmode={mode} would send the link in the clear"):
            tls.check(f"{link.url}?sslmode={mode}", "database_url")
    with pytest.raises(ConfigError, match="is not a PEM certificate file") as info:
        TLSFiles(files["key_file"]).check(link.url, "database_url")
    assert info.value.setting == "database_ssl_ca_file"
