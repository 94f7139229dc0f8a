"""The CLI as an operator meets it: errors in words, exit codes, output that survives a pipe.

Every command here runs as a real process with stdout piped (not a terminal) and COLUMNS=80,
the way CI logs, `| grep` and `> file` see it: nothing may be cut.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from tests.helpers import run_cli

from sendvault.cli import cli
from sendvault.cli.reference import _walk

NARROW = {"COLUMNS": "80", "TERM": "dumb"}


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli(home, *args, env={**NARROW, **(env or {})})


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vault with a server certificate, a client and a few audited tokens."""
    home = tmp_path_factory.mktemp("operator") / "home"
    assert run(home, "certs", "server", "localhost", "127.0.0.1").returncode == 0
    assert run(home, "clients", "add", "marketing-cloud", "--allow", "198.51.100.0/24").returncode == 0
    values = ["first@example.com", "second@example.com", "third@example.com"]
    for value in values:
        assert run(home, "token", "get", "--type", "email", value).returncode == 0
    return home


def test_usage_errors_exit_2_with_one_error_line_and_a_hint(tmp_path: Path) -> None:
    home = tmp_path / "home"
    cases = {
        ("clients", "add", "bad name!"): "a client name is 1 to 128 characters without spaces",
        ("clients", "add", "x", "--allow", "10.0.0.0/33"): "10.0.0.0/33 is not an IP network",
        (
            "clients",
            "add",
            "x",
            "--scopes",
            "admin",
        ): "admin is not a scope; give one or more of: resolve, tokenize",
        ("clients", "add", "x", "--tokenize-rate", "-1"): "0 or more",
        ("confg", "show"): "no command 'confg' (did you mean config?)",
        ("audit", "show", "--since", "2026-12-05", "--until", "2026-12-01"): "is not before --until",
        ("token", "get", "--type", "fax", "1"): "'fax' is not one of 'email', 'mobile'",
        ("config", "show", "--nope"): "no such option",
        ("erase", "--token"): "option '--token' requires an argument",
        ("erase", "--token", "a", "--value", "b"): "give exactly one of --token or --value",
    }
    for args, words in cases.items():
        result = run(home, *args)
        assert result.returncode == 2, (args, result.stderr)
        lines = result.stderr.splitlines()
        assert lines[0].startswith("error: "), (args, result.stderr)
        assert words.lower() in lines[0].lower(), (args, lines[0])
        assert lines[1].startswith("hint: "), (args, result.stderr)
        if args[0] in ("erase", "config"):  # the hint names the command typed, not just `sendvault`
            assert (
                lines[1] == f"hint: see `sendvault {' '.join(args[: 1 if args[0] == 'erase' else 2])} --help`"
            )
        for code in ("invalid-client-id", "invalid-network", "unknown-scope", "Traceback", "Usage:"):
            assert code not in result.stderr, (args, result.stderr)


def test_an_unreachable_database_says_where_and_why(tmp_path: Path) -> None:
    url = "postgresql://sendvault@127.0.0.1:1/sendvault"
    result = run(tmp_path / "home", "clients", "list", env={"SENDVAULT_DATABASE_URL": url})
    assert result.returncode == 1
    assert 'cannot connect to PostgreSQL: connection to server at "127.0.0.1", port 1 failed' in result.stderr
    assert "OperationalError" not in result.stderr
    checked = run(tmp_path / "home", "config", "check", "--no-ports", env={"SENDVAULT_DATABASE_URL": url})
    assert checked.returncode == 2
    assert "error: database: setting database_url (from environment SENDVAULT_DATABASE_URL)" in checked.stderr


def test_a_write_lock_held_past_the_busy_timeout_names_the_setting(tmp_path: Path) -> None:
    # Another process (here a plain connection; in life a long-lock csv tokenize) holds the
    # write lock for longer than this command waits: the hint says so, not "unreachable".
    home = tmp_path / "home"
    assert run(home, "token", "get", "--type", "email", "first@example.com").returncode == 0
    holder = sqlite3.connect(home / "sendvault.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = run(
            home, "token", "get", "--type", "email", "second@example.com",
            env={"SENDVAULT_SQLITE_BUSY_TIMEOUT_MS": "300"},
        )  # fmt: skip
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == "error: sqlite: database is locked", result.stderr
    assert lines[1].startswith("hint: another process held the database's write lock"), result.stderr
    assert "SENDVAULT_SQLITE_BUSY_TIMEOUT_MS" in lines[1]
    assert "second@example.com" not in result.stderr
    assert run(home, "token", "get", "--type", "email", "second@example.com").returncode == 0


