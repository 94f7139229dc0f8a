"""Tampering that the hash alone does not see: indexed columns, fingerprint rows, checkpoints,
ranges, export structure and an emptied log. Each is reported as the first broken record."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from tests.audit.conftest import fill

from sendvault.audit import AuditLog, ChainBroken, export_jsonl, verify_export, verify_store
from sendvault.config import Settings


def _db(settings: Settings) -> sqlite3.Connection:
    return sqlite3.connect(settings.home_path / "audit.db", isolation_level=None)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ("UPDATE audit_records SET actor = 'mallory' WHERE seq = 3", "column actor"),
        ("UPDATE audit_records SET actor = NULL WHERE seq = 3", "column actor"),
        ("UPDATE audit_records SET status = 500 WHERE seq = 3", "column status"),
        ("UPDATE audit_records SET ts_us = ts_us + 1 WHERE seq = 3", "column ts_us"),
        ("UPDATE audit_records SET route = '/x' WHERE seq = 3", "column route"),
        ("UPDATE audit_records SET event = 'auth:fail' WHERE seq = 3", "column event"),
        ("UPDATE audit_records SET ts_us = 0 WHERE seq = 3", "column ts_us"),
        ("DELETE FROM audit_fingerprints WHERE seq = 3", "fingerprint rows differ"),
        ("UPDATE audit_fingerprints SET fp = 'forged' WHERE seq = 3", "fingerprint rows differ"),
        ("INSERT INTO audit_fingerprints VALUES ('forged', 3)", "fingerprint rows differ"),
        (
            "INSERT INTO audit_fingerprints SELECT fp, seq FROM audit_fingerprints WHERE seq = 3",
            "fingerprint rows",
        ),
    ],
    ids=[
        "actor",
        "actor-null",
        "status",
        "time-by-a-microsecond",
        "route",
        "event",
        "time",
        "fingerprint-deleted",
        "fingerprint-changed",
        "fingerprint-added",
        "fingerprint-repeated",
    ],
)
def test_a_column_changed_alone_is_a_broken_record_naming_the_column(
    audit_log: AuditLog, settings: Settings, tamper: str, reason: str
) -> None:
    fill(audit_log, 6)
    _db(settings).execute(tamper)
    with pytest.raises(ChainBroken) as info:
        verify_store(audit_log.store)
    assert info.value.seq == 3
    assert reason in info.value.reason


def test_a_fingerprint_row_for_no_record_is_detected(audit_log: AuditLog, settings: Settings) -> None:
    fill(audit_log, 4)
    _db(settings).execute("INSERT INTO audit_fingerprints VALUES ('forged', 99)")
    with pytest.raises(ChainBroken, match="not in the chain") as info:
        verify_store(audit_log.store)
    assert info.value.seq == 99


def test_a_checkpoint_for_no_record_is_forged(audit_log: AuditLog, settings: Settings) -> None:
    fill(audit_log, 7)
    _db(settings).execute(
        "INSERT INTO audit_checkpoints (seq, hash, sig) VALUES (1000, zeroblob(32), zeroblob(64))"
    )
    with pytest.raises(ChainBroken, match="checkpoint for a record not in the chain") as info:
        verify_store(audit_log.store)
    assert info.value.seq == 1000


def test_an_emptied_log_is_broken_while_a_new_one_is_intact(audit_log: AuditLog, settings: Settings) -> None:
    assert verify_store(audit_log.store).records == 0
    fill(audit_log, 3)
    _db(settings).executescript(
        "DELETE FROM audit_records; DELETE FROM audit_marks; DELETE FROM audit_checkpoints;"
        " DELETE FROM audit_fingerprints;"
    )
    with pytest.raises(ChainBroken, match="emptied"):
        verify_store(audit_log.store)


# -- ranges ---------------------------------------------------------------------------------


def test_a_range_whose_first_record_was_deleted_is_broken(audit_log: AuditLog, settings: Settings) -> None:
    fill(audit_log, 10)
    _db(settings).execute("DELETE FROM audit_records WHERE seq = 5")
    with pytest.raises(ChainBroken, match="missing") as info:
        verify_store(audit_log.store, first=5, last=8)
    assert info.value.seq == 5


def test_a_range_whose_last_record_was_deleted_is_broken(audit_log: AuditLog, settings: Settings) -> None:
    fill(audit_log, 10)
    _db(settings).execute("DELETE FROM audit_records WHERE seq = 8")
    with pytest.raises(ChainBroken, match="missing") as info:
        verify_store(audit_log.store, first=5, last=8)
    assert info.value.seq == 8


def test_a_reversed_range_is_a_usage_error(audit_log: AuditLog) -> None:
    fill(audit_log, 6)
    with pytest.raises(ValueError, match="reversed"):
        verify_store(audit_log.store, first=5, last=3)


def test_a_range_after_the_head_is_a_usage_error(audit_log: AuditLog) -> None:
    fill(audit_log, 6)
    with pytest.raises(ValueError, match="ends at record 6"):
        verify_store(audit_log.store, first=9)


def test_a_range_starting_before_the_purge_anchor_is_verified_from_the_anchor(settings: Settings) -> None:
    from sendvault.audit import open_audit

    now = [1_700_000_000.0]
    log = open_audit(settings, clock=lambda: now[0])
    fill(log, 4)
    now[0] += 86_400
    fill(log, 4, start=4)
    log.purge(int((now[0] - 60) * 1_000_000), actor="cli:test")
    result = verify_store(log.store, first=2, last=6)
    assert (result.first, result.last) == (5, 6)
    log.close()


# -- exports --------------------------------------------------------------------------------


def _export(log: AuditLog, tmp_path: Path) -> list[str]:
    path = tmp_path / "audit.jsonl"
    export_jsonl(log.store, path)
    return path.read_text().splitlines()


def _verify_lines(log: AuditLog, tmp_path: Path, lines: list[str]) -> None:
    path = tmp_path / "changed.jsonl"
    path.write_text("\n".join(lines) + "\n")
    verify_export(path, log.store.public_key)


def test_a_forged_checkpoint_in_an_export_is_detected(audit_log: AuditLog, tmp_path: Path) -> None:
    fill(audit_log, 7)
    lines = _export(audit_log, tmp_path)
    forged = [
        json.dumps({**json.loads(ln), "sig": "A" * 86 + "=="}) if '"type": "checkpoint"' in ln else ln
        for ln in lines
    ]
    with pytest.raises(ChainBroken, match="checkpoint signature") as info:
        _verify_lines(audit_log, tmp_path, forged)
    assert info.value.seq == 5


def test_a_checkpoint_line_for_no_record_in_an_export_is_forged(audit_log: AuditLog, tmp_path: Path) -> None:
    fill(audit_log, 3)
    lines = _export(audit_log, tmp_path)
    extra = json.dumps({"type": "checkpoint", "seq": 1000, "hash": "AA==", "sig": "AA=="})
    with pytest.raises(ChainBroken, match="not in the chain"):
        _verify_lines(audit_log, tmp_path, [*lines[:-1], extra, lines[-1]])


def test_an_unknown_line_in_an_export_is_broken(audit_log: AuditLog, tmp_path: Path) -> None:
    fill(audit_log, 3)
    lines = _export(audit_log, tmp_path)
    with pytest.raises(ChainBroken, match="unknown line type"):
        _verify_lines(audit_log, tmp_path, [lines[0], json.dumps({"type": "note", "text": "hi"}), *lines[1:]])


def test_a_second_head_line_in_an_export_is_broken(audit_log: AuditLog, tmp_path: Path) -> None:
    fill(audit_log, 3)
    lines = _export(audit_log, tmp_path)
    with pytest.raises(ChainBroken, match="after the signed head"):
        _verify_lines(audit_log, tmp_path, [*lines, lines[-1]])


def test_swapped_export_lines_are_reported_as_reordered(audit_log: AuditLog, tmp_path: Path) -> None:
    fill(audit_log, 5)
    lines = _export(audit_log, tmp_path)
    with pytest.raises(ChainBroken, match="reordered") as info:
        _verify_lines(audit_log, tmp_path, [lines[0], lines[2], lines[1], *lines[3:]])
    assert info.value.seq == 2


def test_an_empty_export_file_is_broken(audit_log: AuditLog, tmp_path: Path) -> None:
    with pytest.raises(ChainBroken, match="emptied"):
        _verify_lines(audit_log, tmp_path, [])
