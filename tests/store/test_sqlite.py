"""SQLite specifics: WAL, file permissions, busy store reported as unavailable."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from sendvault.errors import StoreUnavailable
from sendvault.store import NewContact, SQLiteStore


def test_database_is_wal_and_private(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "d" / "s.db")
    store.migrate()
    store.close()
    assert stat.S_IMODE((tmp_path / "d" / "s.db").stat().st_mode) == 0o600
    conn = sqlite3.connect(tmp_path / "d" / "s.db")
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


def test_write_lock_held_elsewhere_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db", busy_timeout_ms=100)
    store.migrate()
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            store.insert_new([NewContact("t", 1, b"b" * 32, b"x" * 40)])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert store.insert_new([NewContact("t", 1, b"b" * 32, b"x" * 40)]) == {b"b" * 32: "t"}
    store.close()


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.migrate()
    store.close()
    with pytest.raises(StoreUnavailable):
        store.count()


def _rows(start: int, count: int) -> list[NewContact]:
    return [
        NewContact(f"tok-{i:08d}", 1, i.to_bytes(4, "big") * 8, b"v" * 60)
        for i in range(start, start + count)
    ]


def test_creating_tokens_checkpoints_off_the_commit_path_and_keeps_the_wal_bounded(tmp_path: Path) -> None:
    import time

    store = SQLiteStore(tmp_path / "s.db", checkpoint_soft_bytes=64 << 10, checkpoint_hard_bytes=2 << 20)
    store.migrate()
    largest = 0
    for start in range(0, 40_000, 500):
        store.insert_new(_rows(start, 500))
        largest = max(largest, (tmp_path / "s.db-wal").stat().st_size)
        time.sleep(0.002)  # let the checkpointer run between groups, as traffic would
    writer = store._writer
    assert writer is not None
    # The group commits' own connection no longer checkpoints inline ...
    (commit_conn,) = store._commit_conns
    assert commit_conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    store.close()
    # ... yet the WAL stayed within the hard bound plus the groups that arrived while it ran,
    assert largest < 8 << 20
    # and every row is in the database.
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("SELECT count(*) FROM contacts").fetchone()[0] == 40_000
    conn.close()


def test_on_an_event_loop_a_held_write_lock_is_waited_out_without_stalling_the_loop(tmp_path: Path) -> None:
    import asyncio
    import time

    store = SQLiteStore(tmp_path / "s.db", busy_timeout_ms=5_000)
    store.migrate()
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")

    async def run() -> tuple[dict[bytes, str], float]:
        insert = asyncio.ensure_future(store.insert_new_async(_rows(0, 1)))
        # While the insert waits for the lock, the loop keeps serving: ticks arrive on time.
        started = time.monotonic()
        for _ in range(20):
            await asyncio.sleep(0.01)
        ticking = time.monotonic() - started
        blocker.execute("ROLLBACK")
        return await insert, ticking

    found, ticking = asyncio.run(run())
    blocker.close()
    store.close()
    assert found == {(0).to_bytes(4, "big") * 8: "tok-00000000"}
    assert ticking < 1.0


def test_on_an_event_loop_a_lock_held_past_the_busy_timeout_is_unavailable(tmp_path: Path) -> None:
    import asyncio

    store = SQLiteStore(tmp_path / "s.db", busy_timeout_ms=200)
    store.migrate()
    blocker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreUnavailable):
            asyncio.run(store.insert_new_async(_rows(0, 1)))
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    store.close()


def test_version_3_keeps_every_row_and_makes_lookups_by_value_covering(tmp_path: Path) -> None:
    from importlib import resources

    folder = resources.files("sendvault.store") / "migrations" / "sqlite"
    old = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    for name in ("0001_initial.sql", "0002_clients.sql"):
        old.executescript((folder / name).read_text())
    old.execute("PRAGMA user_version = 2")
    old.execute("INSERT INTO contacts VALUES ('t1', 1, x'01', x'02', NULL, 5, NULL)")
    old.execute("INSERT INTO contacts VALUES ('t2', 1, NULL, NULL, NULL, 5, 9)")  # a tombstone
    old.close()
    store = SQLiteStore(tmp_path / "s.db")
    store.migrate()
    assert store.fetch_by_bidx([b"\x01"]) == {b"\x01": "t1"}
    assert sorted(r[0] for r in store.fetch_by_tokens(["t1", "t2"])) == ["t1", "t2"]
    store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 3
    plan = conn.execute(
        "EXPLAIN QUERY PLAN SELECT bidx, token FROM contacts WHERE bidx IN (?, ?)", [b"a", b"b"]
    )
    assert "COVERING INDEX" in plan.fetchone()[3]
    with pytest.raises(sqlite3.IntegrityError):  # the blind index is still unique
        conn.execute(
            "INSERT INTO contacts (token, kind, bidx, value_ct, created_at) VALUES ('t3', 1, x'01', x'03', 6)"
        )
    conn.close()


def _recording_commits(monkeypatch: pytest.MonkeyPatch, seconds_per_row: float | None) -> list[int]:
    """Record the size of every bulk transaction; with ``seconds_per_row``, report that lock time
    instead of the measured one (so the sizes do not depend on this machine's speed)."""
    from sendvault.store import sqlite as module

    sizes: list[int] = []
    real = module._commit_bulk

    def commit(conn: sqlite3.Connection, rows: list[NewContact], now: int) -> tuple[dict[bytes, str], float]:
        sizes.append(len(rows))
        found, held = real(conn, rows, now)
        return found, held if seconds_per_row is None else len(rows) * seconds_per_row

    monkeypatch.setattr(module, "_commit_bulk", commit)
    return sizes


def test_bulk_transactions_are_sized_to_hold_the_lock_about_the_set_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _recording_commits(monkeypatch, seconds_per_row=20e-6)
    store = SQLiteStore(tmp_path / "s.db", bulk_lock_seconds=1.0)
    store.migrate()
    first = store.insert_bulk(_rows(0, 30_000))
    # The first transaction knows no timing yet: 5,000 rows; then 20 us a row and 1 s of lock
    # allow 50,000, and the 25,000 left go in one.
    assert sizes == [5_000, 25_000]
    sizes.clear()
    second = store.insert_bulk(_rows(30_000, 150_000))
    # 20 us a row and 1 s of lock: 50,000 rows a transaction, split evenly.
    assert sizes == [50_000] * 3
    assert len(first) == 30_000
    assert len(second) == 150_000
    assert store.count() == 180_000
    store.close()


@pytest.mark.parametrize(("lock_seconds", "expected"), [(1.0, 50_000), (0.2, 10_000), (60.0, 250_000)])
def test_bulk_batch_rows_is_the_next_transaction_size_once_one_was_timed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock_seconds: float, expected: int
) -> None:
    _recording_commits(monkeypatch, seconds_per_row=20e-6)
    store = SQLiteStore(tmp_path / "s.db", bulk_lock_seconds=lock_seconds, busy_timeout_ms=600_000)
    store.migrate()
    assert store.bulk_batch_rows() == 0  # nothing timed yet: the converter keeps its own size
    store.insert_bulk(_rows(0, 1_000))  # a small call times no transaction
    assert store.bulk_batch_rows() == 0
    store.insert_bulk(_rows(1_000, 5_000))
    # 20 us a row: the lock time allows lock/20us rows, at most 250,000 (a 60 s lock).
    assert store.bulk_batch_rows() == expected
    store.close()


