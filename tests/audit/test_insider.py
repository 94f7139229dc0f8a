"""Attacks of an insider who can write the data folder, each against a real log on disk.

Verify before extend: the writer checks the stored head before every append and never signs over
a log that does not match it. Range verifies check signatures. Read commands never write. The
trusted public key comes from configuration or --public-key, never from the folder verified.
"""

from __future__ import annotations

import logging
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY
from tests.api.conftest import ApiEnv
from tests.audit.conftest import fill
from tests.audit.tamper import append_keyless, connect, cut_tail, head_row, rechain, sign_head
from tests.helpers import run_cli

from sendvault.api import Authenticator, TokenApi, register_client
from sendvault.audit import AuditLog, ChainBroken, Event, open_audit, verify_store
from sendvault.config import Settings, load_settings
from sendvault.errors import AuditUnavailable
from sendvault.vault import open_vault

SOURCE = b'"source":"192.0.2.1"'
FORGED = b'"source":"203.0.113.66"'


def _db(settings: Settings) -> Path:
    return settings.home_path / "audit.db"


def _pub(home: Path) -> str:
    return str(home / "keys" / "audit-signing.pub")


# -- verify before extend ------------------------------------------------------------------


def test_a_keyless_rechain_stops_the_log_instead_of_being_signed(
    audit_log: AuditLog, settings: Settings
) -> None:
    fill(audit_log, 8)
    rechain(_db(settings), 7, SOURCE, FORGED)
    before = head_row(_db(settings))
    with pytest.raises(AuditUnavailable, match="does not match the signed head"):
        audit_log.record_sync(Event.KEY_ROTATE, actor="cli:test", timeout=5)
    assert head_row(_db(settings)) == before  # nothing was signed over the forgery
    with pytest.raises(ChainBroken, match="last record differs from the signed head"):
        verify_store(audit_log.store)


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[ApiEnv]:
    settings = load_settings(env={"SENDVAULT_HOME": str(tmp_path / "home")})
    vault = open_vault(settings)
    log = open_audit(settings)
    log._retry_seconds = 0.1
    env = ApiEnv(TokenApi(vault, Authenticator(vault.store, vault.shared_key("jwt")), settings, audit=log))
    env.secrets["mc"] = register_client(vault.store, "mc")
    yield env
    log.close()
    vault.close()


def _integrity_failures() -> float:
    return REGISTRY.get_sample_value("sendvault_audit_integrity_failures_total") or 0.0


def test_an_unauthenticated_call_after_a_rechain_stops_the_api_with_an_alert_and_a_metric(
    audited: ApiEnv, caplog: pytest.LogCaptureFixture
) -> None:
    log = audited.app.audit
    assert log is not None
    for _ in range(3):
        assert audited.call("POST", "/v1/mc/resolve", {"tokens": []}, audited.basic("mc")).status == 200
    log.flush()
    path = audited.app.settings.home_path / "audit.db"
    rechain(path, 2, b'"status":200', b'"status":201')
    before, failures = head_row(path), _integrity_failures()
    caplog.set_level(logging.CRITICAL, logger="sendvault.audit")
    # The insider's trigger: any call is recorded, a refused one too.
    assert audited.call("POST", "/v1/mc/resolve", {"tokens": []}).status == 401
    deadline = time.monotonic() + 10
    while log._failure is None and time.monotonic() < deadline:
        time.sleep(0.02)
    refused = audited.call("POST", "/v1/mc/resolve", {"tokens": []}, audited.basic("mc"))
    assert refused.status == 503
    assert refused.json()["reason"] == "audit log unavailable"
    assert audited.call("GET", "/healthz").status == 503
    assert _integrity_failures() == failures + 1
    alerts = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert alerts
    assert "ALERT" in alerts[0].getMessage()
    assert "does not match the signed head" in alerts[0].getMessage()
    assert head_row(path) == before


