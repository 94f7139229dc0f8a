"""The PostgreSQL store, for any number of stateless sendvault replicas sharing one database.

Same contract and same test suite as the SQLite store. Batches use ``= ANY(array)`` and
``unnest`` so one query serves a whole batch; concurrent creators share transactions through
the same group-commit helpers. Schema changes are serialized with an advisory lock, so replicas
starting together migrate once.

Replicas creating the same new values race on the blind index's unique index: a transaction that
meets another's uncommitted row waits for it. Rows are therefore always inserted in one global
order (by blind index), so two transactions can never each wait on a row the other holds; a
deadlock or serialization failure that happens anyway (a statement we did not write, a standby
cancelling a query) runs the transaction again, a bounded number of times, before the caller
sees 503.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from prometheus_client import Counter

from .._pglink import alive, problem, scrubbed
from ..crypto.pairs import is_key_of
from ..errors import ConfigError, CryptoError, NotFound, StaleKeys, StoreError, StoreUnavailable
from ._group import ConnectionsBase
from .base import CLIENT_COLUMNS, ClientRecord, ContactRow, KeyRecord, NewContact, StoredKey, StoreFacts
from .migrations import (
    HISTORY_VERSION,
    AppliedMigration,
    Migration,
    SchemaStatus,
    check_upgrade,
    load,
    status_from,
)

try:
    import psycopg
except ImportError:  # pragma: no cover - exercised only without the extra
    psycopg = None  # type: ignore[assignment]

__all__ = ["PostgresStore", "TLSFiles"]

log = logging.getLogger("sendvault.store")
T = TypeVar("T")

# Any fixed 64-bit number: the advisory lock that serializes migrations across replicas.
_MIGRATION_LOCK = 0x5E_4D_56_41_55_4C_54
# Rows per bulk transaction: each holds only the row locks of its own new rows, so online
# callers wait only for the values they share with it.
_BULK_TX_ROWS = 40_000
_Conn = Any  # psycopg.Connection[tuple[Any, ...]]; Any keeps the extra optional for type checks
# deadlock_detected and serialization_failure (also what a hot standby answers when replay
# cancels a query): the transaction did nothing and may simply run again.
_RETRY_SQLSTATES = frozenset({"40P01", "40001"})
TX_ATTEMPTS = 5
RETRIES = Counter(
    "sendvault_store_retries",
    "PostgreSQL transactions run again after a deadlock (40P01) or serialization failure (40001).",
    ["sqlstate"],
)
FALLBACKS = Counter(
    "sendvault_store_standby_fallbacks",
    "Resolve reads sent to the primary instead of the standby (database_read_url): `not-replicated` "
    "(a token the standby does not have yet) or `standby-unavailable` (down or cannot answer).",
    ["reason"],
)


def _translate(exc: Exception) -> StoreError:
    if isinstance(exc, psycopg.OperationalError):
        # Connection-level failures: the server is down, restarting or unreachable. psycopg's
        # messages name hosts and states, never our bound values.
        return StoreUnavailable(f"postgres: {type(exc).__name__}")
    state = getattr(exc, "sqlstate", None) or ""
    return StoreError(f"postgres: {type(exc).__name__}: {state}")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        raise _translate(exc) from None


class PostgresStore(ConnectionsBase[Any]):
    """A :class:`~sendvault.store.base.Store` on a PostgreSQL database."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        connect_timeout: int = 5,
        read_url: str = "",
        tls: TLSFiles | None = None,
    ) -> None:
        if psycopg is None:
            raise ConfigError(
                "database_url", "PostgreSQL needs the postgres extra: pip install 'sendvault[postgres]'"
            )
        super().__init__()
        tls = tls or TLSFiles()
        self._url = url
        self._link = tls.check(url, "database_url")
        self._clock = clock
        self._connect_timeout = connect_timeout
        self._standby = (
            Standby(read_url, tls.check(read_url, "database_read_url"), self._identity) if read_url else None
        )

    _writer_name = "sendvault-postgres-writer"

    def _open_connection(self) -> _Conn:
        try:
            conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=self._connect_timeout, **self._link
            )
        except psycopg.OperationalError as exc:
            # A failed connect names the host, port and the server's reason (refused, no such
            # database, password authentication failed): what the operator needs, and no value.
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL: {_connect_reason(exc, self._url)}"
            ) from None
        except psycopg.Error as exc:
            raise StoreError(f"postgres: {type(exc).__name__}: {exc.sqlstate or ''}") from None
        # Insert-or-get reads, after waiting for a racer, the row the racer committed: that needs
        # READ COMMITTED whatever default the database was given.
        conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
        return conn

    def _close_connection(self, conn: _Conn) -> None:
        _close(conn)

    def _usable(self, conn: _Conn) -> bool:
        # Checked before every use of a kept connection: one cut by a restart is replaced
        # before it fails a call (see alive()).
        return alive(conn)

    def _read(self, query: Callable[[_Conn], T]) -> T:
        """``query`` on this thread's connection, translated; once more on a new connection
        when the kept one turns out to be broken (cut without a word, so the check before use
        passed it). Reads only: running one twice changes nothing."""
        conn = self._conn
        try:
            return query(conn)
        except psycopg.Error as exc:
            if not (isinstance(exc, psycopg.OperationalError) and conn.closed):
                raise _translate(exc) from None
        with _errors():
            return query(self._conn)

    @contextlib.contextmanager
    def _tx(self, conn: _Conn | None = None) -> Iterator[_Conn]:
        conn = conn or self._conn
        with _errors(), conn.transaction():
            yield conn

    def _retrying(self, work: Callable[[_Conn], T], conn: _Conn | None = None) -> T:
        """Run ``work`` in a transaction; run it again after a deadlock or serialization failure."""
        conn = conn or self._conn
        return retrying(lambda: _in_transaction(conn, work))

    def migrate(self, *, upgrade: bool = True) -> list[int]:
        """Apply pending migrations in one transaction, under an advisory lock (replicas starting
        together migrate once).

        An empty database is always set up; an older one only with ``upgrade`` (else
        :class:`~sendvault.errors.SchemaOutdated`), a newer one never
        (:class:`~sendvault.errors.SchemaTooNew`). Returns the versions applied.
        """
        migrations = load("postgres")
        applied: list[int] = []
        with self._tx() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS sv_schema (version INTEGER NOT NULL)")
            version = int(conn.execute("SELECT coalesce(max(version), 0) FROM sv_schema").fetchone()[0])
            check_upgrade("the PostgreSQL database", version, len(migrations), upgrade=upgrade)
            now = int(self._clock())
            unrecorded: list[Migration] = []
            for migration in migrations[version:]:
                conn.execute(migration.sql)
                conn.execute("INSERT INTO sv_schema (version) VALUES (%s)", (migration.version,))
                applied.append(migration.version)
                unrecorded.append(migration)
                if migration.version >= HISTORY_VERSION:
                    for m in unrecorded:
                        conn.execute(
                            "INSERT INTO sv_schema_migrations VALUES (%s, %s, %s, %s) ON CONFLICT (version) "
                            "DO UPDATE SET name = EXCLUDED.name, sha256 = EXCLUDED.sha256, "
                            "applied_at = EXCLUDED.applied_at",
                            (m.version, m.name, m.sha256, now),
                        )
                    unrecorded.clear()
        return applied

    def schema_status(self) -> SchemaStatus:
        """The schema version, its history and what is pending; reads only."""
        history: list[AppliedMigration] = []
        with self._tx() as conn:
            version = 0
            if conn.execute("SELECT to_regclass('sv_schema')").fetchone()[0] is not None:
                version = int(conn.execute("SELECT coalesce(max(version), 0) FROM sv_schema").fetchone()[0])
            if conn.execute("SELECT to_regclass('sv_schema_migrations')").fetchone()[0] is not None:
                history = [
                    AppliedMigration(int(v), str(n), s, None if a is None else int(a))
                    for v, n, s, a in conn.execute(
                        "SELECT version, name, sha256, applied_at FROM sv_schema_migrations ORDER BY version"
                    ).fetchall()
                ]
        return status_from("postgres", version, history)

    def get_meta(self, name: str) -> str | None:
        """A vault-wide setting recorded at creation, or None."""
        row = self._read(lambda c: c.execute("SELECT value FROM sv_meta WHERE name = %s", (name,)).fetchone())
        return None if row is None else str(row[0])

    def claim_meta(self, name: str, value: str) -> str:
        """Record ``value`` unless ``name`` is set; return what is recorded now."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO sv_meta (name, value) VALUES (%s, %s) ON CONFLICT DO NOTHING", (name, value)
            )
            return str(conn.execute("SELECT value FROM sv_meta WHERE name = %s", (name,)).fetchone()[0])

    def _load_keys(self, conn: _Conn) -> list[KeyRecord]:
        rows = conn.execute("SELECT id, purpose, provider, wrapped FROM sv_data_keys ORDER BY id").fetchall()
        return [KeyRecord(int(i), str(p), str(v), bytes(w)) for i, p, v, w in rows]

    def ensure_keys(self, make: Callable[[], Iterable[KeyRecord]]) -> list[KeyRecord]:
        """Return all keys; when there are none, store what ``make()`` returns, atomically."""
        keys = self._read(self._load_keys)
        if keys:
            return keys
        with self._tx() as conn:
            conn.execute("LOCK TABLE sv_data_keys IN EXCLUSIVE MODE")
            keys = self._load_keys(conn)
            if not keys:
                now = int(self._clock())
                for record in make():
                    conn.execute(
                        "INSERT INTO sv_data_keys (id, purpose, provider, wrapped, created_at) "
                        "VALUES (%s, %s, %s, %s, %s)",
                        (*record, now),
                    )
                keys = self._load_keys(conn)
        return keys

    def add_key(self, purpose: str, provider: str, wrap: Callable[[int], bytes]) -> int:
        """Store a new key; ``wrap`` receives the new id. Returns the id."""
        with self._tx() as conn:
            # EXCLUSIVE waits for every writer holding keys FOR SHARE (_require_keys) and holds
            # new ones back until this commits: a writer then sees the new key in its check.
            conn.execute("LOCK TABLE sv_data_keys IN EXCLUSIVE MODE")
            if purpose == "bidx":
                (indexes,) = conn.execute(
                    "SELECT count(*) FROM sv_data_keys WHERE purpose = 'bidx'"
                ).fetchone()
                if indexes > 1:
                    raise CryptoError(_INDEX_MOVE_RUNNING)
            (last,) = conn.execute("SELECT coalesce(max(id), 0) FROM sv_data_keys").fetchone()
            key_id = int(last) + 1
            conn.execute(
                "INSERT INTO sv_data_keys (id, purpose, provider, wrapped, created_at) "
                "VALUES (%s, %s, %s, %s, %s)",
                (key_id, purpose, provider, wrap(key_id), int(self._clock())),
            )
        return key_id

    def fetch_by_tokens(self, tokens: Sequence[str]) -> list[ContactRow]:
        """The rows of the given tokens that exist; one query."""
        rows = self._read(lambda c: c.execute(_SELECT_TOKENS, (list(tokens),)).fetchall())
        return [(t, int(k), _b(v), _b(a)) for t, k, v, a in rows]

    def fetch_for_resolve(self, tokens: Sequence[str]) -> list[ContactRow]:
        """:meth:`fetch_by_tokens` for resolve traffic: from the standby (``read_url``) when one
        is configured and answers, and from the primary for every token the standby does not
        have yet (or for all of them when the standby cannot answer)."""
        if self._standby is None:
            return self.fetch_by_tokens(tokens)
        rows = self._standby.fetch(tokens, self._connect_timeout)
        if rows is None:
            return self.fetch_by_tokens(tokens)
        if len(rows) < len(set(tokens)):
            found = {row[0] for row in rows}
            missing = [t for t in dict.fromkeys(tokens) if t not in found]
            FALLBACKS.labels("not-replicated").inc()
            rows += self.fetch_by_tokens(missing)
        return rows

    def _identity(self) -> bytes | None:
        """What tells this vault's database from any other: its wrapped blind-index key."""
        row = self._read(lambda c: c.execute(_IDENTITY).fetchone())
        return None if row is None else bytes(row[0])

    def check_standby(self) -> tuple[bool, str]:
        """Whether the standby (``read_url``) answers as a standby, and what it said; one
        connection, closed again. For start-up checks and ``config check``."""
        if self._standby is None:
            return False, "no database_read_url"
        return self._standby.check(self._connect_timeout)

    def close(self) -> None:
        """Close the primary's connections and the standby's."""
        super().close()
        if self._standby is not None:
            self._standby.close()

    def fetch_by_bidx(self, bidxs: Sequence[bytes]) -> dict[bytes, str]:
        """Blind index to token for those that exist; one query."""
        return self._read(lambda c: _fetch_by_bidx(c, bidxs))

    def _commit(self, conn: _Conn, rows: list[NewContact]) -> dict[bytes, str]:
        # One global order for every creator in every replica: by blind index (bytea compares as
        # bytes do in Python). A transaction then only ever waits for rows ahead of its own
        # position, so no two can wait on each other (see the module docstring).
        ordered = sorted(rows, key=lambda r: r.bidx)
        now = int(self._clock())

        def work(c: _Conn) -> dict[bytes, str]:
            _require_keys(c, [r.value_ct for r in ordered], ordered)
            alts = [r.alt_bidx for r in ordered if r.alt_bidx is not None]
            # During a blind-index move: a value held under the old index keeps its token. The
            # re-indexer may be moving that row now; this statement sees it either before or
            # after the move (one snapshot), and asks for both indexes.
            old = _fetch_by_bidx(c, alts) if alts else {}
            new = [r for r in ordered if r.alt_bidx not in old] if old else ordered
            if new:
                c.execute(
                    _INSERT_NEW,
                    (
                        now,
                        [r.token for r in new],
                        [r.kind for r in new],
                        [r.bidx for r in new],
                        [r.bidx_key for r in new],
                        [r.value_ct for r in new],
                    ),
                )
            found = _fetch_by_bidx(c, list({r.bidx for r in ordered}))
            for r in ordered:
                if r.alt_bidx is not None and r.alt_bidx in old:
                    found[r.bidx] = old[r.alt_bidx]
            return found

        return self._retrying(work, conn)

    def insert_bulk(self, rows: Sequence[NewContact]) -> dict[bytes, str]:
        """Insert-or-get a large batch: COPY into a staging table, then one INSERT ... SELECT in
        blind-index order, one transaction per 40,000 rows.

        COPY (binary) moves the rows in one stream instead of as bound arrays; the INSERT then
        takes the same global order as every other creator (see ``_commit``), so a bulk run and
        the replicas' Get Token calls never deadlock, and a deadlock or serialization failure
        runs the chunk again like any transaction here. The staging table is a temporary table
        of this connection, emptied at every commit or rollback.
        """
        if not rows:
            return {}
        ordered = sorted(rows, key=lambda r: r.bidx)
        now = int(self._clock())
        found: dict[bytes, str] = {}
        for start in range(0, len(ordered), _BULK_TX_ROWS):
            chunk = ordered[start : start + _BULK_TX_ROWS]
            found.update(self._retrying(functools.partial(_copy_chunk, rows=chunk, now=now)))
        return found

    def bulk_batch_rows(self) -> int:
        """Rows per bulk transaction (fixed: each holds only its own rows' locks)."""
        return _BULK_TX_ROWS

    def update_attrs_many(self, items: Sequence[tuple[str, bytes | None]]) -> int:
        """Replace the attribute ciphertexts of many live tokens in one transaction."""
        if not items:
            return 0
        with self._tx() as conn:
            _require_keys(conn, [a for _, a in items])
            cur = conn.execute(
                "UPDATE sv_contacts AS c SET attrs_ct = u.a FROM unnest(%s::text[], %s::bytea[]) AS u(t, a) "
                "WHERE c.token = u.t AND c.erased_at IS NULL",
                ([t for t, _ in items], [a for _, a in items]),
            )
            return int(cur.rowcount)

    def update_attrs(self, token: str, attrs_ct: bytes | None) -> bool:
        """Replace a live token's attribute ciphertext."""
        with self._tx() as conn:
            _require_keys(conn, [attrs_ct])
            cur = conn.execute(
                "UPDATE sv_contacts SET attrs_ct = %s WHERE token = %s AND erased_at IS NULL",
                (attrs_ct, token),
            )
            return bool(cur.rowcount == 1)

    def erase(self, token: str) -> bool:
        """Drop value, attributes and blind index; keep the tombstone."""
        with self._tx() as conn:
            cur = conn.execute(
                "UPDATE sv_contacts SET bidx = NULL, value_ct = NULL, attrs_ct = NULL, erased_at = %s "
                "WHERE token = %s AND erased_at IS NULL",
                (int(self._clock()), token),
            )
            return bool(cur.rowcount == 1)

    # -- key lifecycle ---------------------------------------------------------------------

    def load_keys(self) -> list[StoredKey]:
        """Every stored key, by id."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT id, purpose, provider, wrapped, created_at FROM sv_data_keys ORDER BY id"
            ).fetchall()
        )
        return [StoredKey(int(i), str(p), str(v), bytes(w), int(c)) for i, p, v, w, c in rows]

    def rewrap_keys(
        self, items: Sequence[tuple[int, bytes, str, bytes]], meta: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """Replace wrapped keys ``(id, old wrapped, provider, new wrapped)`` all at once.

        :class:`StaleKeys` (and nothing changed) if any key is no longer as it was read.
        """
        with self._tx() as conn:
            # As in add_key: wait for the writers holding keys FOR SHARE (_require_keys) and hold
            # new ones back. Updating the rows one by one instead deadlocked with a writer that
            # held a blind-index row and waited for a data-key row this transaction had already
            # updated (writers now also lock their key rows in one statement, in id order).
            conn.execute("LOCK TABLE sv_data_keys IN EXCLUSIVE MODE")
            for key_id, old, provider, new in items:
                cur = conn.execute(
                    "UPDATE sv_data_keys SET wrapped = %s, provider = %s WHERE id = %s AND wrapped = %s",
                    (new, provider, key_id, old),
                )
                if cur.rowcount != 1:
                    raise StaleKeys(f"key {key_id} changed while it was being rewrapped; run it again")
            for name, old_value, new_value in meta:
                cur = conn.execute(
                    "UPDATE sv_meta SET value = %s WHERE name = %s AND value = %s",
                    (new_value, name, old_value),
                )
                if cur.rowcount != 1:
                    raise StaleKeys(f"{name} changed while it was being rewrapped; run it again")

    def key_usage(self) -> dict[int, int]:
        """Live rows per data key id (a row counts once per key its value or attributes use)."""
        rows = self._read(lambda c: c.execute(_KEY_USAGE_SQL).fetchall())
        return {int.from_bytes(bytes(k), "big"): int(n) for k, n in rows if k is not None and len(k) == 4}

    def scan_stale(self, after: str, header: bytes, limit: int) -> list[ContactRow]:
        """Live rows after token ``after``, in token order, whose value or attributes are not
        sealed under ``header`` (version byte and key id): the next batch to re-encrypt."""
        with _errors():
            rows = self._conn.execute(
                "SELECT token, kind, value_ct, attrs_ct FROM sv_contacts WHERE token > %s "
                "AND value_ct IS NOT NULL AND (substring(value_ct from 1 for 5) <> %s "
                "OR (attrs_ct IS NOT NULL AND substring(attrs_ct from 1 for 5) <> %s)) "
                "ORDER BY token LIMIT %s",
                (after, header, header, limit),
            ).fetchall()
        return [(t, int(k), _b(v), _b(a)) for t, k, v, a in rows]

    def replace_ciphertexts(
        self, items: Sequence[tuple[str, bytes, bytes | None, bytes, bytes | None]], cursor: tuple[str, str]
    ) -> int:
        """Re-encrypted rows ``(token, old value, old attrs, new value, new attrs)``, each only
        if unchanged since it was read, and the meta ``cursor`` (name, value), in one transaction."""

        def work(conn: _Conn) -> int:
            _require_keys(conn, [ct for item in items for ct in item[3:]])
            cur = conn.execute(
                "UPDATE sv_contacts AS c SET value_ct = u.nv, attrs_ct = u.na "
                "FROM unnest(%s::text[], %s::bytea[], %s::bytea[], %s::bytea[], %s::bytea[]) "
                "AS u(t, ov, oa, nv, na) "
                "WHERE c.token = u.t AND c.value_ct = u.ov AND c.attrs_ct IS NOT DISTINCT FROM u.oa",
                (
                    [i[0] for i in items],
                    [i[1] for i in items],
                    [i[2] for i in items],
                    [i[3] for i in items],
                    [i[4] for i in items],
                ),
            )
            conn.execute(
                "INSERT INTO sv_meta (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                cursor,
            )
            return int(cur.rowcount)

        return self._retrying(work)

    def index_usage(self) -> dict[int, int]:
        """Live rows per blind-index key id."""
        with _errors():
            rows = self._conn.execute(
                "SELECT bidx_key, count(*) FROM sv_contacts WHERE bidx IS NOT NULL GROUP BY bidx_key"
            ).fetchall()
        return {int(k): int(n) for k, n in rows}

    def scan_unindexed(self, after: str, key_id: int, limit: int) -> list[tuple[str, int, bytes, bytes]]:
        """Live rows after ``after``, in token order, whose blind index is not under ``key_id``."""
        with _errors():
            rows = self._conn.execute(
                "SELECT token, kind, value_ct, bidx FROM sv_contacts WHERE token > %s "
                "AND bidx IS NOT NULL AND bidx_key <> %s ORDER BY token LIMIT %s",
                (after, key_id, limit),
            ).fetchall()
        return [(str(t), int(k), bytes(v), bytes(b)) for t, k, v, b in rows]

    def replace_indexes(
        self, items: Sequence[tuple[str, bytes, bytes]], key_id: int, cursor: tuple[str, str]
    ) -> int:
        """Re-indexed rows ``(token, old bidx, new bidx)`` under ``key_id``, each only if its index
        is unchanged since it was read, and the meta ``cursor``, in one transaction.

        The rows are updated in new-index order, the order every creator inserts in, so the
        re-indexer and a creator never wait on each other's rows in opposite orders."""
        ordered = sorted(items, key=lambda i: i[2])

        def work(conn: _Conn) -> int:
            ids = _index_keys(conn)
            if not ids or ids[-1] != key_id:
                raise StaleKeys()
            cur = conn.execute(
                "UPDATE sv_contacts AS c SET bidx = u.nb, bidx_key = %s "
                "FROM (SELECT * FROM unnest(%s::text[], %s::bytea[], %s::bytea[]) AS u(t, ob, nb) "
                "ORDER BY nb) AS u WHERE c.token = u.t AND c.bidx = u.ob",
                (key_id, [i[0] for i in ordered], [i[1] for i in ordered], [i[2] for i in ordered]),
            )
            conn.execute(
                "INSERT INTO sv_meta (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                cursor,
            )
            return int(cur.rowcount)

        return self._retrying(work)

    def set_meta(self, name: str, value: str | None) -> None:
        """Set (or with None delete) a vault-wide value."""
        with self._tx() as conn:
            if value is None:
                conn.execute("DELETE FROM sv_meta WHERE name = %s", (name,))
            else:
                conn.execute(
                    "INSERT INTO sv_meta (name, value) VALUES (%s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                    (name, value),
                )

    def retire_key(self, key_id: int) -> int:
        """Delete data key ``key_id`` if no live row uses it; else keep it. Returns the rows using it.

        The DELETE waits for every writer holding the key (``FOR SHARE`` in :func:`_require_keys`)
        to commit; the count after it sees their rows (READ COMMITTED reads what committed before
        each statement), and writers after it find the key gone and reload.
        """
        try:
            with self._tx() as conn:
                row = conn.execute("SELECT purpose FROM sv_data_keys WHERE id = %s", (key_id,)).fetchone()
                if row is None:
                    raise NotFound(f"no data key {key_id}")
                if row[0] == "bidx":
                    (newest,) = conn.execute(
                        "SELECT max(id) FROM sv_data_keys WHERE purpose = 'bidx'"
                    ).fetchone()
                    if key_id == newest:
                        raise CryptoError(
                            f"blind-index key {key_id} is the current one; "
                            "rotate first (sendvault keys rotate index)"
                        )
                    # Waits for every creator holding the index keys FOR SHARE; counts after it.
                    conn.execute("DELETE FROM sv_data_keys WHERE id = %s", (key_id,))
                    (used,) = conn.execute(
                        "SELECT count(*) FROM sv_contacts WHERE bidx IS NOT NULL AND bidx_key = %s", (key_id,)
                    ).fetchone()
                    if used:
                        raise _KeepKey(int(used))  # noqa: TRY301 - rolls the DELETE back
                    return 0
                (newest,) = conn.execute("SELECT max(id) FROM sv_data_keys WHERE purpose = 'data'").fetchone()
                if key_id == newest:
                    raise CryptoError(
                        f"data key {key_id} is the current key; rotate first (sendvault keys rotate dek)"
                    )
                conn.execute("DELETE FROM sv_data_keys WHERE id = %s", (key_id,))
                blob = key_id.to_bytes(4, "big")
                (used,) = conn.execute(_KEY_USERS_SQL, (blob, blob)).fetchone()
                if used:
                    raise _KeepKey(int(used))  # noqa: TRY301 - rolls the DELETE back
        except _KeepKey as keep:
            return keep.used
        return 0

    def purge_erased(self) -> None:
        """Nothing to do here: PostgreSQL's autovacuum reclaims dead row versions."""

    def put_client(self, record: ClientRecord) -> None:
        """Insert or replace an API client."""
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO sv_api_clients VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (client_id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash, "
                "scopes = EXCLUDED.scopes, allow_cidrs = EXCLUDED.allow_cidrs, "
                "tokenize_rate = EXCLUDED.tokenize_rate, rotated_at = EXCLUDED.rotated_at",
                tuple(record),
            )

    def get_client(self, client_id: str) -> ClientRecord | None:
        """One API client, or None."""
        row = self._read(
            lambda c: c.execute(f"{_CLIENT_SELECT} WHERE client_id = %s", (client_id,)).fetchone()
        )
        return None if row is None else _client(row)

    def list_clients(self) -> list[ClientRecord]:
        """Every API client, by id."""
        rows = self._read(lambda c: c.execute(f"{_CLIENT_SELECT} ORDER BY client_id").fetchall())
        return [_client(r) for r in rows]

    def delete_client(self, client_id: str) -> bool:
        """Remove an API client."""
        with self._tx() as conn:
            return bool(
                conn.execute("DELETE FROM sv_api_clients WHERE client_id = %s", (client_id,)).rowcount == 1
            )

    def count(self) -> int:
        """Number of live tokens."""
        (n,) = self._read(
            lambda c: c.execute("SELECT count(*) FROM sv_contacts WHERE erased_at IS NULL").fetchone()
        )
        return int(n)

    def ping(self) -> None:
        """Raise StoreUnavailable if the database cannot answer a trivial query."""
        self._read(lambda c: c.execute("SELECT 1").fetchall())

    def describe(self, *, counts: bool = False) -> StoreFacts:
        """Schema version, keys, metadata (and counts), read in one transaction; never migrates."""
        latest = len(load("postgres"))
        with self._tx() as conn:
            if conn.execute("SELECT to_regclass('sv_schema')").fetchone()[0] is None:
                return StoreFacts(0, latest, [], {})
            version = conn.execute("SELECT coalesce(max(version), 0) FROM sv_schema").fetchone()[0]
            keys = [
                StoredKey(int(i), str(p), str(v), bytes(w), int(c))
                for i, p, v, w, c in conn.execute(
                    "SELECT id, purpose, provider, wrapped, created_at FROM sv_data_keys ORDER BY id"
                ).fetchall()
            ]
            meta = {str(n): str(v) for n, v in conn.execute("SELECT name, value FROM sv_meta").fetchall()}
            live = erased = None
            if counts:
                live, erased = conn.execute(
                    "SELECT count(*) FILTER (WHERE erased_at IS NULL), "
                    "count(*) FILTER (WHERE erased_at IS NOT NULL) FROM sv_contacts"
                ).fetchone()
        return StoreFacts(int(version), latest, keys, meta, live, erased)


