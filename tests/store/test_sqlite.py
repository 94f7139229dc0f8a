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
