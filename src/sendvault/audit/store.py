"""The audit database: an append-only, hash-chained, signed log in its own SQLite file.

Its own file (``$SENDVAULT_HOME/audit.db``) so audit writes never wait for the vault's write lock.
Appends from every process go through ``BEGIN IMMEDIATE``: read the head, chain the new records,
sign the new head, commit. So the chain stays linear with several workers and CLI commands
writing at once. The head's signature covers the time it was written, so a copy of it kept
elsewhere (``sendvault audit head``) dates the log. A new file starts with a signed head at record 0,
so an emptied log is told from a new one. Every ``checkpoint_every`` records a signed checkpoint
is kept; a purge leaves a signed anchor (the last removed record's number and hash) that the
remaining chain starts from.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import AuditUnavailable
from .record import GENESIS, chain_hash

__all__ = ["AuditStore", "Mark", "Pending", "Stored", "check_signature", "head_message", "now_us"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit_records (
    seq       INTEGER PRIMARY KEY,
    ts_us     INTEGER NOT NULL,
    event     TEXT    NOT NULL,
    actor     TEXT,
    route     TEXT,
    status    INTEGER,
    body      BLOB    NOT NULL,
    prev_hash BLOB    NOT NULL,
    hash      BLOB    NOT NULL,
    request   BLOB    NOT NULL DEFAULT x'',
    response  BLOB    NOT NULL DEFAULT x''
);
CREATE INDEX IF NOT EXISTS audit_records_ts ON audit_records (ts_us);
CREATE TABLE IF NOT EXISTS audit_fingerprints (fp TEXT NOT NULL, seq INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS audit_fingerprints_fp ON audit_fingerprints (fp);
CREATE TABLE IF NOT EXISTS audit_checkpoints (seq INTEGER PRIMARY KEY, hash BLOB NOT NULL, sig BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS audit_marks (
    kind  TEXT PRIMARY KEY CHECK (kind IN ('head', 'anchor')),
    seq   INTEGER NOT NULL,
    hash  BLOB    NOT NULL,
    sig   BLOB    NOT NULL,
    ts_us INTEGER NOT NULL DEFAULT 0
)
"""


_WAL_CHECKPOINT_PAGES = 256
_WAL_LIMIT_BYTES = 16 * 1024 * 1024


def head_message(kind: str, seq: int, digest: bytes, ts_us: int | None = None) -> bytes:
    """What a head (with the time it was written), anchor or checkpoint signature covers."""
    message = b"sendvault-audit|" + kind.encode() + b"|" + seq.to_bytes(8, "big") + digest
    return message if ts_us is None else message + ts_us.to_bytes(8, "big", signed=True)


@dataclass(frozen=True, slots=True)
class Mark:
    """A signed head or anchor: a record's number and hash (and, for a head, when it was written)."""

    seq: int
    hash: bytes
    sig: bytes
    ts_us: int = 0


@dataclass(frozen=True, slots=True)
class Stored:
    """One record as stored. The indexed columns are read as they are (a tampered row may hold
    text where a number belongs), so verification can compare them with the hashed body."""

    seq: int
    ts_us: int
    event: str
    actor: str | None
    route: str | None
    status: int | None
    body: bytes
    prev_hash: bytes
    hash: bytes
    request: bytes = b""
    response: bytes = b""


@dataclass(frozen=True, slots=True)
class Pending:
    """A record ready to chain: its columns, canonical body and fingerprints."""

    ts_us: int
    event: str
    actor: str | None
    route: str | None
    status: int | None
    body: bytes
    fingerprints: tuple[str, ...]
    request: bytes = b""
    response: bytes = b""