_IDENTITY = "SELECT wrapped FROM sv_data_keys WHERE purpose = 'bidx' ORDER BY id LIMIT 1"
_SELECT_TOKENS = "SELECT token, kind, value_ct, attrs_ct FROM sv_contacts WHERE token = ANY(%s)"
_CLIENT_SELECT = f"SELECT {CLIENT_COLUMNS} FROM sv_api_clients"  # noqa: S608 - constant column list
# ORDER BY keeps the caller's (sorted) order explicit: the executor inserts in the order the
# SELECT delivers rows.
_INSERT_NEW = (
    "INSERT INTO sv_contacts (token, kind, bidx, bidx_key, value_ct, created_at) "
    "SELECT t, k, b, bk, v, %s FROM unnest(%s::text[], %s::smallint[], %s::bytea[], %s::int[], %s::bytea[]) "
    "AS u(t, k, b, bk, v) ORDER BY b ON CONFLICT DO NOTHING"
)


_KEY_USAGE_SQL = (
    "SELECT k, count(*) FROM (SELECT substring(value_ct from 2 for 4) AS k FROM sv_contacts "
    "WHERE value_ct IS NOT NULL UNION ALL SELECT substring(attrs_ct from 2 for 4) FROM sv_contacts "
    "WHERE attrs_ct IS NOT NULL AND substring(attrs_ct from 2 for 4) <> substring(value_ct from 2 for 4)) "
    "AS u GROUP BY k"
)
_KEY_USERS_SQL = (
    "SELECT count(*) FROM sv_contacts WHERE value_ct IS NOT NULL "
    "AND (substring(value_ct from 2 for 4) = %s OR substring(attrs_ct from 2 for 4) = %s)"
)


