"""Checkpoints: no record is more than `checkpoint_records` records or `checkpoint_seconds`
seconds from a signed, dated head kept for good (what witnesses receive)."""

from __future__ import annotations

import time

from tests.audit.conftest import fill

from sendvault.audit import AuditLog, Event, open_audit, verify_store
from sendvault.audit.record import canonical
from sendvault.audit.store import Pending, check_signature
from sendvault.config import Settings


def _pending(ts_us: int) -> Pending:
    body = {"ts_us": ts_us, "event": "api:request", "actor": None, "route": None, "status": None}
    return Pending(ts_us, "api:request", None, None, None, canonical({**body, "fingerprints": []}), ())


def test_a_large_group_gets_a_checkpoint_every_n_records(audit_log: AuditLog) -> None:
    store = audit_log.store
    store.checkpoint_seconds = 3600
    now = int(time.time() * 1_000_000)
    assert store.append([_pending(now) for _ in range(12)]) == list(range(1, 13))
    with store.snapshot() as conn:
        points = store.checkpoints(conn)
    assert sorted(points) == [5, 10]
    for seq, point in points.items():
        assert point.ts_us is not None
        check_signature(store.public_key, "head", seq, point.hash, point.sig, ts_us=point.ts_us)
    assert verify_store(store).checkpoints == 2


def test_records_of_an_idle_log_get_a_checkpoint_within_checkpoint_seconds(settings: Settings) -> None:
    log = open_audit(settings)
    log.store.checkpoint_seconds = 0.3
    try:
        log.record_sync(Event.KEY_ROTATE, actor="cli:test")
        with log.store.snapshot() as conn:
            assert log.store.checkpoints(conn) == {}
        deadline = time.monotonic() + 10
        points = {}
        while not points and time.monotonic() < deadline:
            time.sleep(0.05)
            with log.store.snapshot() as conn:
                points = log.store.checkpoints(conn)
        assert list(points) == [1]  # made by the writer with nothing new to write
        assert verify_store(log.store, first=1, last=1).covered_by == ("checkpoint", 1)
    finally:
        log.close()


def test_an_old_uncovered_record_makes_the_next_append_a_checkpoint(audit_log: AuditLog) -> None:
    store = audit_log.store
    store.checkpoint_seconds = 60
    old = int((time.time() - 120) * 1_000_000)
    store.append([_pending(old)])  # a record two minutes old: due at once
    store.append([_pending(int(time.time() * 1_000_000))])
    with store.snapshot() as conn:
        assert sorted(store.checkpoints(conn)) == [1]


def test_a_log_with_checkpoints_every_five_records_verifies_every_range(audit_log: AuditLog) -> None:
    fill(audit_log, 13)
    for first in range(1, 14):
        for last in range(first, 14):
            result = verify_store(audit_log.store, first=first, last=last)
            assert (result.first, result.last) == (first, last)
            kind, seq = result.covered_by or ("", 0)
            assert seq >= last
            assert kind == ("checkpoint" if seq in (5, 10) else "head")
