"""The audit log: PII rule, chain and signatures, tampering, exports, purge, concurrency, failure."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from tests.audit.conftest import fill
from tests.conftest import VECTORS

from sendvault.audit import (
    AuditLog,
    ChainBroken,
    Event,
    export_jsonl,
    open_audit,
    verify_export,
    verify_store,
)
from sendvault.audit.record import redact
from sendvault.config import Settings, load_settings
from sendvault.errors import AuditUnavailable

_PII = json.loads((VECTORS / "audit_pii.json").read_text())["cases"]


@pytest.mark.parametrize("case", _PII, ids=lambda c: c["name"])
def test_pii_rule(case: dict[str, Any]) -> None:
    stored, values = redact(case["input"])
    assert stored == case["stored"]
    assert values == case["sealed"]


def _db(settings: Settings) -> sqlite3.Connection:
    return sqlite3.connect(settings.home_path / "audit.db", isolation_level=None)


def test_records_chain_and_verify(audit_log: AuditLog) -> None:
    fill(audit_log, 12)
    result = verify_store(audit_log.store)
    assert (result.first, result.last, result.records) == (1, 12, 12)
    assert result.checkpoints == 2


def test_sealed_values_open_only_with_the_audit_key(audit_log: AuditLog, settings: Settings) -> None:
    fill(audit_log, 1)
    (body,) = _db(settings).execute("SELECT body FROM audit_records").fetchone()
    doc = json.loads(body)
    assert doc["request"]["tokenValues"][0]["tokenValue"] == {"$pii": 0}
    assert audit_log.sealer.open(doc["sealed"]) == ["user0@example.com"]
    assert doc["fingerprints"] == [audit_log.sealer.fingerprint("user0@example.com")]


def test_no_clear_value_in_any_file(audit_log: AuditLog, settings: Settings) -> None:
    fill(audit_log, 3)
    audit_log.close()
    for path in settings.home_path.rglob("*"):
        if path.is_file():
            assert b"@example.com" not in path.read_bytes(), path.name


@pytest.mark.parametrize(
    ("tamper", "seq", "reason"),
    [
        (
            "UPDATE audit_records SET body = replace(body, '\"status\":200', '\"status\":201') WHERE seq = 4",
            4,
            "changed",
        ),
        ("UPDATE audit_records SET actor = 'x', body = body || ' ' WHERE seq = 7", 7, "changed"),
        ("UPDATE audit_records SET response = x'00' WHERE seq = 3", 3, "changed"),
        ("DELETE FROM audit_records WHERE seq = 5", 5, "missing"),
        ("DELETE FROM audit_records WHERE seq >= 9", 9, "truncated"),
        ("UPDATE audit_checkpoints SET sig = zeroblob(64) WHERE seq = 5", 5, "signature"),
        ("UPDATE audit_marks SET sig = zeroblob(64) WHERE kind = 'head'", 10, "signature"),
    ],
    ids=[
        "changed-field",
        "changed-byte",
        "changed-payload",
        "deleted-row",
        "truncated-tail",
        "forged-checkpoint",
        "forged-head",
    ],
)
def test_tampering_with_the_database_is_detected(
    audit_log: AuditLog, settings: Settings, tamper: str, seq: int, reason: str
) -> None:
    fill(audit_log, 10)
    _db(settings).execute(tamper)
    with pytest.raises(ChainBroken) as info:
        verify_store(audit_log.store)
    assert info.value.seq == seq
    assert reason in info.value.reason


def test_swapped_rows_are_detected(audit_log: AuditLog, settings: Settings) -> None:
    fill(audit_log, 6)
    db = _db(settings)
    a = db.execute("SELECT body, prev_hash, hash FROM audit_records WHERE seq = 2").fetchone()
    b = db.execute("SELECT body, prev_hash, hash FROM audit_records WHERE seq = 3").fetchone()
    db.execute("UPDATE audit_records SET body = ?, prev_hash = ?, hash = ? WHERE seq = 2", b)
    db.execute("UPDATE audit_records SET body = ?, prev_hash = ?, hash = ? WHERE seq = 3", a)
    with pytest.raises(ChainBroken) as info:
        verify_store(audit_log.store)
    assert info.value.seq == 2


def test_export_verifies_alone_and_detects_tampering(audit_log: AuditLog, tmp_path: Path) -> None:
    fill(audit_log, 7)
    export = tmp_path / "audit.jsonl"
    assert export_jsonl(audit_log.store, export) == 7
    key = audit_log.store.public_key
    assert verify_export(export, key).records == 7
    lines = export.read_text().splitlines()
    cases = {
        "changed": [ln.replace(":200", ":201") if '"seq": 4,' in ln else ln for ln in lines],
        "deleted": [ln for ln in lines if '"seq": 3,' not in ln or '"type": "record"' not in ln],
        "cut-tail": lines[:5],
        "no-head": [ln for ln in lines if '"type": "head"' not in ln],
        "swapped": [lines[1], lines[0], *lines[2:]],
    }
    for name, changed in cases.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(changed) + "\n")
        with pytest.raises(ChainBroken):
            verify_export(path, key)


def test_forged_export_signed_with_another_key_fails(audit_log: AuditLog, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    fill(audit_log, 3)
    export = tmp_path / "audit.jsonl"
    export_jsonl(audit_log.store, export)
    with pytest.raises(ChainBroken, match="signature"):
        verify_export(export, Ed25519PrivateKey.generate().public_key())


def test_purge_leaves_a_verifiable_anchored_chain(settings: Settings) -> None:
    now = [1_700_000_000.0]
    log = open_audit(settings, clock=lambda: now[0])
    fill(log, 5)
    now[0] += 86_400
    fill(log, 3, start=5)
    count, last = log.purge(int((now[0] - 3600) * 1_000_000), actor="cli:test")
    assert (count, last) == (5, 5)
    result = verify_store(log.store)
    assert (result.first, result.last, result.records) == (6, 9, 4)  # 6..8, then the purge's record
    fill(log, 2, start=8)
    assert verify_store(log.store).last == 11
    log.close()


def test_range_verification(audit_log: AuditLog) -> None:
    fill(audit_log, 10)
    result = verify_store(audit_log.store, first=4, last=8)
    assert (result.first, result.last, result.records) == (4, 8, 5)


def test_records_are_visible_to_another_process_within_a_second(
    audit_log: AuditLog, settings: Settings
) -> None:
    start = time.monotonic()
    audit_log.record_sync(Event.KEY_ROTATE, actor="cli:test")
    other = sqlite3.connect(settings.home_path / "audit.db")
    assert other.execute("SELECT count(*) FROM audit_records").fetchone()[0] == 1
    other.close()
    assert time.monotonic() - start < 1.0


def _writer(home: str, n: int) -> None:
    log = open_audit(load_settings(env={"SENDVAULT_HOME": home}))
    for i in range(n):
        log.record(Event.API_REQUEST, actor=f"p{os.getpid()}", meta={"i": i})
        if i % 7 == 0:
            log.flush()
    log.close()


def test_several_processes_keep_one_chain(settings: Settings) -> None:
    open_audit(settings).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(settings.home, 40)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    log = open_audit(settings)
    assert verify_store(log.store).records == 120
    log.close()


_KILLED_WRITER = """
import sys
from sendvault.audit import Event, open_audit
from sendvault.config import load_settings
log = open_audit(load_settings())
print("ready", flush=True)
i = 0
while True:
    log.record(Event.API_REQUEST, meta={"i": i})
    i += 1
    if i % 50 == 0:
        log.flush()