class _KeepKey(Exception):
    def __init__(self, used: int) -> None:
        self.used = used


_INDEX_MOVE_RUNNING = (
    "a blind-index rotation is still moving rows; finish it first (sendvault keys reencrypt)"
)


def _require_keys(
    conn: _Conn, ciphertexts: Iterable[bytes | None], rows: Sequence[NewContact] | None = None
) -> None:
    """Refuse (:class:`StaleKeys`) ciphertexts sealed under a data key that no longer exists,
    and new ``rows`` whose blind indexes were not computed under exactly the vault's blind-index
    keys (the newest for ``bidx``; during a move, the old one for ``alt_bidx``).

    ``FOR SHARE`` holds the keys until this transaction ends: a concurrent ``keys retire`` waits
    for it, then counts its rows, and ``keys rotate index`` (``LOCK TABLE ... EXCLUSIVE`` in
    :meth:`PostgresStore.add_key`) waits for it, then holds new writers back until it commits.
    One statement locks every key row it needs in id order, the order ``keys rotate kek``
    updates them in (:meth:`PostgresStore.rewrap_keys`): the two never wait on each other in a
    cycle.
    """
    # Sealed values begin with the version byte 1 and the key id (crypto/keyring.py).
    ids = sorted(
        {
            int.from_bytes(ct[1:5], "big")
            for ct in ciphertexts
            if ct is not None and len(ct) > 5 and ct[0] == 1
        }
    )
    if not ids and rows is None:
        return
    found = conn.execute(
        "SELECT id, purpose FROM sv_data_keys WHERE (purpose = 'data' AND id = ANY(%s)) "
        "OR (%s AND purpose = 'bidx') ORDER BY id FOR SHARE",
        (ids, rows is not None),
    ).fetchall()
    if sum(1 for _, purpose in found if purpose == "data") != len(ids):
        raise StaleKeys()
    if rows is not None:
        _check_index([int(i) for i, purpose in found if purpose == "bidx"], rows)


