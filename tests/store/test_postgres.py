"""PostgreSQL-only behaviour of the store: deadlocks and serialization failures are retried."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from prometheus_client import REGISTRY

from sendvault.errors import StoreUnavailable
from sendvault.store import NewContact
from sendvault.store.postgres import TX_ATTEMPTS, PostgresStore, retrying


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    s = PostgresStore(pg_url)
    s.migrate()
    yield s
    s.close()


_INSERT = "INSERT INTO sv_contacts (token, kind, bidx, value_ct, created_at) VALUES"


def _row(token: str, bidx: bytes) -> NewContact:
    # Version byte 0: not a sealed value, so the store checks no data key for it.
    return NewContact(token, 1, bidx.ljust(32, b"\0"), b"\0" + os.urandom(39))


def test_a_deadlock_victim_runs_again_and_gets_the_winners_tokens(store: PostgresStore, pg_url: str) -> None:
    # Another writer (not sendvault: it inserts out of order) holds index "b2" and then asks for
    # "b1", which our transaction holds while it waits for "b2": a real deadlock. The other
    # session waits 30 s before checking for deadlocks, so PostgreSQL picks our transaction as
    # the victim after its default 1 s; the retry must then wait for the other and take its rows.
    mine = [_row("mine1", b"b1"), _row("mine2", b"b2")]
    before = _retries()
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute("SET deadlock_timeout = '30s'")
        other.execute("BEGIN")
        other.execute(
            f"{_INSERT} ('theirs2', 1, %s, %s, 0)",
            (mine[1].bidx, b"x" * 40),
        )
        (xid,) = other.execute("SELECT (pg_current_xact_id()::text::bigint % 4294967296)::text").fetchone()  # type: ignore[misc]
        got: list[dict[bytes, str]] = []
        worker = threading.Thread(target=lambda: got.append(store.insert_new(mine)))
        worker.start()
        # Ours must hold b1 and wait for b2 before the other asks for b1: else there is no
        # deadlock at all (a fixed sleep here was sometimes too short on a loaded machine).
        _wait_for_a_waiter(other, xid)
        other.execute(
            f"{_INSERT} ('theirs1', 1, %s, %s, 0) ON CONFLICT DO NOTHING",
            (mine[0].bidx, b"x" * 40),
        )
        other.execute("COMMIT")
        worker.join(timeout=30)
    assert got == [{mine[0].bidx: "theirs1", mine[1].bidx: "theirs2"}]
    assert _retries() == before + 1  # there was a deadlock, and the caller never saw it


def _wait_for_a_waiter(conn: psycopg.Connection[tuple[object, ...]], xid: str, seconds: float = 30) -> None:
    """Until some session waits for the transaction ``xid`` (a row it inserted)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        waiting = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'transactionid' AND transactionid = %s::xid "
            "AND NOT granted",
            (xid,),
        ).fetchone()
        if waiting and waiting[0]:
            return
        time.sleep(0.01)
    raise AssertionError("our transaction never waited for the other's row")


def _retries() -> float:
    return REGISTRY.get_sample_value("sendvault_store_retries_total", {"sqlstate": "40P01"}) or 0.0


def test_retries_are_bounded_then_unavailable() -> None:
    calls = []

    def always_deadlocked() -> None:
        calls.append(1)
        raise psycopg.errors.DeadlockDetected("deadlock detected")

    with pytest.raises(StoreUnavailable, match="40P01"):
        retrying(always_deadlocked)
    assert len(calls) == TX_ATTEMPTS


def test_serialization_failures_are_retried_and_other_errors_are_not() -> None:
    outcomes: list[Exception | None] = [psycopg.errors.SerializationFailure("could not serialize"), None]

    def flaky() -> str:
        problem = outcomes.pop(0)
        if problem is not None:
            raise problem
        return "done"

    assert retrying(flaky) == "done"
    calls = []

    def broken() -> None:
        calls.append(1)
        raise psycopg.errors.UndefinedTable("no such table")

    with pytest.raises(Exception, match="UndefinedTable"):
        retrying(broken)
    assert len(calls) == 1
