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