"""


def test_killing_a_writer_mid_traffic_leaves_a_verifiable_chain(settings: Settings) -> None:
    open_audit(settings).close()
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER],
        env={**os.environ, "SENDVAULT_HOME": settings.home},
        stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    log = open_audit(settings)
    assert verify_store(log.store).records > 0
    fill(log, 2)
    assert verify_store(log.store).records > 2
    log.close()


def test_unwritable_log_refuses_then_recovers(settings: Settings) -> None:
    log = open_audit(settings)
    log.store._busy_timeout_ms = 100
    log.store.close()
    log._retry_seconds = 0.3
    blocker = _db(settings)
    blocker.execute("PRAGMA busy_timeout = 100")
    blocker.execute("BEGIN IMMEDIATE")
    with pytest.raises(AuditUnavailable):
        log.record_sync(Event.API_REQUEST)
    with pytest.raises(AuditUnavailable):
        log.check()
    blocker.execute("ROLLBACK")
    blocker.close()
    # The writer's next probe (every 0.3 s) ends the refusal; on a loaded machine it may come
    # later than one interval, so wait for it rather than for a fixed time.
    deadline = time.monotonic() + 10
    while log._failure is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    log.record_sync(Event.API_REQUEST)
    log.check()
    assert verify_store(log.store).records == 1
    log.close()


def test_a_lingering_log_writes_api_records_in_groups_and_waited_records_at_once(settings: Settings) -> None:
    import time

    from sendvault.audit import open_audit

    log = open_audit(settings, linger_seconds=0.3)
    try:
        for i in range(5):
            log.record(Event.MC_RESOLVE, actor="mc", status=200, counts={"items": i})
        time.sleep(0.05)
        with log.store.snapshot() as conn:
            assert list(log.store.records(conn, "", [])) == []  # still gathering
        log.flush()
        with log.store.snapshot() as conn:
            assert len(list(log.store.records(conn, "", []))) == 5  # one group, well inside 1 s
        started = time.monotonic()
        log.record_sync(Event.KEY_ROTATE, actor="cli:test")
        assert time.monotonic() - started < 0.25  # a caller who waits does not wait for the linger
    finally:
        log.close()
    verify_store(log.store)
