"""Audit fixtures: a log in a fresh home, and a store with frequent checkpoints."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sendvault.audit import AuditLog, Event, open_audit
from sendvault.config import Settings


@pytest.fixture
def audit_log(settings: Settings) -> Iterator[AuditLog]:
    log = open_audit(settings)
    log.store.checkpoint_records = 5
    yield log
    log.close()


def fill(log: AuditLog, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        log.record(
            Event.MC_GET_TOKEN,
            actor="mc",
            source="192.0.2.1",
            route="/v1/mc/tokens",
            status=200,
            request={
                "tokenValues": [
                    {"tokenRequestId": str(i), "tokenValue": f"user{i}@example.com", "tokenType": "Email"}
                ]
            },
            response={"tokens": [{"tokenRequestId": str(i), "token": f"tok{i}@tokens.invalid"}]},
        )
    log.flush()
