"""The embedded SQLite store: WAL, one query per batch, grouped commits for new tokens.

Reads use one connection per thread. New tokens go through one writer thread per process that
drains every pending request into a single transaction, so concurrent creators share a commit
instead of queueing for SQLite's write lock one by one. Across processes (``--workers``), the
write lock and ``busy_timeout`` serialize those grouped transactions.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import msgspec

from ..errors import CryptoError, NotFound, StaleKeys, StoreError, StoreUnavailable
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

_CLIENT_SELECT = f"SELECT {CLIENT_COLUMNS} FROM api_clients"  # noqa: S608 - constant column list

__all__ = ["SQLiteStore"]

log = logging.getLogger("sendvault.store")

# SQLite's default limit on bound parameters is 32766; stay well under it per statement.
_MAX_PARAMS = 10_000
# Rows in the first transaction of a bulk insert; later ones are sized from the time the last took,
# so each holds the write lock for about ``bulk_lock_seconds`` (an online Get Token waiting for the
# lock, busy_timeout, is delayed about that long; with the default busy timeout, never refused; a
# short one with two bulk jobs at once can be outrun, docs/exchange.md). Larger transactions are what
# make bulk inserts fast: new rows land on random pages of two B-trees (token and blind index), and
# a transaction writes each page it dirtied once, so the pages written per row fall as it grows.
_BULK_FIRST_ROWS = 5_000
_BULK_MIN_ROWS = 1_000
_BULK_MAX_ROWS = 250_000
# The write lock is left free this long between bulk transactions: longer than a waiting writer
# sleeps between its tries (the server's batcher 50 ms, SQLite's busy handler 100 ms), so one
# waiting behind a bulk transaction gets the lock next instead of behind a chain of them.
_BULK_YIELD_SECONDS = 0.12
# Page cache of the bulk connection: a transaction's dirty pages stay in memory until its commit
# writes each once, instead of spilling (and writing again) as the default 32 MiB cache would.
_BULK_CACHE_KIB = 256 * 1024


def _translate(exc: sqlite3.Error) -> StoreError:
    # SQLite messages name tables and constraints, never bound values, so they are safe to keep.
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return StoreUnavailable(f"sqlite: {text}", busy=True)
    if isinstance(exc, sqlite3.OperationalError) and ("unable to open" in text or "disk I/O" in text):
        return StoreUnavailable(f"sqlite: {text}")
    return StoreError(f"sqlite: {text}")


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise _translate(exc) from None


class SQLiteStore(ConnectionsBase[sqlite3.Connection]):
    """A :class:`~sendvault.store.base.Store` on one SQLite file."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_ms: int = 10_000,
        mmap_mb: int = 1024,
        checkpoint_soft_bytes: int = 40 << 20,
        checkpoint_hard_bytes: int = 400 << 20,
        bulk_lock_seconds: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self._path = path
        self._mmap_bytes = mmap_mb * 1024 * 1024
        self._busy_timeout_ms = busy_timeout_ms
        self._clock = clock
        self._commit_conns: set[sqlite3.Connection] = set()
        self._checkpointer: _Checkpointer | None = None
        self._checkpoint_bytes = (checkpoint_soft_bytes, checkpoint_hard_bytes)
        self._bulk_conn: sqlite3.Connection | None = None
        self._bulk_lock = threading.Lock()
        # A quarter of the busy timeout at most: a writer waiting behind a bulk transaction (or
        # one of each of two bulk jobs, a transaction overrunning its estimate) never gives up.
        # Settings.bulk_lock_warning tells the user where this holds their setting back.
        self._bulk_seconds = min(bulk_lock_seconds, busy_timeout_ms / 4000)
        self._bulk_rows = _BULK_FIRST_ROWS
        self._bulk_per_row = 0.0  # seconds of write lock per row, smoothed over transactions
        self._bulk_done = 0.0  # when the last bulk transaction ended (time.monotonic)

    # -- connections -----------------------------------------------------------------------

    _writer_name = "sendvault-sqlite-writer"

    def _open_connection(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(
                self._path,
                isolation_level=None,
                check_same_thread=False,
                timeout=self._busy_timeout_ms / 1000,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
            # NORMAL in WAL mode is durable across application crashes; a power cut can lose the
            # last commits but never corrupts the database. OFF is never used.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            # Erased ciphertexts are overwritten on disk rather than left in free pages.
            conn.execute("PRAGMA secure_delete = ON")
            # New tokens land on random B-tree pages; checkpointing every 10,000 pages instead of
            # 1,000 lets pages dirtied by many commits be written back to the database once. A
            # process that creates tokens moves its checkpoints to a thread (_Checkpointer).
            conn.execute("PRAGMA wal_autocheckpoint = 10000")
            # Once checkpointed, a WAL that grew under a burst shrinks back to 64 MiB.
            conn.execute("PRAGMA journal_size_limit = 67108864")
            conn.execute("PRAGMA cache_size = -32768")
            # Memory-mapped reads skip a read() syscall per page on the resolve path; the map is
            # shared through the OS page cache by every connection.
            conn.execute(f"PRAGMA mmap_size = {int(self._mmap_bytes)}")
            conn.execute("PRAGMA temp_store = MEMORY")
        except sqlite3.Error as exc:
            raise _translate(exc) from None
        return conn

    def _close_connection(self, conn: sqlite3.Connection) -> None:
        with contextlib.suppress(sqlite3.Error):
            conn.close()

    @contextlib.contextmanager
    def _write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        conn = conn or self._conn
        with _errors():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    # -- schema and metadata ---------------------------------------------------------------

    def migrate(self, *, upgrade: bool = True) -> list[int]:
        """Create the file (0600), switch to WAL, apply pending migrations in one transaction.

        An empty database is always set up; an older one only with ``upgrade`` (else
        :class:`~sendvault.errors.SchemaOutdated`), a newer one never
        (:class:`~sendvault.errors.SchemaTooNew`). Returns the versions applied.
        """
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not self._path.exists():
            with contextlib.suppress(FileExistsError):
                self._path.touch(mode=0o600, exist_ok=False)
        conn = self._conn
        with _errors():
            conn.execute("PRAGMA journal_mode = WAL")
        migrations = load("sqlite")
        unrecorded: list[Migration] = []
        applied: list[int] = []
        with self._write(conn):
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            check_upgrade(str(self._path), version, len(migrations), upgrade=upgrade)
            now = int(self._clock())
            for migration in migrations[version:]:
                for statement in migration.sql.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {migration.version}")
                applied.append(migration.version)
                unrecorded.append(migration)
                if migration.version >= HISTORY_VERSION:
                    conn.executemany(
                        "INSERT OR REPLACE INTO schema_migrations VALUES (?, ?, ?, ?)",
                        [(m.version, m.name, m.sha256, now) for m in unrecorded],
                    )
                    unrecorded.clear()
        return applied

    def schema_status(self) -> SchemaStatus:
        """The schema version, its history and what is pending; reads only."""
        with _errors():
            conn = self._conn
            conn.execute("BEGIN")
            try:
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                history: list[AppliedMigration] = []
                if conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
                ).fetchone():
                    history = [
                        AppliedMigration(int(v), str(n), s, a)
                        for v, n, s, a in conn.execute(
                            "SELECT version, name, sha256, applied_at FROM schema_migrations ORDER BY version"
                        )
                    ]
            finally:
                conn.execute("COMMIT")
        return status_from("sqlite", int(version), history)

    def get_meta(self, name: str) -> str | None:
        """A vault-wide setting recorded at creation, or None."""
        with _errors():
            row = self._conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def claim_meta(self, name: str, value: str) -> str:
        """Record ``value`` unless ``name`` is set; return what is recorded now."""
        with self._write() as conn:
            conn.execute("INSERT INTO meta (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (name, value))
            return str(conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()[0])

    def _load_keys(self, conn: sqlite3.Connection) -> list[KeyRecord]:
        rows = conn.execute("SELECT id, purpose, provider, wrapped FROM data_keys ORDER BY id").fetchall()
        return [KeyRecord(int(i), str(p), str(v), bytes(w)) for i, p, v, w in rows]

    def ensure_keys(self, make: Callable[[], Iterable[KeyRecord]]) -> list[KeyRecord]:
        """Return all keys; when there are none, store what ``make()`` returns, atomically."""
        with _errors():
            keys = self._load_keys(self._conn)
        if keys:
            return keys
        with self._write() as conn:
            keys = self._load_keys(conn)
            if not keys:
                now = int(self._clock())
                for record in make():
                    conn.execute(
                        "INSERT INTO data_keys (id, purpose, provider, wrapped, created_at) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (*record, now),
                    )
                keys = self._load_keys(conn)
        return keys

    def add_key(self, purpose: str, provider: str, wrap: Callable[[int], bytes]) -> int:
        """Store a new key; ``wrap`` receives the new id. Returns the id."""
        with self._write() as conn:
            if purpose == "bidx":
                (indexes,) = conn.execute("SELECT count(*) FROM data_keys WHERE purpose = 'bidx'").fetchone()
                if indexes > 1:
                    raise CryptoError(_INDEX_MOVE_RUNNING)
            (last,) = conn.execute("SELECT coalesce(max(id), 0) FROM data_keys").fetchone()
            key_id = int(last) + 1
            conn.execute(
                "INSERT INTO data_keys (id, purpose, provider, wrapped, created_at) VALUES (?, ?, ?, ?, ?)",
                (key_id, purpose, provider, wrap(key_id), int(self._clock())),
            )
        return key_id

    # -- the hot path ----------------------------------------------------------------------

    def fetch_by_tokens(self, tokens: Sequence[str]) -> list[ContactRow]:
        """The rows of the given tokens that exist; one query per 10,000 tokens."""
        out: list[ContactRow] = []
        conn = self._conn
        with _errors():
            for start in range(0, len(tokens), _MAX_PARAMS):  # one query below 10,000 tokens
                chunk = tokens[start : start + _MAX_PARAMS]
                # Only placeholders are interpolated; values are bound parameters.
                sql = (
                    "SELECT token, kind, value_ct, attrs_ct FROM contacts WHERE token IN ("  # noqa: S608
                    + ",".join("?" * len(chunk))
                    + ")"
                )
                out.extend(conn.execute(sql, chunk).fetchall())
        return out

    def fetch_for_resolve(self, tokens: Sequence[str]) -> list[ContactRow]:
        """Resolve reads: the same as :meth:`fetch_by_tokens` (SQLite has no standby)."""
        return self.fetch_by_tokens(tokens)

    def fetch_by_bidx(self, bidxs: Sequence[bytes]) -> dict[bytes, str]:
        """Blind index to token for those that exist; one query per 10,000 indexes."""
        return _fetch_by_bidx(self._conn, bidxs)

    def _commit(self, conn: sqlite3.Connection, rows: list[NewContact]) -> dict[bytes, str]:
        if conn not in self._commit_conns:
            # Group commits no longer checkpoint inline: this process's checkpointer does it.
            with _errors():
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._commit_conns.add(conn)
            self._start_checkpointer()
        return _commit_group(conn, rows, int(self._clock()))

    def insert_bulk(self, rows: Sequence[NewContact]) -> dict[bytes, str]:
        """Insert-or-get a large batch in token order, in transactions sized to hold the write
        lock about ``bulk_lock_seconds`` each.

        Sorting puts consecutive rows on neighbouring pages of the table's B-tree, and a large
        page cache lets each page a transaction dirties be written once at its commit. Rows are
        bound with executemany: for one-row statements SQLite's per-row cost is lower than for
        the multi-row VALUES lists the group commit uses (measured: 157k vs 85k rows/s).
        """
        if not rows:
            return {}
        ordered = sorted(rows, key=_token_of)
        found: dict[bytes, str] = {}
        now = int(self._clock())
        with self._bulk_lock:
            conn = self._bulk_connection()
            start = 0
            while start < len(ordered):
                # Equal transactions of about the current size: no small one left at the end.
                left = len(ordered) - start
                parts = -(-left // self._bulk_rows)
                size = -(-left // parts)
                chunk = ordered[start : start + size]
                time.sleep(max(0.0, self._bulk_done + _BULK_YIELD_SECONDS - time.monotonic()))
                try:
                    got, held = _commit_bulk(conn, chunk, now)
                finally:
                    self._bulk_done = time.monotonic()
                found.update(got)
                start += size
                if size >= self._bulk_rows // 2:  # a large transaction: size the next from its time
                    self._bulk_per_row = _smoothed(self._bulk_per_row, held / size)
                    self._bulk_rows = _bulk_size(self._bulk_seconds / self._bulk_per_row)
        return found

    def bulk_batch_rows(self) -> int:
        """The size of the next bulk transaction, once a large one has been timed; else 0."""
        return self._bulk_rows if self._bulk_per_row else 0

    def _bulk_connection(self) -> sqlite3.Connection:
        if self._bulk_conn is None:
            if self._closed:
                raise StoreUnavailable("store is closed")
            conn = self._connect()
            with _errors():
                conn.execute(f"PRAGMA cache_size = -{_BULK_CACHE_KIB}")
                conn.execute("PRAGMA wal_autocheckpoint = 0")
            self._bulk_conn = conn
            self._start_checkpointer()
        return self._bulk_conn

    def update_attrs_many(self, items: Sequence[tuple[str, bytes | None]]) -> int:
        """Replace the attribute ciphertexts of many live tokens in one transaction."""
        if not items:
            return 0
        with self._write() as conn:
            _require_keys(conn, [a for _, a in items])
            before = conn.total_changes
            conn.executemany(
                "UPDATE contacts SET attrs_ct = ? WHERE token = ? AND erased_at IS NULL",
                [(attrs, token) for token, attrs in items],
            )
            return conn.total_changes - before

    def _loop_connection(self) -> tuple[sqlite3.Connection, float]:
        # On an event loop a held write lock is reported at once and the group retried later
        # (see LoopBatcher): waiting inside SQLite would stall every request on the loop.
        conn = self._connect()
        with _errors():
            conn.execute("PRAGMA busy_timeout = 0")
        return conn, self._busy_timeout_ms / 1000

    def _start_checkpointer(self) -> None:
        with self._conn_lock:
            if self._checkpointer is None and not self._closed:
                soft, hard = self._checkpoint_bytes
                self._checkpointer = _Checkpointer(
                    self._open_connection,
                    self._close_connection,
                    Path(f"{self._path}-wal"),
                    soft_bytes=soft,
                    hard_bytes=hard,
                )

    def close(self) -> None:
        """Stop the checkpointer and the writer; close every connection this store opened."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
            self._checkpointer = None
        with self._bulk_lock:
            self._bulk_conn = None  # closed with every other connection below
        super().close()

    # -- single-token changes --------------------------------------------------------------

    def update_attrs(self, token: str, attrs_ct: bytes | None) -> bool:
        """Replace a live token's attribute ciphertext."""
        with self._write() as conn:
            _require_keys(conn, [attrs_ct])
            cur = conn.execute(
                "UPDATE contacts SET attrs_ct = ? WHERE token = ? AND erased_at IS NULL", (attrs_ct, token)
            )
            return cur.rowcount == 1

    def erase(self, token: str) -> bool:
        """Drop value, attributes and blind index; keep the tombstone."""
        with self._write() as conn:
            cur = conn.execute(
                "UPDATE contacts SET bidx = NULL, value_ct = NULL, attrs_ct = NULL, erased_at = ? "
                "WHERE token = ? AND erased_at IS NULL",
                (int(self._clock()), token),
            )
            return cur.rowcount == 1

    # -- key lifecycle ---------------------------------------------------------------------

    def load_keys(self) -> list[StoredKey]:
        """Every stored key, by id."""
        with _errors():
            return [
                StoredKey(int(i), str(p), str(v), bytes(w), int(c))
                for i, p, v, w, c in self._conn.execute(
                    "SELECT id, purpose, provider, wrapped, created_at FROM data_keys ORDER BY id"
                )
            ]

    def rewrap_keys(
        self, items: Sequence[tuple[int, bytes, str, bytes]], meta: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """Replace wrapped keys ``(id, old wrapped, provider, new wrapped)`` all at once.

        :class:`StaleKeys` (and nothing changed) if any key is no longer as it was read.
        """
        with self._write() as conn:
            for key_id, old, provider, new in items:
                cur = conn.execute(
                    "UPDATE data_keys SET wrapped = ?, provider = ? WHERE id = ? AND wrapped = ?",
                    (new, provider, key_id, old),
                )
                if cur.rowcount != 1:
                    raise StaleKeys(f"key {key_id} changed while it was being rewrapped; run it again")
            for name, old_value, new_value in meta:
                cur = conn.execute(
                    "UPDATE meta SET value = ? WHERE name = ? AND value = ?", (new_value, name, old_value)
                )
                if cur.rowcount != 1:
                    raise StaleKeys(f"{name} changed while it was being rewrapped; run it again")

    def key_usage(self) -> dict[int, int]:
        """Live rows per data key id (a row counts once per key its value or attributes use)."""
        with _errors():
            rows = self._conn.execute(_KEY_USAGE_SQL).fetchall()
        return {int.from_bytes(k, "big"): int(n) for k, n in rows if k is not None and len(k) == 4}

    def scan_stale(self, after: str, header: bytes, limit: int) -> list[ContactRow]:
        """Live rows after token ``after``, in token order, whose value or attributes are not
        sealed under ``header`` (version byte and key id): the next batch to re-encrypt."""
        with _errors():
            return self._conn.execute(
                "SELECT token, kind, value_ct, attrs_ct FROM contacts "
                "WHERE token > ? AND value_ct IS NOT NULL AND (substr(value_ct, 1, 5) != ? "
                "OR (attrs_ct IS NOT NULL AND substr(attrs_ct, 1, 5) != ?)) "
                "ORDER BY token LIMIT ?",
                (after, header, header, limit),
            ).fetchall()

    def replace_ciphertexts(
        self, items: Sequence[tuple[str, bytes, bytes | None, bytes, bytes | None]], cursor: tuple[str, str]
    ) -> int:
        """Re-encrypted rows ``(token, old value, old attrs, new value, new attrs)``, each only
        if unchanged since it was read, and the meta ``cursor`` (name, value), in one transaction."""
        with self._write() as conn:
            _require_keys(conn, [ct for item in items for ct in item[3:]])
            before = conn.total_changes
            conn.executemany(
                "UPDATE contacts SET value_ct = ?, attrs_ct = ? "
                "WHERE token = ? AND value_ct = ? AND attrs_ct IS ?",
                [(nv, na, t, ov, oa) for t, ov, oa, nv, na in items],
            )
            changed = conn.total_changes - before
            conn.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                cursor,
            )
        # Re-encryption rewrites the whole table: a checkpoint after each batch keeps the WAL
        # short (every reader looks each page up in it) and puts the pages back into the file
        # the readers map into memory. PASSIVE never waits for a reader or a writer.
        with _errors():
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return changed

    def index_usage(self) -> dict[int, int]:
        """Live rows per blind-index key id."""
        with _errors():
            rows = self._conn.execute(
                "SELECT bidx_key, count(*) FROM contacts WHERE bidx IS NOT NULL GROUP BY bidx_key"
            ).fetchall()
        return {int(k): int(n) for k, n in rows}

    def scan_unindexed(self, after: str, key_id: int, limit: int) -> list[tuple[str, int, bytes, bytes]]:
        """Live rows after ``after``, in token order, whose blind index is not under ``key_id``."""
        with _errors():
            return self._conn.execute(
                "SELECT token, kind, value_ct, bidx FROM contacts WHERE token > ? AND bidx IS NOT NULL "
                "AND bidx_key != ? ORDER BY token LIMIT ?",
                (after, key_id, limit),
            ).fetchall()

    def replace_indexes(
        self, items: Sequence[tuple[str, bytes, bytes]], key_id: int, cursor: tuple[str, str]
    ) -> int:
        """Re-indexed rows ``(token, old bidx, new bidx)`` under ``key_id``, each only if its index
        is unchanged since it was read, and the meta ``cursor``, in one transaction."""
        with self._write() as conn:
            ids = _index_keys(conn)
            if not ids or ids[-1] != key_id:
                raise StaleKeys()
            before = conn.total_changes
            conn.executemany(
                "UPDATE contacts SET bidx = ?, bidx_key = ? WHERE token = ? AND bidx = ?",
                [(new, key_id, token, old) for token, old, new in items],
            )
            changed = conn.total_changes - before
            conn.execute(
                "INSERT INTO meta (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                cursor,
            )
        with _errors():
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        return changed

    def set_meta(self, name: str, value: str | None) -> None:
        """Set (or with None delete) a vault-wide value."""
        with self._write() as conn:
            if value is None:
                conn.execute("DELETE FROM meta WHERE name = ?", (name,))
            else:
                conn.execute(
                    "INSERT INTO meta (name, value) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (name, value),
                )

    def retire_key(self, key_id: int) -> int:
        """Delete data key ``key_id`` if no live row uses it; else keep it. Returns the rows using it.

        The deletion and the count are one transaction, and every write of a ciphertext checks
        in its own transaction that its key still exists, so no row can be sealed under a key
        between the count and the deletion.
        """
        with self._write() as conn:
            row = conn.execute("SELECT purpose FROM data_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                raise NotFound(f"no data key {key_id}")
            if row[0] == "bidx":
                ids = _index_keys(conn)
                if key_id == ids[-1]:
                    raise CryptoError(
                        f"blind-index key {key_id} is the current one; "
                        "rotate first (sendvault keys rotate index)"
                    )
                (used,) = conn.execute(
                    "SELECT count(*) FROM contacts WHERE bidx IS NOT NULL AND bidx_key = ?", (key_id,)
                ).fetchone()
                if used == 0:
                    conn.execute("DELETE FROM data_keys WHERE id = ?", (key_id,))
                return int(used)
            (newest,) = conn.execute("SELECT max(id) FROM data_keys WHERE purpose = 'data'").fetchone()
            if key_id == newest:
                raise CryptoError(
                    f"data key {key_id} is the current key; rotate first (sendvault keys rotate dek)"
                )
            (used,) = conn.execute(_KEY_USERS_SQL, (_key_id_blob(key_id),) * 2).fetchone()
            if used == 0:
                conn.execute("DELETE FROM data_keys WHERE id = ?", (key_id,))
            return int(used)

    def backup(self, target: Path, progress: Callable[[int, int], None] | None = None) -> None:
        """A consistent copy of the database at ``target`` (SQLite's online backup API).

        Runs while the vault serves: pages are copied in steps, and SQLite restarts the copy of
        pages a writer changes meanwhile, so the copy is one committed state of the database.
        """
        with _errors():
            dest = sqlite3.connect(target)
            try:
                self._connect().backup(
                    dest,
                    pages=4096,
                    progress=None
                    if progress is None
                    else lambda _s, left, total: progress(total - left, total),
                )
                dest.execute("PRAGMA journal_mode = DELETE")
            finally:
                dest.close()

    def purge_erased(self) -> None:
        """Checkpoint the WAL into the database and truncate it: the old page images that held
        erased values go with it (``secure_delete`` already zeroes them in the database)."""
        with _errors():
            conn = self._conn
            for _ in range(50):
                busy, _log, _done = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                if not busy:
                    return
                time.sleep(0.1)
        log.warning("sqlite: the WAL could not be truncated after erasure (readers kept it busy)")

    # -- API clients -----------------------------------------------------------------------

    def put_client(self, record: ClientRecord) -> None:
        """Insert or replace an API client."""
        with self._write() as conn:
            conn.execute("INSERT OR REPLACE INTO api_clients VALUES (?, ?, ?, ?, ?, ?, ?)", tuple(record))

    def get_client(self, client_id: str) -> ClientRecord | None:
        """One API client, or None."""
        with _errors():
            row = self._conn.execute(f"{_CLIENT_SELECT} WHERE client_id = ?", (client_id,)).fetchone()
        return None if row is None else ClientRecord._make(row)

    def list_clients(self) -> list[ClientRecord]:
        """Every API client, by id."""
        with _errors():
            rows = self._conn.execute(f"{_CLIENT_SELECT} ORDER BY client_id").fetchall()
        return [ClientRecord._make(r) for r in rows]

    def delete_client(self, client_id: str) -> bool:
        """Remove an API client."""
        with self._write() as conn:
            return conn.execute("DELETE FROM api_clients WHERE client_id = ?", (client_id,)).rowcount == 1

    def count(self) -> int:
        """Number of live tokens."""
        with _errors():
            (n,) = self._conn.execute("SELECT count(*) FROM contacts WHERE erased_at IS NULL").fetchone()
        return int(n)

    def ping(self) -> None:
        """Raise StoreUnavailable if the database cannot answer a trivial query."""
        with _errors():
            self._conn.execute("SELECT 1 FROM meta LIMIT 1").fetchall()

    def describe(self, *, counts: bool = False) -> StoreFacts:
        """Schema version, keys, metadata (and counts), read in one snapshot; never migrates."""
        latest = len(load("sqlite"))
        with _errors():
            conn = self._conn
            conn.execute("BEGIN")
            try:
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                if not version:
                    return StoreFacts(0, latest, [], {})
                keys = [
                    StoredKey(int(i), str(p), str(v), bytes(w), int(c))
                    for i, p, v, w, c in conn.execute(
                        "SELECT id, purpose, provider, wrapped, created_at FROM data_keys ORDER BY id"
                    )
                ]
                meta = {str(n): str(v) for n, v in conn.execute("SELECT name, value FROM meta")}
                live = erased = None
                if counts:
                    live, erased = conn.execute(
                        "SELECT count(*) FILTER (WHERE erased_at IS NULL), "
                        "count(*) FILTER (WHERE erased_at IS NOT NULL) FROM contacts"
                    ).fetchone()
            finally:
                conn.execute("COMMIT")
        return StoreFacts(int(version), latest, keys, meta, live, erased)


_KEY_USAGE_SQL = (
    "SELECT k, count(*) FROM (SELECT substr(value_ct, 2, 4) AS k FROM contacts WHERE value_ct IS NOT NULL "
    "UNION ALL SELECT substr(attrs_ct, 2, 4) FROM contacts WHERE attrs_ct IS NOT NULL "
    "AND substr(attrs_ct, 2, 4) != substr(value_ct, 2, 4)) GROUP BY k"
)
_KEY_USERS_SQL = (
    "SELECT count(*) FROM contacts WHERE value_ct IS NOT NULL "
    "AND (substr(value_ct, 2, 4) = ? OR substr(attrs_ct, 2, 4) = ?)"
)


def _key_id_blob(key_id: int) -> bytes:
    return key_id.to_bytes(4, "big")


def _require_keys(conn: sqlite3.Connection, ciphertexts: Iterable[bytes | None]) -> None:
    """Refuse (:class:`StaleKeys`) ciphertexts sealed under a data key that no longer exists.

    Inside the writing transaction: a process that has not yet seen ``keys retire`` cannot seal
    rows under the retired key after the retirement counted its rows.
    """
    # Sealed values begin with the version byte 1 and the key id (crypto/keyring.py).
    ids = {ct[1:5] for ct in ciphertexts if ct is not None and len(ct) > 5 and ct[0] == 1}
    if not ids:
        return
    # Only placeholders are interpolated; values are bound parameters.
    sql = (
        "SELECT count(*) FROM data_keys WHERE purpose = 'data' AND id IN ("  # noqa: S608
        + ",".join("?" * len(ids))
        + ")"
    )
    (found,) = conn.execute(sql, [int.from_bytes(i, "big") for i in ids]).fetchone()
    if found != len(ids):
        raise StaleKeys()


_INDEX_MOVE_RUNNING = (
    "a blind-index rotation is still moving rows; finish it first (sendvault keys reencrypt)"
)


def _index_keys(conn: sqlite3.Connection) -> list[int]:
    return [int(i) for (i,) in conn.execute("SELECT id FROM data_keys WHERE purpose = 'bidx' ORDER BY id")]


def _require_index(conn: sqlite3.Connection, rows: Sequence[NewContact]) -> None:
    """Refuse (:class:`StaleKeys`) rows whose blind indexes were not computed under exactly the
    vault's blind-index keys: the newest for ``bidx``, and during a move the old one for
    ``alt_bidx``. Inside the writing transaction, so a rotation or retirement of the index key
    cannot slip between the check and the insert."""
    ids = _index_keys(conn)
    if not ids:
        return  # a bare store without keys (tests): nothing to check against
    current, old = ids[-1], (ids[0] if len(ids) > 1 else None)
    for row in rows:
        if row.bidx_key != current or row.alt_key != old or (old is not None and row.alt_bidx is None):
            raise StaleKeys()


def _fetch_alt(conn: sqlite3.Connection, rows: Sequence[NewContact]) -> dict[bytes, str]:
    """During a blind-index move: the rows' values already held under the old index."""
    alts = [r.alt_bidx for r in rows if r.alt_bidx is not None]
    return _fetch_by_bidx(conn, alts) if alts else {}


def _found_under_old_index(
    found: dict[bytes, str], rows: Sequence[NewContact], old: dict[bytes, str]
) -> None:
    """Answer each row whose value exists under the old index with that (older) token."""
    if old:
        for row in rows:
            if row.alt_bidx is not None and row.alt_bidx in old:
                found[row.bidx] = old[row.alt_bidx]


def _fetch_by_bidx(conn: sqlite3.Connection, bidxs: Sequence[bytes]) -> dict[bytes, str]:
    # One aggregated row instead of one row per match: the sqlite3 module releases the GIL on
    # every step, and under many threads each re-acquisition waits a whole switch interval.
    found: dict[bytes, str] = {}
    with _errors():
        for start in range(0, len(bidxs), _MAX_PARAMS):
            chunk = bidxs[start : start + _MAX_PARAMS]
            # Only placeholders are interpolated; values are bound parameters.
            sql = (
                "SELECT json_group_object(hex(bidx), token) FROM contacts WHERE bidx IN ("  # noqa: S608
                + ",".join("?" * len(chunk))
                + ")"
            )
            (doc,) = conn.execute(sql, chunk).fetchone()
            found.update((bytes.fromhex(k), v) for k, v in _decode_object(doc).items())
    return found


def _insert_rows(conn: sqlite3.Connection, rows: Sequence[NewContact], now: int) -> None:
    # Multi-row INSERTs in power-of-two sizes: few statement steps (see _fetch_by_bidx) and a
    # bounded set of distinct statements for the statement cache.
    start = 0
    while start < len(rows):
        size = min(_MAX_INSERT_ROWS, 1 << ((len(rows) - start).bit_length() - 1))
        chunk = rows[start : start + size]
        params: list[object] = []
        for r in chunk:
            params += (r.token, r.kind, r.bidx, r.bidx_key, r.value_ct, now)
        conn.execute(_INSERT_SQL[size], params)
        start += size


_MAX_INSERT_ROWS = 1024
# Only placeholders are interpolated; values are bound parameters.
_INSERT_SQL = {
    1 << n: "INSERT INTO contacts (token, kind, bidx, bidx_key, value_ct, created_at) VALUES "  # noqa: S608
    + ",".join(["(?, ?, ?, ?, ?, ?)"] * (1 << n))
    + " ON CONFLICT DO NOTHING"
    for n in range(_MAX_INSERT_ROWS.bit_length())
}
_decode_object = msgspec.json.Decoder(dict[str, str]).decode


def _commit_group(conn: sqlite3.Connection, rows: list[NewContact], now: int) -> dict[bytes, str]:
    """Insert-or-get ``rows`` in one transaction; blind index to the token that holds it."""
    with _errors():
        conn.execute("BEGIN IMMEDIATE")
        try:
            _require_keys(conn, [r.value_ct for r in rows])
            _require_index(conn, rows)
            old = _fetch_alt(conn, rows)
            _insert_rows(conn, [r for r in rows if r.alt_bidx not in old] if old else rows, now)
            found = _fetch_by_bidx(conn, list({r.bidx for r in rows}))
            _found_under_old_index(found, rows, old)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return found


def _smoothed(mean: float, sample: float) -> float:
    """The bulk transactions' lock time per row: a slower transaction (another writer, a
    checkpoint beside it) counts at once, a faster one only partly, so sizes shrink at once
    and grow back over a few transactions."""
    return max(sample, 0.6 * mean + 0.4 * sample, 1e-9)


def _bulk_size(rows: float) -> int:
    return round(min(_BULK_MAX_ROWS, max(_BULK_MIN_ROWS, rows)))


def _token_of(row: NewContact) -> str:
    return row.token


_BULK_INSERT_SQL = (
    "INSERT INTO contacts (token, kind, bidx, bidx_key, value_ct, created_at) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT DO NOTHING"
)


def _commit_bulk(
    conn: sqlite3.Connection, rows: Sequence[NewContact], now: int
) -> tuple[dict[bytes, str], float]:
    """Insert-or-get one bulk chunk in one transaction (rows already in token order); also the
    seconds the write lock was held."""
    with _errors():
        conn.execute("BEGIN IMMEDIATE")
        locked = time.perf_counter()
        try:
            _require_keys(conn, [r.value_ct for r in rows])
            _require_index(conn, rows)
            old = _fetch_alt(conn, rows)
            fresh = [r for r in rows if r.alt_bidx not in old] if old else rows
            before = conn.total_changes
            conn.executemany(
                _BULK_INSERT_SQL, [(r.token, r.kind, r.bidx, r.bidx_key, r.value_ct, now) for r in fresh]
            )
            if conn.total_changes - before == len(rows):
                # Every row went in (the table has no triggers: one change per row inserted), so
                # each index is held by its own row's token: no need to read them back.
                found = {r.bidx: r.token for r in rows}
            else:
                found = _fetch_by_bidx(conn, [r.bidx for r in rows])
                _found_under_old_index(found, rows, old)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return found, time.perf_counter() - locked


class _Checkpointer:
    """Copies the WAL back into the database off the commit path, with the WAL kept bounded.

    With SQLite's automatic checkpoints the connection that commits copies WAL pages back into
    the database itself, and every creator of new tokens waits for that I/O. Here one thread per
    process that creates tokens checkpoints PASSIVE (it never blocks readers or writers) once the
    WAL passes ``soft_bytes``; pages that many commits dirtied are written back once. Under
    sustained writes a passive checkpoint never catches up with the end of the WAL, so past
    ``hard_bytes`` it checkpoints RESTART: it waits for the writer of the moment, holds new ones
    back while it finishes, and the next writer starts the WAL from its beginning again.
    """

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        close: Callable[[sqlite3.Connection], None],
        wal: Path,
        *,
        soft_bytes: int = 40 << 20,
        hard_bytes: int = 400 << 20,
        poll_seconds: float = 0.05,
    ) -> None:
        self._connect, self._close, self._wal = connect, close, wal
        self._soft, self._hard, self._poll = soft_bytes, hard_bytes, poll_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sendvault-sqlite-checkpointer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the thread after its current checkpoint."""
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        failing = False
        while not self._stop.wait(self._poll):
            try:
                size = self._wal.stat().st_size
            except OSError:
                continue
            if size <= self._soft:
                continue
            mode = "RESTART" if size > self._hard else "PASSIVE"
            try:
                conn = conn or self._connect()
                conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
            except (sqlite3.Error, StoreError) as exc:
                # Reported once per failing spell; the next poll tries again.
                if not failing:
                    log.warning("sqlite checkpoint failed (%s); retrying", exc)
                failing = True
            else:
                failing = False
        if conn is not None:
            self._close(conn)