def _index_keys(conn: _Conn) -> list[int]:
    rows = conn.execute("SELECT id FROM sv_data_keys WHERE purpose = 'bidx' ORDER BY id FOR SHARE").fetchall()
    return [int(i) for (i,) in rows]


def _check_index(ids: Sequence[int], rows: Sequence[NewContact]) -> None:
    if not ids:
        return  # a bare store without keys (tests): nothing to check against
    current, old = ids[-1], (ids[0] if len(ids) > 1 else None)
    for row in rows:
        if row.bidx_key != current or row.alt_key != old or (old is not None and row.alt_bidx is None):
            raise StaleKeys()


# The staging table's name carries its shape: a connection never meets an older shape of it.
_STAGE = (
    "CREATE TEMPORARY TABLE IF NOT EXISTS sv_bulk_stage5 "
    "(token TEXT, kind SMALLINT, bidx BYTEA, value_ct BYTEA, bidx_key INTEGER, alt_bidx BYTEA) "
    "ON COMMIT DELETE ROWS"
)
_STAGE_COPY = (
    "COPY sv_bulk_stage5 (token, kind, bidx, value_ct, bidx_key, alt_bidx) FROM STDIN (FORMAT BINARY)"
)
# ORDER BY: the executor inserts in the order the SELECT delivers rows (see _INSERT_NEW). A row
# whose value is held under the old blind index (during a move) is not inserted.
_STAGE_INSERT = (
    "INSERT INTO sv_contacts (token, kind, bidx, bidx_key, value_ct, created_at) "
    "SELECT token, kind, bidx, bidx_key, value_ct, %s FROM sv_bulk_stage5 s WHERE s.alt_bidx IS NULL "
    "OR NOT EXISTS (SELECT 1 FROM sv_contacts o WHERE o.bidx = s.alt_bidx) "
    "ORDER BY bidx ON CONFLICT DO NOTHING"
)
_STAGE_FOUND = "SELECT c.bidx, c.token FROM sv_bulk_stage5 s JOIN sv_contacts c ON c.bidx = s.bidx"
_STAGE_FOUND_OLD = "SELECT s.bidx, c.token FROM sv_bulk_stage5 s JOIN sv_contacts c ON c.bidx = s.alt_bidx"