def test_a_cut_tail_is_not_extended_by_a_cli_change_and_verify_reports_it(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings(env={"SENDVAULT_HOME": str(home)})
    log = open_audit(settings)
    fill(log, 20)
    log.close()
    cut_tail(home / "audit.db", 13)
    added = run_cli(home, "clients", "add", "w")
    assert added.returncode == 1
    assert "audit" in added.stderr
    assert "Traceback" not in added.stderr
    verdict = run_cli(home, "audit", "verify", "--public-key", _pub(home))
    assert verdict.returncode == 1
    assert "tail truncated" in verdict.stderr


def test_a_cut_tail_with_an_older_head_pasted_back_stops_the_running_writer(
    audit_log: AuditLog, settings: Settings
) -> None:
    fill(audit_log, 10)
    older = head_row(_db(settings))
    fill(audit_log, 5, start=10)
    cut_tail(_db(settings), 10, older)
    with pytest.raises(AuditUnavailable, match="rolled back"):
        audit_log.record_sync(Event.KEY_ROTATE, actor="cli:test", timeout=5)
    assert head_row(_db(settings)) == older


def test_records_appended_after_the_head_without_the_key_are_never_signed(
    audit_log: AuditLog, settings: Settings
) -> None:
    fill(audit_log, 4)
    append_keyless(_db(settings), 1)
    with pytest.raises(AuditUnavailable, match="after the signed head"):
        audit_log.record_sync(Event.KEY_ROTATE, actor="cli:test", timeout=5)


def test_a_deleted_head_stops_the_writer(audit_log: AuditLog, settings: Settings) -> None:
    fill(audit_log, 3)
    connect(_db(settings)).execute("DELETE FROM audit_marks WHERE kind = 'head'")
    with pytest.raises(AuditUnavailable, match="no signed head"):
        audit_log.record_sync(Event.KEY_ROTATE, actor="cli:test", timeout=5)


def test_a_purge_refuses_a_log_that_does_not_verify(settings: Settings) -> None:
    now = [1_700_000_000.0]
    log = open_audit(settings, clock=lambda: now[0])
    fill(log, 4)
    now[0] += 86_400
    fill(log, 2, start=4)
    connect(_db(settings)).execute("UPDATE audit_records SET body = body || ' ' WHERE seq = 2")
    with pytest.raises(AuditUnavailable, match="record 2"):
        log.purge(int((now[0] - 60) * 1_000_000), actor="cli:test")
    assert connect(_db(settings)).execute("SELECT count(*) FROM audit_records").fetchone() == (6,)
    log.close()


# -- range verify --------------------------------------------------------------------------


def test_a_range_verify_on_a_rechained_forgery_is_broken(audit_log: AuditLog, settings: Settings) -> None:
    fill(audit_log, 12)  # checkpoints every 5 records in this fixture
    rechain(_db(settings), 3, SOURCE, FORGED)
    with pytest.raises(ChainBroken) as info:
        verify_store(audit_log.store, first=2, last=4)
    assert info.value.seq == 5


def test_a_range_verify_names_the_signed_point_that_covers_its_end(audit_log: AuditLog) -> None:
    fill(audit_log, 12)
    result = verify_store(audit_log.store, first=2, last=7)
    assert (result.first, result.last) == (2, 7)
    assert result.covered_by == ("checkpoint", 10)
    assert verify_store(audit_log.store, first=11, last=12).covered_by == ("head", 12)


def test_the_cli_range_verify_checks_signatures_and_can_require_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings(env={"SENDVAULT_HOME": str(home)})
    log = open_audit(settings)
    fill(log, 6)
    log.close()
    ok = run_cli(home, "audit", "verify", "--from", "2", "--to", "4", "--public-key", _pub(home))
    assert ok.returncode == 0, ok.stderr
    # A closing writer leaves its records under a checkpoint (what the witnesses receive).
    assert "covered by the signed checkpoint at record 6" in ok.stdout
    # Two records appended after the head without the key: the range links, but nothing signs it.
    append_keyless(home / "audit.db", 2)
    args = ["audit", "verify", "--from", "7", "--to", "8", "--public-key", _pub(home)]
    unsigned = run_cli(home, *args)
    assert unsigned.returncode == 0
    assert "not covered by a signed head" in unsigned.stdout
    required = run_cli(home, *args, "--require-signed")
    assert required.returncode == 1
    assert "no signed head covers record 8" in required.stderr
    rechain(home / "audit.db", 3, SOURCE, FORGED)
    forged = run_cli(home, "audit", "verify", "--from", "2", "--to", "4", "--public-key", _pub(home))
    assert forged.returncode == 1
    assert "BROKEN" in forged.stderr


# -- read commands never write -------------------------------------------------------------


def _one_error_line(stderr: str) -> None:
    """One `error:` line (the project's CLI form may add one `hint:` line), no traceback."""
    lines = stderr.splitlines()
    assert [ln for ln in lines if ln.startswith("error:")] == lines[:1], stderr
    assert all(ln.startswith(("error:", "hint:")) for ln in lines), stderr
    assert len(lines) <= 2, stderr


@pytest.mark.parametrize(
    "command",
    [
        ["audit", "verify", "--public-key", "PUB"],
        ["audit", "show"],
        ["audit", "search", "--client", "mc"],
        ["audit", "export"],
        ["audit", "head", "--public-key", "PUB"],
    ],
    ids=["verify", "show", "search", "export", "head"],
)
def test_a_read_command_on_a_missing_log_exits_2_in_one_line_and_creates_nothing(
    tmp_path: Path, command: list[str]
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    pub = tmp_path / "trusted.pub"
    pub.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    out = run_cli(home, *[str(pub) if a == "PUB" else a for a in command])
    assert out.returncode == 2, out.stderr
    _one_error_line(out.stderr)
    assert "no audit log" in out.stderr
    assert list(home.iterdir()) == []


def test_verify_after_a_dropped_table_is_broken_and_recreates_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = open_audit(load_settings(env={"SENDVAULT_HOME": str(home)}))
    fill(log, 3)
    log.close()
    connect(home / "audit.db").execute("DROP TABLE audit_marks")
    out = run_cli(home, "audit", "verify", "--public-key", _pub(home))
    assert out.returncode == 1
    assert "BROKEN" in out.stderr
    tables = {r[0] for r in connect(home / "audit.db").execute("SELECT name FROM sqlite_master")}
    assert "audit_marks" not in tables


def test_reveal_without_the_audit_key_exits_2_and_creates_no_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = open_audit(load_settings(env={"SENDVAULT_HOME": str(home)}))
    fill(log, 2)
    log.close()
    (home / "keys" / "audit.key").unlink()
    for command in (["show", "--reveal"], ["search", "--value", "user1@example.com"]):
        out = run_cli(home, "audit", *command)
        assert out.returncode == 2, out.stderr
        _one_error_line(out.stderr)
        assert "audit key" in out.stderr
        assert not (home / "keys" / "audit.key").exists()
    assert run_cli(home, "audit", "show", "--json").returncode == 0  # sealed values stay sealed


# -- the trusted key -----------------------------------------------------------------------


def test_verify_never_takes_the_key_from_the_folder_it_verifies(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = open_audit(load_settings(env={"SENDVAULT_HOME": str(home)}))
    fill(log, 2)
    log.close()
    out = run_cli(home, "audit", "verify")
    assert out.returncode == 2
    assert "audit_public_key" in out.stderr
    assert "--public-key" in out.stderr


def test_a_replaced_key_pair_fails_against_the_configured_trusted_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = open_audit(load_settings(env={"SENDVAULT_HOME": str(home)}))
    fill(log, 4)
    log.close()
    trusted = tmp_path / "trusted.pub"
    shutil.copy(home / "keys" / "audit-signing.pub", trusted)
    env = {"SENDVAULT_AUDIT_PUBLIC_KEY": str(trusted)}
    assert run_cli(home, "audit", "verify", env=env).returncode == 0
    # The insider makes a key pair of their own, rewrites a record and signs the new head.
    # (The closing writer's checkpoint signs record 4 too: the insider drops it.)
    mine = _new_key_pair(home)
    rechain(home / "audit.db", 2, SOURCE, FORGED)
    with connect(home / "audit.db") as conn:
        conn.execute("DELETE FROM audit_checkpoints")
    sign_head(home / "audit.db", mine)
    out = run_cli(home, "audit", "verify", env=env)
    assert out.returncode == 1
    assert "head signature does not verify" in out.stderr
    # With the folder's own key it would pass: that is why verify never uses it on its own.
    assert run_cli(home, "audit", "verify", "--public-key", _pub(home)).returncode == 0


def _new_key_pair(home: Path) -> Ed25519PrivateKey:
    """The insider's own key pair, written over the one beside the log."""
    mine = Ed25519PrivateKey.generate()
    (home / "keys" / "audit-signing.key").write_bytes(
        mine.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    (home / "keys" / "audit-signing.pub").write_bytes(
        mine.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return mine


def test_a_writer_handed_a_replaced_key_pair_refuses_to_start(tmp_path: Path) -> None:
    home = tmp_path / "home"
    log = open_audit(load_settings(env={"SENDVAULT_HOME": str(home)}))
    fill(log, 3)
    log.close()
    trusted = tmp_path / "trusted.pub"
    shutil.copy(home / "keys" / "audit-signing.pub", trusted)
    mine = _new_key_pair(home)
    rechain(home / "audit.db", 2, SOURCE, FORGED)
    sign_head(home / "audit.db", mine)
    # Without a configured key the writer would take the forged head as its own...
    pinned = load_settings(env={"SENDVAULT_HOME": str(home), "SENDVAULT_AUDIT_PUBLIC_KEY": str(trusted)})
    with pytest.raises(AuditUnavailable, match="does not match audit_public_key"):
        open_audit(pinned).close()
    assert sqlite3.connect(home / "audit.db").execute("SELECT max(seq) FROM audit_records").fetchone() == (3,)


def test_a_writer_whose_signing_key_was_deleted_refuses_instead_of_making_a_new_one(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings(env={"SENDVAULT_HOME": str(home)})
    log = open_audit(settings)
    fill(log, 2)
    log.close()
    (home / "keys" / "audit-signing.key").unlink()
    with pytest.raises(AuditUnavailable, match=r"signing key .* is missing but the log exists"):
        open_audit(settings)
    assert not (home / "keys" / "audit-signing.key").exists()


def test_a_writer_with_a_new_key_and_no_configured_key_stops_at_the_first_append(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings = load_settings(env={"SENDVAULT_HOME": str(home)})
    log = open_audit(settings)
    fill(log, 2)
    log.close()
    _new_key_pair(home)
    log = open_audit(settings)
    try:
        with pytest.raises(AuditUnavailable, match="does not verify under the signing key"):
            log.record_sync(Event.KEY_ROTATE, actor="cli:test", timeout=5)
    finally:
        log.close()


# -- start-up ------------------------------------------------------------------------------


def test_a_production_start_warns_that_the_signing_key_is_readable_by_its_own_user(tmp_path: Path) -> None:
    from sendvault.server.preflight import run_checks

    home = tmp_path / "home"
    settings = load_settings(env={"SENDVAULT_HOME": str(home)})
    log = open_audit(settings)
    fill(log, 1)
    log.close()
    audit = [f for f in run_checks(settings, dev=False, ports=False) if f.check == "audit log"]
    warnings = [f.message for f in audit if f.level == "warning"]
    assert any("audit signing key" in w and "readable by the user sendvault runs as" in w for w in warnings)
    assert any(f.level == "ok" and "signed head at record 1" in f.message for f in audit)
    dev = [f for f in run_checks(settings, dev=True, ports=False) if f.check == "audit log"]
    assert [f.level for f in dev] == ["ok"]


def test_start_up_checks_refuse_an_unusable_or_mismatched_trusted_key(tmp_path: Path) -> None:
    from sendvault.server.preflight import run_checks

    home = tmp_path / "home"
    log = open_audit(load_settings(env={"SENDVAULT_HOME": str(home)}))
    fill(log, 1)
    log.close()
    other = tmp_path / "other.pub"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for value, reason in (
        (str(tmp_path / "none.pub"), "setting audit_public_key"),
        (str(other), "does not match"),
    ):
        settings = load_settings(env={"SENDVAULT_HOME": str(home), "SENDVAULT_AUDIT_PUBLIC_KEY": value})
        errors = [f for f in run_checks(settings, dev=True, ports=False) if f.level == "error"]
        assert [f.check for f in errors] == ["audit log"]
        assert reason in errors[0].message
