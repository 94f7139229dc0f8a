"""Schema migrations on both backends: the history table, refusing older and newer schemas."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from sendvault.errors import SchemaOutdated, SchemaTooNew
from sendvault.store import SQLiteStore, Store
from sendvault.store.migrations import HISTORY_VERSION, load
from sendvault.store.postgres import PostgresStore

LATEST = len(load("sqlite"))


class Backend:
    """A fresh database of one backend, and raw access to fake an older or newer schema."""

    def __init__(self, name: str, open_store: Callable[[], Store], raw: Callable[[str], None]) -> None:
        self.name, self.open, self.raw = name, open_store, raw


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        path = tmp_path / "s.db"

        def raw(sql: str) -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.executescript(sql)
            finally:
                conn.close()

        yield Backend("sqlite", lambda: SQLiteStore(path, clock=lambda: 1_700_000_000.0), raw)
    else:
        url = request.getfixturevalue("pg_url")

        def raw_pg(sql: str) -> None:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(sql.encode())

        yield Backend("postgres", lambda: PostgresStore(url, clock=lambda: 1_700_000_000.0), raw_pg)


def _version_sql(backend: Backend, version: int) -> str:
    if backend.name == "sqlite":
        return f"PRAGMA user_version = {version}"
    return f"INSERT INTO sv_schema (version) VALUES ({version})"


def test_migrations_are_the_same_files_on_both_backends() -> None:
    assert [(m.version, m.name) for m in load("sqlite")] == [(m.version, m.name) for m in load("postgres")]
    assert LATEST >= HISTORY_VERSION


def test_a_new_database_records_every_migration_with_its_checksum(backend: Backend) -> None:
    store = backend.open()
    try:
        assert store.migrate(upgrade=False) == list(range(1, LATEST + 1))  # an empty one is set up
        assert store.migrate() == []
        status = store.schema_status()
    finally:
        store.close()
    files = load(backend.name)
    assert (status.current, status.latest, status.pending, status.changed) == (LATEST, LATEST, [], [])
    assert [(a.version, a.name, a.sha256, a.applied_at) for a in status.applied] == [
        (m.version, m.name, m.sha256, 1_700_000_000) for m in files
    ]


def test_an_older_schema_is_refused_unless_upgrading_then_upgraded_in_place(backend: Backend) -> None:
    store = backend.open()
    try:
        store.migrate()
        # Back to the schema of version 3: without what migrations 4 and 5 add.
        backend.raw(
            "DROP TABLE schema_migrations; ALTER TABLE contacts DROP COLUMN bidx_key; PRAGMA user_version = 3"
            if backend.name == "sqlite"
            else "DROP TABLE sv_schema_migrations; ALTER TABLE sv_contacts DROP COLUMN bidx_key; "
            "DELETE FROM sv_schema WHERE version > 3"
        )
        before = store.schema_status()
        assert (before.current, [m.version for m in before.pending]) == (3, list(range(4, LATEST + 1)))
        assert [a.sha256 for a in before.applied] == [None, None, None]  # from before the history
        with pytest.raises(SchemaOutdated, match=r"schema version 3; this sendvault needs"):
            store.migrate(upgrade=False)
        assert store.schema_status().current == 3  # refused: nothing applied
        assert store.migrate() == list(range(4, LATEST + 1))
        after = store.schema_status()
    finally:
        store.close()
    assert (after.current, after.pending) == (LATEST, [])
    assert [a.version for a in after.applied] == list(range(1, LATEST + 1))
    assert after.applied[0].sha256 is None
    assert after.applied[3].sha256 == load(backend.name)[3].sha256


def test_a_newer_schema_is_refused_by_every_migrate(backend: Backend) -> None:
    store = backend.open()
    try:
        store.migrate()
        backend.raw(_version_sql(backend, LATEST + 1))
        for upgrade in (False, True):
            with pytest.raises(SchemaTooNew, match=rf"schema version {LATEST + 1}, newer than"):
                store.migrate(upgrade=upgrade)
        status = store.schema_status()
    finally:
        store.close()
    assert status.newer
    assert status.applied[-1].name == "unknown to this sendvault"


def test_a_changed_migration_file_is_reported(backend: Backend) -> None:
    store = backend.open()
    try:
        store.migrate()
        table = "schema_migrations" if backend.name == "sqlite" else "sv_schema_migrations"
        backend.raw(f"UPDATE {table} SET sha256 = 'x' WHERE version = 2")
        assert store.schema_status().changed == [2]
    finally:
        store.close()