def _copy_chunk(conn: _Conn, rows: Sequence[NewContact], now: int) -> dict[bytes, str]:
    """One bulk chunk, inside the caller's transaction: COPY, INSERT ... SELECT, read back."""
    _require_keys(conn, [row.value_ct for row in rows], rows)
    conn.execute(_STAGE)
    with conn.cursor() as cur:
        with cur.copy(_STAGE_COPY) as copy:
            copy.set_types(["text", "int2", "bytea", "bytea", "int4", "bytea"])
            for row in rows:
                copy.write_row(row[:6])
        cur.execute(_STAGE_INSERT, (now,))
        found = {bytes(b): str(t) for b, t in cur.execute(_STAGE_FOUND).fetchall()}
        if any(row.alt_bidx is not None for row in rows):
            # The older token wins: the value had it before the move began.
            found.update((bytes(b), str(t)) for b, t in cur.execute(_STAGE_FOUND_OLD).fetchall())
        return found


def _in_transaction(conn: _Conn, work: Callable[[_Conn], T]) -> T:
    with conn.transaction():
        return work(conn)


def retrying(attempt: Callable[[], T], *, attempts: int = TX_ATTEMPTS) -> T:
    """Call ``attempt`` (one whole transaction) until it does not fail with a deadlock or a
    serialization failure, at most ``attempts`` times; then :class:`StoreUnavailable`.

    Other database errors are translated as everywhere in this module. Waits between tries are
    short and jittered, so two transactions that collided do not collide again in step.
    """
    state = ""
    for number in range(1, attempts + 1):
        try:
            return attempt()
        except psycopg.Error as exc:
            if exc.sqlstate not in _RETRY_SQLSTATES:
                raise _translate(exc) from None
            state = exc.sqlstate
        RETRIES.labels(state).inc()
        log.info("postgres: transaction ended with SQLSTATE %s (try %d of %d)", state, number, attempts)
        if number < attempts:
            time.sleep(random.uniform(0, 0.002 * 2**number))  # noqa: S311 - jitter, not a secret
    raise StoreUnavailable(f"postgres: SQLSTATE {state} {attempts} times in a row")


