"""The signed head: dated, printed by `audit head`, and, kept elsewhere, proof against rollback."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from tests.audit.conftest import fill
from tests.helpers import run_cli

from sendvault.audit import (
    AuditLog,
    ChainBroken,
    Mark,
    export_jsonl,
    head_document,
    open_audit,
    parse_head,
    signed_head,
    verify_export,
    verify_store,
)
from sendvault.audit.store import head_message
from sendvault.config import Settings


def _db(settings: Settings) -> sqlite3.Connection:
    return sqlite3.connect(settings.home_path / "audit.db", isolation_level=None)


def test_the_head_signs_the_time_it_was_written(settings: Settings) -> None:
    log = open_audit(settings)
    log.store._clock = lambda: 1_800_000_000.5
    fill(log, 2)
    head = signed_head(log.store)
    assert (head.seq, head.ts_us) == (2, 1_800_000_000_500_000)
    assert verify_store(log.store).head == head
    log.close()


def test_a_head_with_a_changed_time_does_not_verify(audit_log: AuditLog, settings: Settings) -> None:
    fill(audit_log, 3)
    _db(settings).execute("UPDATE audit_marks SET ts_us = ts_us + 1 WHERE kind = 'head'")
    with pytest.raises(ChainBroken, match="head signature"):
        verify_store(audit_log.store)


def test_the_head_document_reads_back(audit_log: AuditLog) -> None:
    fill(audit_log, 2)
    head = signed_head(audit_log.store)
    assert parse_head(json.dumps(head_document(head))) == head


def _roll_back(log: AuditLog, settings: Settings, keep: int, then: int) -> Mark:
    """Write ``keep`` records and copy the files, write ``then`` more, put the copy back.

    Returns the head a copy kept elsewhere would hold: the one before the rollback.
    """
    home = settings.home_path
    fill(log, keep)
    log.store.close()
    shutil.copy(home / "audit.db", home / "old.db")
    fill(log, then, start=keep)
    known = signed_head(log.store)
    log.store.close()
    shutil.copy(home / "old.db", home / "audit.db")
    return known


def test_a_rollback_to_an_older_consistent_state_verifies_without_a_known_head(
    audit_log: AuditLog, settings: Settings
) -> None:
    # The limit docs/audit.md states: on its own, the rolled-back log is consistent.
    _roll_back(audit_log, settings, keep=6, then=2)
    assert verify_store(audit_log.store).last == 6


def test_a_rollback_below_a_known_head_is_detected(audit_log: AuditLog, settings: Settings) -> None:
    known = _roll_back(audit_log, settings, keep=6, then=2)
    with pytest.raises(ChainBroken, match="before the known head") as info:
        verify_store(audit_log.store, known=known)
    assert info.value.seq == 7


def test_a_record_rewritten_under_a_known_head_is_detected(audit_log: AuditLog) -> None:
    fill(audit_log, 4)
    signer = audit_log.store._signer
    assert signer is not None
    other = b"\1" * 32  # the head of another history, signed with the same key
    known = Mark(3, other, signer.sign(head_message("head", 3, other, 0)), 0)
    with pytest.raises(ChainBroken, match="differs from the known head") as info:
        verify_store(audit_log.store, known=known)
    assert info.value.seq == 3


def test_a_known_head_with_a_bad_signature_is_rejected(audit_log: AuditLog) -> None:
    fill(audit_log, 4)
    known = signed_head(audit_log.store)
    forged = Mark(known.seq + 5, known.hash, known.sig, known.ts_us)
    with pytest.raises(ChainBroken, match="known head signature"):
        verify_store(audit_log.store, known=forged)


def test_a_known_head_that_is_still_in_the_chain_verifies(audit_log: AuditLog) -> None:
    fill(audit_log, 4)
    known = signed_head(audit_log.store)
    fill(audit_log, 3, start=4)
    assert verify_store(audit_log.store, known=known).last == 7


def test_an_export_cut_and_given_an_older_head_is_detected_by_the_known_head(
    audit_log: AuditLog, tmp_path: Path
) -> None:
    fill(audit_log, 3)
    older = tmp_path / "older.jsonl"
    export_jsonl(audit_log.store, older)
    fill(audit_log, 2, start=3)
    known = signed_head(audit_log.store)
    newer = tmp_path / "newer.jsonl"
    export_jsonl(audit_log.store, newer)
    older_head = older.read_text().splitlines()[-1]
    records = [ln for ln in newer.read_text().splitlines() if '"type": "record"' in ln]
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join([*records[:3], older_head]) + "\n")
    assert verify_export(cut, audit_log.store.public_key).last == 3  # consistent on its own
    with pytest.raises(ChainBroken, match="before the known head"):
        verify_export(cut, audit_log.store.public_key, known=known)


def _purged_after(settings: Settings, known_at: int) -> tuple[AuditLog, Mark]:
    """Records 1..3 on one day (the head kept at ``known_at``), 4..6 the next; 1..3 purged."""
    now = [1_700_000_000.0]
    log = open_audit(settings, clock=lambda: now[0])
    fill(log, known_at)
    known = signed_head(log.store)
    fill(log, 3 - known_at, start=known_at)
    now[0] += 86_400
    fill(log, 3, start=3)
    assert log.purge(int((now[0] - 60) * 1_000_000), actor="cli:test") == (3, 3)
    return log, known


def test_a_known_head_at_the_purge_anchor_verifies(settings: Settings) -> None:
    log, known = _purged_after(settings, known_at=3)
    assert verify_store(log.store, known=known).first == 4
    log.close()


def test_a_known_head_older_than_the_purge_anchor_cannot_be_checked(settings: Settings) -> None:
    log, known = _purged_after(settings, known_at=2)
    with pytest.raises(ValueError, match="purged"):
        verify_store(log.store, known=known)
    log.close()


# -- the CLI --------------------------------------------------------------------------------


def test_audit_head_and_verify_with_a_known_head_from_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "keys", "rotate").returncode == 0
    pub = ["--public-key", str(home / "keys" / "audit-signing.pub")]
    head = run_cli(home, "audit", "head", "--json", *pub)
    assert head.returncode == 0
    doc = json.loads(head.stdout)
    assert doc["seq"] == 1
    assert doc["time"].startswith("20")
    kept = tmp_path / "head.json"
    kept.write_text(head.stdout)
    ok = run_cli(home, "audit", "verify", "--known-head", str(kept), *pub)
    assert ok.returncode == 0
    assert f"signed head: record 1, hash {doc['hash']}, written {doc['time']}" in ok.stdout
    assert "known head: record 1" in ok.stdout
    verdict = json.loads(run_cli(home, "audit", "verify", "--json", *pub).stdout)
    assert verdict["head"]["hash"] == doc["hash"]


def test_verify_below_a_known_head_exits_1_from_the_cli(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run_cli(home, "keys", "rotate")
    run_cli(home, "keys", "rotate")
    kept = tmp_path / "head.json"
    pub = ["--public-key", str(home / "keys" / "audit-signing.pub")]
    kept.write_text(run_cli(home, "audit", "head", "--json", *pub).stdout)
    db = sqlite3.connect(home / "audit.db", isolation_level=None)
    db.execute("DELETE FROM audit_records WHERE seq = 2")
    db.execute("DELETE FROM audit_marks WHERE kind = 'head'")
    db.close()
    broken = run_cli(home, "audit", "verify", "--known-head", str(kept), *pub)
    assert broken.returncode == 1
    assert "BROKEN" in broken.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["--from", "5", "--to", "3"],
        ["--file", "x.jsonl", "--from", "1"],
        ["--known-head", "missing.json"],
        ["--known-head", "head.json", "--from", "1"],
        ["--from", "9"],
    ],
    ids=[
        "reversed-range",
        "range-with-file",
        "missing-known-head",
        "known-head-with-range",
        "after-the-head",
    ],
)
def test_verify_usage_errors_exit_2(tmp_path: Path, args: list[str]) -> None:
    home = tmp_path / "home"
    run_cli(home, "keys", "rotate")
    (tmp_path / "x.jsonl").write_text("")
    pub = ["--public-key", str(home / "keys" / "audit-signing.pub")]
    (tmp_path / "head.json").write_text(run_cli(home, "audit", "head", "--json", *pub).stdout)
    args = [str(tmp_path / a) if a.endswith((".json", ".jsonl")) else a for a in args]
    out = run_cli(home, "audit", "verify", *args, *pub)
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