def test_bulk_lock_time_never_exceeds_half_the_busy_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _recording_commits(monkeypatch, seconds_per_row=20e-6)
    # 30 s asked for, but a writer waits at most 1 s: transactions aim at a quarter of it, 0.25 s
    # (12,500 rows), so a writer behind one of each of two bulk jobs still gets in.
    store = SQLiteStore(tmp_path / "s.db", bulk_lock_seconds=30.0, busy_timeout_ms=1_000)
    store.migrate()
    store.insert_bulk(_rows(0, 20_000))
    sizes.clear()
    store.insert_bulk(_rows(20_000, 100_000))
    assert sizes == [12_500] * 8
    store.close()


def test_bulk_transactions_shrink_on_real_time_and_every_row_is_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sizes = _recording_commits(monkeypatch, seconds_per_row=None)
    # 5 ms of lock: far below what 5,000 rows take on any machine (SQLite inserts into two
    # B-trees at a few microseconds a row), so the measured time brings the size down.
    store = SQLiteStore(tmp_path / "s.db", bulk_lock_seconds=0.005)
    store.migrate()
    rows = _rows(0, 10_000)
    assert store.insert_bulk(rows) == {r.bidx: r.token for r in rows}
    rows = _rows(10_000, 6_000)
    assert store.insert_bulk(rows) == {r.bidx: r.token for r in rows}
    assert sizes[0] == 5_000
    assert len(sizes) > 3
    assert max(sizes[1:]) < 5_000
    store.close()


def test_bulk_transactions_leave_the_write_lock_free_between_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import itertools

    # Back to back, a writer waiting behind one bulk transaction (retrying every 50-100 ms) found
    # the next already begun, and waited behind a chain of them past its busy timeout.
    import time

    from sendvault.store import sqlite as module

    spans: list[tuple[float, float]] = []
    real = module._commit_bulk

    def commit(conn: sqlite3.Connection, rows: list[NewContact], now: int) -> tuple[dict[bytes, str], float]:
        began = time.monotonic()
        try:
            return real(conn, rows, now)
        finally:
            spans.append((began, time.monotonic()))

    monkeypatch.setattr(module, "_commit_bulk", commit)
    store = SQLiteStore(tmp_path / "s.db", bulk_lock_seconds=0.005)
    store.migrate()
    store.insert_bulk(_rows(0, 4_000))
    store.insert_bulk(_rows(4_000, 4_000))  # also between two calls
    assert len(spans) > 3
    gaps = [later[0] - earlier[1] for earlier, later in itertools.pairwise(spans)]
    assert min(gaps) >= module._BULK_YIELD_SECONDS
    store.close()


def test_bulk_rows_that_lose_to_existing_ones_are_answered_with_the_existing_tokens(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.migrate()
    store.insert_bulk(_rows(0, 1_000))
    # Same values (blind indexes) under new tokens: every answer is the token already stored.
    again = [NewContact("new-" + r.token, r.kind, r.bidx, r.value_ct) for r in _rows(0, 1_000)]
    assert store.insert_bulk(again) == {r.bidx: r.token for r in _rows(0, 1_000)}
    assert store.count() == 1_000
    store.close()
    store.close()