def test_a_missing_certificate_says_what_to_run(tmp_path: Path) -> None:
    result = run(tmp_path / "home", "config", "check", "--no-ports")
    assert result.returncode == 2
    assert "setting tls_cert_file (default):" in result.stderr
    assert "sendvault certs server NAME" in result.stderr
    assert "add one with: sendvault clients add NAME" in result.stderr


def test_config_show_names_each_value_source(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "sendvault.toml"
    config.write_text('token_domain = "tokens.example.com"\nworkers = 3\n')
    result = run(home, "config", "show", "--config", str(config), "--json", env={"SENDVAULT_WORKERS": "2"})
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    by_name = {r["setting"]: r for r in rows}
    assert by_name["token_domain"] == {"setting": "token_domain", "value": "tokens.example.com",
                                       "source": f"file {config}"}  # fmt: skip
    assert by_name["workers"]["value"] == 2
    assert by_name["workers"]["source"] == "environment SENDVAULT_WORKERS"
    assert by_name["https_port"]["source"] == "default"
    table = run(home, "config", "show", "--config", str(config))
    line = next(ln for ln in table.stdout.splitlines() if ln.startswith("token_domain"))
    assert line.split() == ["token_domain", "tokens.example.com", "file", str(config)]


def test_audit_show_piped_at_80_columns_cuts_nothing(home: Path) -> None:
    result = run(home, "audit", "show")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["seq", "time", "event", "actor", "source", "route", "status", "counts"]
    rows = [ln.split() for ln in lines[1:]]
    assert [r[2] for r in rows] == ["client:add", "token:create", "token:create", "token:create"]
    for row in rows:
        dt.datetime.fromisoformat(row[1].replace("Z", "+00:00"))  # a whole time, to the millisecond
        assert len(row[1]) == len("2026-12-04T17:06:23.387Z")
    assert rows[1][-2:] == ["created=1", "items=1"]
    assert "null" not in result.stdout
    assert "…" not in result.stdout
    assert max(len(ln) for ln in lines) > 80  # as wide as the data needs, not the terminal


def test_audit_show_newest_tail_and_reveal_in_a_table(home: Path) -> None:
    tail = run(home, "audit", "show", "--tail", "2").stdout.splitlines()
    assert [ln.split()[0] for ln in tail[1:]] == ["3", "4"]
    newest = run(home, "audit", "show", "--newest", "--limit", "2").stdout.splitlines()
    assert [ln.split()[0] for ln in newest[1:]] == ["4", "3"]
    sealed = run(home, "audit", "show", "--event", "token:create")
    assert "third@example.com" not in sealed.stdout
    revealed = run(home, "audit", "show", "--event", "token:create", "--reveal")
    assert revealed.stdout.splitlines()[0].split()[-1] == "revealed"
    assert "first@example.com" in revealed.stdout
    assert "third@example.com" in revealed.stdout.splitlines()[-1]
    # --json: a list, whatever the options.
    assert isinstance(json.loads(run(home, "audit", "show", "--tail", "1", "--json").stdout), list)


def test_audit_show_follow_prints_records_as_they_are_written(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for value in ("one@example.com", "two@example.com"):
        assert run(home, "token", "get", "--type", "email", value).returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "sendvault", "audit", "show", "--follow", "--tail", "1", "--json"],
        env={**os.environ, "SENDVAULT_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["seq"] == 2
        assert run(home, "token", "get", "--type", "email", "three@example.com").returncode == 0
        deadline = time.monotonic() + 30
        later = json.loads(proc.stdout.readline())
        assert time.monotonic() < deadline
        assert later["seq"] == 3
        assert later["event"] == "token:create"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()


def test_clients_lists_are_lists_in_json_and_whole_in_tables(home: Path) -> None:
    listed = json.loads(run(home, "clients", "list", "--json").stdout)
    assert listed == [{"client_id": "marketing-cloud", "scopes": ["resolve", "tokenize"],
                       "allow": ["198.51.100.0/24"], "tokenize_rate": 0.0}]  # fmt: skip
    table = run(home, "clients", "list").stdout.splitlines()
    assert table[1].split() == ["marketing-cloud", "resolve", "tokenize", "198.51.100.0/24", "no", "limit"]


def test_status_reports_and_exits_1_when_something_needs_attention(home: Path, tmp_path: Path) -> None:
    well = run(home, "status", "--json")
    assert well.returncode == 0, well.stdout + well.stderr
    doc = json.loads(well.stdout)
    assert doc["tokens"] == {"live": 3, "erased": 0}
    assert doc["schema"] == doc["latest_schema"]
    assert isinstance(doc["keys"], list)
    assert {k["purpose"] for k in doc["keys"]} == {"data", "bidx"}
    assert doc["key_provider"]["ok"] is True
    assert doc["certificate"]["days_left"] > 300
    assert doc["audit"]["verified"] is True
    assert doc["attention"] == []
    assert "all well" in run(home, "status").stdout

    # The wrong master key: the key provider no longer opens the vault.
    wrong = base64.b64encode(b"w" * 32).decode()
    keyed = run(home, "status", "--json", env={"SENDVAULT_MASTER_KEY": wrong})
    assert keyed.returncode == 1
    assert json.loads(keyed.stdout)["key_provider"]["ok"] is False
    assert any(a.startswith("key provider:") for a in json.loads(keyed.stdout)["attention"])

    # A certificate that expires in ten days.
    from sendvault.server.certs import CertAuthority

    ca = CertAuthority.load_or_create(home / "certs")
    ca.issue(tmp_path / "short.pem", tmp_path / "short.key", ["localhost"], days=10)
    short = run(home, "status", env={"SENDVAULT_TLS_CERT_FILE": str(tmp_path / "short.pem")})
    assert short.returncode == 1
    assert "attention: certificate expires in" in short.stdout
    assert "within cert_warn_days (21)" in short.stdout
    assert run(home, "status", env={"SENDVAULT_TLS_CERT_FILE": str(tmp_path / "short.pem"),
                                    "SENDVAULT_CERT_WARN_DAYS": "7"}).returncode == 0  # fmt: skip


def test_status_and_verify_see_a_tampered_audit_log(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "certs", "server", "localhost").returncode == 0
    for value in ("a@example.com", "b@example.com"):
        assert run(home, "token", "get", "--type", "email", value).returncode == 0
    # verify trusts only a key it is given (issue 15): here, explicitly, the one beside the log.
    pub = ["--public-key", str(home / "keys" / "audit-signing.pub")]
    assert run(home, "audit", "verify", *pub).returncode == 0
    noted = json.loads(run(home, "status", "--json").stdout)["audit"]["last_verify"]
    assert noted["intact"] is True
    with sqlite3.connect(home / "audit.db") as db:
        db.execute("UPDATE audit_records SET actor = 'someone-else' WHERE seq = 1")
    status = run(home, "status")
    assert status.returncode == 1
    assert "attention: audit log does not verify at record 1" in status.stdout
    assert run(home, "audit", "verify", *pub).returncode == 1
    assert json.loads(run(home, "status", "--json").stdout)["audit"]["last_verify"]["intact"] is False


def test_scan_tables_have_a_check_column_and_one_row_per_unknown(tmp_path: Path) -> None:
    url = "http://cdn.acme-corp.example/some/very/long/path/to/a/script/that/must/not/be/cut.js"
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.html").write_text(f'<script src="{url}"></script>')
    targets = tmp_path / "targets.toml"
    targets.write_text(f'[[content]]\ntarget = "{tmp_path / "site"}"\n[[tls]]\ntarget = "127.0.0.1:1"\n')
    result = run(tmp_path / "home", "scan", "all", "--targets", str(targets))
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["check", "target", "rule", "severity", "detail"]
    rows = [ln.split(maxsplit=4) for ln in lines[1:]]
    assert sorted((r[0], r[2], r[3]) for r in rows) == [
        ("content", "content.mixed-blockable", "high"),
        ("tls", "tls.unknown", "unknown"),  # once, not once more as a "could not check" row
    ]
    assert url in result.stdout
    assert "…" not in result.stdout


def test_scan_http_of_an_https_url_probes_plain_http_on_port_80_not_the_tls_port() -> None:
    from sendvault.scan.http import plain_url

    assert plain_url("https://api.example.com:8443/v1/mc?x=1") == "http://api.example.com/v1/mc?x=1"
    assert plain_url("https://api.example.com:8443/", 8080) == "http://api.example.com:8080/"
    assert plain_url("http://api.example.com:8080/") == "http://api.example.com:8080/"
    assert plain_url("https://[2001:db8::1]:8443/") == "http://[2001:db8::1]/"


def test_help_lines_are_whole_sentences() -> None:
    for path, command in _walk(cli, ["sendvault"]):
        if not isinstance(command, click.Group):
            continue
        ctx = click.Context(command, info_name=path[-1])
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            assert sub is not None
            short = sub.get_short_help_str(limit=80)
            where = " ".join([*path, name])
            assert not short.endswith(("...", "e.g.", "i.e.")), (where, short)
            assert short.count("(") == short.count(")"), (where, short)
    contact = run_cli(Path("/nonexistent"), "contact", "--help").stdout
    assert "Set, get or delete a contact's attributes (e.g. FirstName), stored encrypted." in " ".join(
        contact.split()
    )


def test_docs_point_at_nothing_outside_the_repository() -> None:
    docs = Path(__file__).parent.parent.parent / "docs"
    for page in docs.glob("*.md"):
        assert "shared/seeds" not in page.read_text(), page


def test_status_counts_exchange_files_past_their_retention(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run(home, "certs", "server", "localhost").returncode == 0
    folder = tmp_path / "exchange"
    folder.mkdir()
    old, fresh = folder / "export-old.csv", folder / "export-new.csv"
    old.write_text("token\n")
    fresh.write_text("token\n")
    eleven_days_ago = time.time() - 11 * 86400
    os.utime(old, (eleven_days_ago, eleven_days_ago))
    config = tmp_path / "sendvault.toml"
    config.write_text(f'[exchange]\nretention_days = 10\nlocal_dirs = ["{folder}"]\n')
    result = run(home, "--config", str(config), "status", "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["exchange"]["local_dirs"] == [
        {"dir": str(folder), "files": 2, "past_retention": 1, "next_deadline_days": -1.0}
    ]
    assert any(
        "past the 10-day retention period: run sendvault exchange sweep" in a for a in doc["attention"]
    )
    old.unlink()
    assert run(home, "--config", str(config), "status").returncode == 0


def test_a_config_file_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "binary.toml"
    config.write_bytes(b'token_domain = "t\xd0\x01.example.com"\n')
    for args in (("config", "check", "--no-ports"), ("config", "show"), ("serve",)):
        result = run(tmp_path / "home", "--config", str(config), *args)
        assert result.returncode == 2, (args, result.stderr)
        assert (
            result.stderr.splitlines()[0]
            == f"error: config file: {config} is not UTF-8 text (byte 18 cannot be read)"
        )
        assert "Traceback" not in result.stderr


def test_a_master_key_file_others_can_read_is_one_error_not_two(home: Path) -> None:
    key = home / "keys" / "master.key"
    key.chmod(0o644)
    try:
        result = run(home, "config", "check", "--no-ports")
    finally:
        key.chmod(0o600)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: keys: {key} is accessible by group or others (mode 644); run: chmod 600 {key}"]
    assert "None" not in result.stdout + result.stderr
    assert "data keys not opened (see keys)" in result.stdout


def test_a_certificate_not_valid_yet_needs_attention(home: Path, tmp_path: Path) -> None:
    from cryptography import x509
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
        .not_valid_before(now + dt.timedelta(days=5))
        .not_valid_after(now + dt.timedelta(days=100))
        .sign(ca_key, hashes.SHA256())
    )
    (tmp_path / "later.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file = tmp_path / "later.key"
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    key_file.chmod(0o600)
    env = {"SENDVAULT_TLS_CERT_FILE": str(tmp_path / "later.pem"), "SENDVAULT_TLS_KEY_FILE": str(key_file)}
    checked = run(home, "config", "check", "--no-ports", env=env)
    assert "warning  certificate     is not valid until" in checked.stdout
    status = run(home, "status", "--json", env=env)
    assert status.returncode == 1
    assert any("is not valid until" in line for line in json.loads(status.stdout)["attention"])


def _prompt_interrupted_by(raised: type[BaseException]) -> None:
    """A prompt whose input is interrupted (click raises Abort from None there)."""

    def read(prompt: str) -> str:
        raise raised

    click.termui.visible_prompt_func = read
    click.prompt("password")


@pytest.mark.parametrize(
    ("interrupt", "message", "code"),
    [
        ("start", "interrupted", 130),
        ("prompt", "interrupted", 130),
        ("end of input", "aborted", 1),
    ],
)
def test_ctrl_c_before_a_command_takes_over_is_interrupted_exit_130(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    interrupt: str,
    message: str,
    code: int,
) -> None:
    # Ctrl-C while the command is still being set up (its imports, the vault's opening), or at
    # a prompt, reaches click's own handler, not the command's: it said "aborted" and exited 1,
    # where the command itself says "interrupted" and exits 130. End of input at a prompt is
    # still "aborted".
    def stop(self: click.Group, ctx: click.Context) -> None:
        if interrupt == "start":
            raise KeyboardInterrupt
        _prompt_interrupted_by(KeyboardInterrupt if interrupt == "prompt" else EOFError)

    monkeypatch.setenv("SENDVAULT_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(click.Group, "invoke", stop)
    monkeypatch.setattr(click.termui, "visible_prompt_func", click.termui.visible_prompt_func)
    with pytest.raises(SystemExit) as exited:
        cli.main(args=["status"], prog_name="sendvault")
    assert exited.value.code == code
    assert capsys.readouterr().err.strip().splitlines()[-1] == message