class AuditStore:
    """The audit SQLite file; safe for several processes."""

    def __init__(
        self,
        path: Path,
        signer: Ed25519PrivateKey | None,
        public_key: Ed25519PublicKey,
        *,
        checkpoint_every: int = 1000,
        busy_timeout_ms: int = 5000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._signer = signer
        self.public_key = public_key
        self._checkpoint_every = checkpoint_every
        # Bounds each write's wait for SQLite's lock, so a failing write is known within it.
        self._busy_timeout_ms = busy_timeout_ms
        self._clock = clock
        self._conn: sqlite3.Connection | None = None

    def connect(self) -> sqlite3.Connection:
        """The connection of the calling thread's user (one per store instance)."""
        if self._conn is None:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not self.path.exists():
                with contextlib.suppress(FileExistsError):
                    self.path.touch(mode=0o600, exist_ok=False)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=5)
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            # Records carry whole payloads (~100 kB for a 500-token resolve): 64 KiB pages store
            # one in two overflow pages instead of 25, with as many fewer WAL frames and writes.
            # Applies when the file is new; an existing log keeps its page size.
            conn.execute("PRAGMA page_size = 65536")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            # A bound on the WAL: with 64 KiB pages SQLite's default checkpoint every 1,000 pages
            # let it grow to 64 MiB. Checkpoint every 256 pages (16 MiB), and truncate the file
            # back to 16 MiB after a checkpoint that a long read or a burst let grow larger.
            conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_CHECKPOINT_PAGES}")
            conn.execute(f"PRAGMA journal_size_limit = {_WAL_LIMIT_BYTES}")
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._create_schema(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                conn.close()
                raise
            conn.execute("COMMIT")
            self._conn = conn
        return self._conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        new = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'audit_marks'").fetchone() is None
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        if not new and "ts_us" not in {r[1] for r in conn.execute("PRAGMA table_info(audit_marks)")}:
            # A log from before heads were dated; its head is signed anew by the next append.
            conn.execute("ALTER TABLE audit_marks ADD COLUMN ts_us INTEGER NOT NULL DEFAULT 0")
        if new and self._signer is not None:
            # A signed head at record 0: a log whose records and marks were all deleted then
            # fails verification instead of passing as a new, empty one.
            self._put_head(conn, 0, GENESIS)

    def _put_head(self, conn: sqlite3.Connection, seq: int, digest: bytes) -> None:
        ts_us = now_us(self._clock)
        conn.execute(
            "INSERT OR REPLACE INTO audit_marks (kind, seq, hash, sig, ts_us) VALUES ('head', ?, ?, ?, ?)",
            (seq, digest, self._sign("head", seq, digest, ts_us), ts_us),
        )

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _sign(self, kind: str, seq: int, digest: bytes, ts_us: int | None = None) -> bytes:
        if self._signer is None:
            raise AuditUnavailable("this process holds no audit signing key")
        return self._signer.sign(head_message(kind, seq, digest, ts_us))

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction under SQLite's lock: every process appends in turn."""
        conn = self.connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def append(self, records: Sequence[Pending]) -> list[int]:
        """Chain and store ``records`` in one transaction; returns their numbers."""
        with self._write() as conn:
            seq, prev = self._head(conn)
            numbers = []
            for rec in records:
                seq += 1
                digest = chain_hash(prev, seq, rec.body, rec.request, rec.response)
                conn.execute(
                    "INSERT INTO audit_records VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        seq, rec.ts_us, rec.event, rec.actor, rec.route, rec.status, rec.body, prev, digest,
                        rec.request, rec.response,
                    ),
                )  # fmt: skip
                if rec.fingerprints:
                    conn.executemany(
                        "INSERT INTO audit_fingerprints VALUES (?, ?)",
                        [(fp, seq) for fp in set(rec.fingerprints)],
                    )
                if seq % self._checkpoint_every == 0:
                    conn.execute(
                        "INSERT INTO audit_checkpoints VALUES (?, ?, ?)",
                        (seq, digest, self._sign("checkpoint", seq, digest)),
                    )
                prev = digest
                numbers.append(seq)
            self._put_head(conn, seq, prev)
        return numbers

    def probe(self) -> None:
        """Sign the head again, dated now: a real write, to learn whether writes succeed again."""
        self.append([])

    def _head(self, conn: sqlite3.Connection) -> tuple[int, bytes]:
        row = conn.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
        if row is not None:
            return int(row[0]), bytes(row[1])
        anchor = conn.execute("SELECT seq, hash FROM audit_marks WHERE kind = 'anchor'").fetchone()
        return (int(anchor[0]), bytes(anchor[1])) if anchor else (0, GENESIS)

    # -- reading ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: a consistent view while writers append."""
        conn = self.connect()
        conn.execute("BEGIN")
        try:
            yield conn
        finally:
            conn.execute("COMMIT")

    def marks(self, conn: sqlite3.Connection) -> dict[str, Mark]:
        """The signed head and anchor, by kind."""
        rows = conn.execute("SELECT kind, seq, hash, sig, ts_us FROM audit_marks")
        return {k: Mark(int(s), _blob(h), _blob(g), int(t)) for k, s, h, g, t in rows}

    def checkpoints(self, conn: sqlite3.Connection) -> dict[int, tuple[bytes, bytes]]:
        """Signed checkpoints: seq -> (hash, signature)."""
        return {int(s): (bytes(h), bytes(g)) for s, h, g in conn.execute("SELECT * FROM audit_checkpoints")}

    def records(
        self,
        conn: sqlite3.Connection,
        where: str = "",
        params: Sequence[object] = (),
        limit: int | None = None,
    ) -> Iterator[Stored]:
        """Records in order, optionally filtered (``where`` is built by our own code only)."""
        # `where` comes from our own filter builder with bound parameters, never from input text.
        sql = "SELECT * FROM audit_records" + (f" WHERE {where}" if where else "") + " ORDER BY seq"  # noqa: S608
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        for row in conn.execute(sql, tuple(params)):
            yield Stored(
                int(row[0]),
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                _blob(row[6]),
                _blob(row[7]),
                _blob(row[8]),
                _blob(row[9]),
                _blob(row[10]),
            )

    def fingerprint_rows(
        self, conn: sqlite3.Connection, first: int | None = None
    ) -> Iterator[tuple[int, str]]:
        """Every (seq, fingerprint) row from record ``first`` on, in record order."""
        where, params = ("WHERE seq >= ?", (first,)) if first is not None else ("", ())
        # `where` is one of two constants above.
        sql = f"SELECT seq, fp FROM audit_fingerprints {where} ORDER BY seq"  # noqa: S608
        for seq, fp in conn.execute(sql, params):
            yield int(seq), str(fp)

    def seqs_with_fingerprint(self, conn: sqlite3.Connection, fingerprint: str) -> list[int]:
        """Record numbers whose sealed values include one with this fingerprint."""
        return [
            int(s) for (s,) in conn.execute("SELECT seq FROM audit_fingerprints WHERE fp = ?", (fingerprint,))
        ]

    def purge(self, before_us: int) -> tuple[int, int]:
        """Remove records older than ``before_us``; leave a signed anchor. Returns (count, last seq)."""
        with self._write() as conn:
            # Never remove the newest record: the head must stay anchored to a stored record. A
            # date after the newest record removes all the others.
            row = conn.execute(
                "SELECT seq, hash FROM audit_records WHERE ts_us < ?"
                " AND seq < (SELECT max(seq) FROM audit_records) ORDER BY seq DESC LIMIT 1",
                (before_us,),
            ).fetchone()
            if row is None:
                return 0, 0
            seq, digest = int(row[0]), bytes(row[1])
            count = conn.execute("DELETE FROM audit_records WHERE seq <= ?", (seq,)).rowcount
            conn.execute("DELETE FROM audit_fingerprints WHERE seq <= ?", (seq,))
            conn.execute("DELETE FROM audit_checkpoints WHERE seq <= ?", (seq,))
            conn.execute(
                "INSERT OR REPLACE INTO audit_marks (kind, seq, hash, sig) VALUES ('anchor', ?, ?, ?)",
                (seq, digest, self._sign("anchor", seq, digest)),
            )
        return int(count), seq


def _blob(value: object) -> bytes:
    # A tampered row may hold text or a number where bytes belong; compare it as bytes.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode()


def check_signature(
    public_key: Ed25519PublicKey, kind: str, seq: int, digest: bytes, sig: bytes, *, ts_us: int | None = None
) -> None:
    """Raise InvalidSignature unless ``sig`` signs (kind, seq, digest[, time]) under ``public_key``."""
    public_key.verify(sig, head_message(kind, seq, digest, ts_us))


def now_us(clock: Callable[[], float] = time.time) -> int:
    """Microseconds since the epoch."""
    return int(clock() * 1_000_000)