class TLSFiles(NamedTuple):
    """The database link's TLS files from the settings; each may also be given in the URL."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def check(self, url: str, setting: str) -> dict[str, Any]:
        """The connection parameters these files add to ``url``, each file checked (exists,
        parses, key matches certificate, key not readable by others): a bad one stops start-up
        with one :class:`ConfigError` naming it, before any connection is tried."""
        wrong = problem(url) if url else None
        if wrong is not None:
            raise ConfigError(setting, wrong)
        given = psycopg.conninfo.conninfo_to_dict(url) if url else {}
        params: dict[str, Any] = {}
        files = (("sslrootcert", self.ca_file), ("sslcert", self.cert_file), ("sslkey", self.key_file))
        for param, value in files:
            if value is not None and param not in given:
                params[param] = value
        if self.ca_file is not None and "sslmode" not in given:
            params["sslmode"] = "verify-full"
        merged = {**given, **params}

        def origin(param: str, name: str) -> str:
            return setting if param in given else name

        ca, cert, key = merged.get("sslrootcert"), merged.get("sslcert"), merged.get("sslkey")
        if ca is not None and ca != "system":
            _load_certs(ca, origin("sslrootcert", "database_ssl_ca_file"))
        if cert is not None:
            chain = _load_certs(cert, origin("sslcert", "database_ssl_cert_file"))
            if key is None:
                raise ConfigError(setting, "names a client certificate (sslcert) but no key (sslkey)")
            _check_key(key, chain[0], origin("sslkey", "database_ssl_key_file"))
        elif key is not None:
            raise ConfigError(setting, "names a client key (sslkey) but no certificate (sslcert)")
        mode = merged.get("sslmode")
        if (cert is not None or ca is not None) and mode in ("disable", "allow", "prefer"):
            raise ConfigError(
                setting,
                f"sslmode={mode} would send the link in the clear when the server allows it",
                hint="use sslmode=verify-full (or leave sslmode out: the CA file implies it)",
            )
        return params


def _read_pem(path: str, setting: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(setting, f"cannot be read ({exc.strerror})") from None


def _load_certs(path: str, setting: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(_read_pem(path, setting))
    except ValueError:
        raise ConfigError(setting, "is not a PEM certificate file", allowed="a PEM file") from None
    return certs


def _check_key(path: str, cert: x509.Certificate, setting: str) -> None:
    data = _read_pem(path, setting)
    facts = Path(path).stat()
    if facts.st_mode & 0o077 and facts.st_uid == os.geteuid():
        # libpq refuses such a key with a message of its own; this says which setting and what to do.
        raise ConfigError(setting, "can be read by others", hint=f"chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise ConfigError(setting, "is not an unencrypted PEM private key") from None
    if not is_key_of(key, cert):
        raise ConfigError(setting, "is not the key of the client certificate")


class Standby:
    """Connections to a streaming standby, one per thread, for resolve reads.

    A standby that cannot be reached or cannot answer is left alone for a few seconds (reads go to
    the primary meanwhile), so an outage costs one failed connect per thread per pause, not one
    per request.
    """

    RETRY_SECONDS = 5.0

    def __init__(self, url: str, link: dict[str, Any], identity: Callable[[], bytes | None]) -> None:
        self._url = url
        self._link = link
        self._identity = identity
        self._verified = False
        self._local = threading.local()
        self._connections: list[_Conn] = []
        self._lock = threading.Lock()
        self._down_until = 0.0
        self._closed = False

    def _connection(self, timeout: int) -> _Conn | None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            if alive(conn):
                return conn
            # Cut while idle (the standby restarted): replaced now, not failed at its next read.
            _close(conn)
            self._local.conn = None
        if self._closed or time.monotonic() < self._down_until:
            return None
        try:
            conn = psycopg.connect(self._url, autocommit=True, connect_timeout=timeout, **self._link)
        except psycopg.Error as exc:
            self._failed(f"cannot connect: {_connect_reason(exc, self._url)}")
            return None
        problem = self._same_vault(conn)
        if problem is not None:
            _close(conn)
            self._failed(problem)
            return None
        with self._lock:
            self._connections = [c for c in self._connections if not c.closed]
            self._connections.append(conn)
        self._local.conn = conn
        if self._down_until:
            log.warning("postgres standby answers again; resolve reads go to it")
            self._down_until = 0.0
        return conn

    def _same_vault(self, conn: _Conn) -> str | None:
        """None when the standby holds this vault (checked once), else what is wrong: a
        read URL that names another database must never answer for this one."""
        if self._verified:
            return None
        try:
            row = conn.execute(_IDENTITY).fetchone()
        except psycopg.Error as exc:
            return f"query failed ({type(exc).__name__} {exc.sqlstate or ''})".replace(" )", ")")
        try:
            mine = self._identity()
        except StoreError:
            return None  # the primary cannot say (no schema yet, or down): checked again later
        if mine is None:
            return None  # no keys yet, so no tokens either: checked again on the next connection
        if row is None:
            return "does not have this vault's keys yet"
        if bytes(row[0]) != mine:
            return "is not a standby of database_url (it holds another vault's keys)"
        self._verified = True
        return None

    def _failed(self, why: str) -> None:
        if not self._down_until or time.monotonic() >= self._down_until:
            log.warning("postgres standby %s; resolve reads go to the primary for now", why)
        self._down_until = time.monotonic() + self.RETRY_SECONDS

    def fetch(self, tokens: Sequence[str], timeout: int) -> list[ContactRow] | None:
        """The rows the standby has, or None when it cannot answer now."""
        conn = self._connection(timeout)
        if conn is None:
            FALLBACKS.labels("standby-unavailable").inc()
            return None
        try:
            rows = conn.execute(_SELECT_TOKENS, (list(tokens),)).fetchall()
        except psycopg.Error as exc:
            # Down, restarted, or a query cancelled by replay (40001): the primary answers instead.
            _close(conn)
            self._local.conn = None
            self._failed(f"query failed ({type(exc).__name__} {exc.sqlstate or ''})".replace(" )", ")"))
            FALLBACKS.labels("standby-unavailable").inc()
            return None
        return [(t, int(k), _b(v), _b(a)) for t, k, v, a in rows]

    def check(self, timeout: int) -> tuple[bool, str]:
        try:
            with psycopg.connect(self._url, autocommit=True, connect_timeout=timeout, **self._link) as conn:
                row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
                problem = self._same_vault(conn)
        except psycopg.Error as exc:
            return False, f"cannot connect: {_connect_reason(exc, self._url)}"
        if not (row and row[0]):
            return False, "answers but is not a standby (pg_is_in_recovery() is false)"
        if problem is not None:
            return False, problem
        return True, "answers as a streaming standby"

    def close(self) -> None:
        self._closed = True
        with self._lock:
            for conn in self._connections:
                _close(conn)
            self._connections.clear()
        self._local = threading.local()


def _connect_reason(exc: Exception, url: str) -> str:
    """The useful part of libpq's connection error: its last line that says why, one line, with
    nothing of ``url``'s password (libpq quotes what it could not use, such as a host name cut
    from a password holding an unencoded ``@``)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reason = next((ln for ln in lines if "failed:" in ln), lines[0] if lines else type(exc).__name__)
    reason = reason.removeprefix("connection failed: ")
    return scrubbed(reason, url)[:300]


def _client(row: Any) -> ClientRecord:
    c, h, s, a, r, created, rotated = row
    return ClientRecord(str(c), str(h), str(s), str(a), float(r), int(created), int(rotated))


def _b(value: Any) -> bytes | None:
    return None if value is None else bytes(value)


def _close(conn: _Conn) -> None:
    with contextlib.suppress(Exception):
        conn.close()


def _fetch_by_bidx(conn: _Conn, bidxs: Sequence[bytes]) -> dict[bytes, str]:
    rows = conn.execute("SELECT bidx, token FROM sv_contacts WHERE bidx = ANY(%s)", (list(bidxs),)).fetchall()
    return {bytes(b): str(t) for b, t in rows}
