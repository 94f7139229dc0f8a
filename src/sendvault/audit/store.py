"""The audit database: an append-only, hash-chained, signed log in its own SQLite file.

Its own file (``$SENDVAULT_HOME/audit.db``) so audit writes never wait for the vault's write lock.
Appends from every process go through ``BEGIN IMMEDIATE``: check the stored log against its
signed head, chain the new records, sign the new head, commit. So the chain stays linear with
several workers and CLI commands writing at once, and the writer never signs over records it
did not write: a log whose last record does not match the signed head, with records after it or
missing below it, or with a head older than one this process already saw (rolled back), raises
:class:`AuditTampered` and nothing is written (verify before extend). The head's signature
covers the time it was written, so a copy of it kept elsewhere dates the log. A new file starts
with a signed head at record 0, so an emptied log is told from a new one.

Signed heads are also kept as checkpoints, often enough that no record is more than
``checkpoint_records`` records or ``checkpoint_seconds`` seconds from one; each checkpoint is what
witnesses receive (see :mod:`.witness`). A purge leaves a signed anchor (the last removed
record's number and hash) that the remaining chain starts from. A store opened ``read_only``
never creates, migrates or signs anything.
"""

from __future__ import annotations

import contextlib
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import AuditTampered, AuditUnavailable
from .marks import Checkpoint, Mark, Pending, Signer, Stored, Verifier, check_signature, head_message, now_us
from .record import GENESIS, chain_hash, names_purge

__all__ = [
    "AuditLogMissing",
    "AuditStore",
    "Checkpoint",
    "Mark",
    "Pending",
    "Signer",
    "Stored",
    "check_signature",
    "head_message",
    "now_us",
]

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
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    seq   INTEGER PRIMARY KEY,
    hash  BLOB    NOT NULL,
    sig   BLOB    NOT NULL,
    ts_us INTEGER
);
CREATE TABLE IF NOT EXISTS audit_meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
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


class AuditLogMissing(AuditUnavailable):
    """A read found no audit database where the settings point: nothing was created."""


class AuditStore:
    """The audit SQLite file; safe for several processes."""

    def __init__(
        self,
        path: Path,
        signer: Signer | Ed25519PrivateKey | None,
        public_key: Verifier | None,
        *,
        checkpoint_records: int = 1000,
        checkpoint_seconds: float = 5.0,
        busy_timeout_ms: int = 5000,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._signer = signer
        self.public_key = public_key
        self.checkpoint_records = checkpoint_records
        self.checkpoint_seconds = checkpoint_seconds
        # Bounds each write's wait for SQLite's lock, so a failing write is known within it.
        self._busy_timeout_ms = busy_timeout_ms
        self.read_only = read_only
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        # The newest head this process verified or signed: a stored head older than it means
        # the file was rolled back under the running process.
        self._trusted: Mark | None = None
        # When this process first left a record without a checkpoint (monotonic), if it did.
        self._uncovered_since: float | None = None
        # Called with each new checkpoint after its commit (witness delivery, see AuditLog).
        self.on_checkpoint: Callable[[Mark], None] | None = None
        # Reads the keys again when the head stops verifying under them (another process
        # rotated them): a new (signer, ring), checked as at start. None: keys never change.
        self.reload_keys: Callable[[], tuple[Signer, Verifier]] | None = None

    def connect(self) -> sqlite3.Connection:
        """The connection of the calling thread's user (one per store instance)."""
        if self._conn is None:
            self._conn = self._open_read_only() if self.read_only else self._open_for_writing()
        return self._conn

    def _open_read_only(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise AuditLogMissing(f"no audit log at {self.path}")
        # mode=ro: SQLite neither creates the file nor changes it; reads still see the WAL.
        conn = sqlite3.connect(
            f"{self.path.as_uri()}?mode=ro", uri=True, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
        return conn

    def _open_for_writing(self) -> sqlite3.Connection:
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
        return conn

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        present = {
            str(r[0])
            for r in conn.execute(
                "SELECT name FROM sqlite_master"
                " WHERE name IN ('audit_records', 'audit_marks', 'audit_checkpoints')"
            )
        }
        new = not present
        if present and len(present) < 3:
            # A log with a table dropped is not completed with an empty one: that would hide the loss.
            missing = ", ".join(sorted({"audit_records", "audit_marks", "audit_checkpoints"} - present))
            raise AuditTampered(f"the audit table(s) {missing} are missing: the log was damaged")
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                conn.execute(statement)
        if not new and "ts_us" not in _columns(conn, "audit_marks"):
            # A log from before heads were dated; its head is signed anew by the next append.
            conn.execute("ALTER TABLE audit_marks ADD COLUMN ts_us INTEGER NOT NULL DEFAULT 0")
        if "ts_us" not in _columns(conn, "audit_checkpoints"):
            # Checkpoints from before they were dated keep their undated signature (NULL).
            conn.execute("ALTER TABLE audit_checkpoints ADD COLUMN ts_us INTEGER")
        # This log's identity, written into every head a witness receives: a witness shared by
        # several logs (replicas) is told apart from a forked log, and refused (see .witness).
        conn.execute(
            "INSERT OR IGNORE INTO audit_meta (name, value) VALUES ('log_id', ?)", (secrets.token_hex(8),)
        )
        if new and self._signer is not None:
            # A signed head at record 0: a log whose records and marks were all deleted then
            # fails verification instead of passing as a new, empty one.
            self._put_head(conn, 0, GENESIS)

    def _put_head(self, conn: sqlite3.Connection, seq: int, digest: bytes) -> Mark:
        ts_us = now_us(self._clock)
        head = Mark(seq, digest, self._sign("head", seq, digest, ts_us), ts_us)
        conn.execute(
            "INSERT OR REPLACE INTO audit_marks (kind, seq, hash, sig, ts_us) VALUES ('head', ?, ?, ?, ?)",
            (seq, digest, head.sig, ts_us),
        )
        return head

    def close(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def trust_witnessed(self, head: Mark | None) -> None:
        """Start from a head a witness holds: the log must not be behind it or differ at it.

        Its signature must verify under this store's keys (AuditTampered otherwise: a witness
        holding a forged head is itself an alarm).
        """
        if head is None:
            return
        assert self.public_key is not None
        try:
            check_signature(self.public_key, "head", head.seq, head.hash, head.sig, ts_us=head.ts_us)
        except InvalidSignature:
            raise AuditTampered(f"a witness holds a head (record {head.seq}) that does not verify") from None
        if self._trusted is None or head.seq > self._trusted.seq:
            self._trusted = head

    def log_id(self) -> str | None:
        """This log's identity (None for a log no writer of this version has opened yet)."""
        try:
            with self.snapshot() as conn:
                row = conn.execute("SELECT value FROM audit_meta WHERE name = 'log_id'").fetchone()
        except sqlite3.OperationalError:
            return None  # no audit_meta table: a log from before identities
        return None if row is None else str(row[0])

    def signer_public_key(self) -> Ed25519PublicKey:
        """The public key of the key that signs this store's heads."""
        if self._signer is None:
            raise AuditUnavailable("this process holds no audit signing key")
        return self._signer.public_key()

    def last_head_seq(self) -> int:
        """The record the stored head names (0 for a new log)."""
        with self.snapshot() as conn:
            head = self.marks(conn).get("head")
        return 0 if head is None else head.seq

    def _sign(self, kind: str, seq: int, digest: bytes, ts_us: int | None = None) -> bytes:
        if self._signer is None or self.read_only:
            raise AuditUnavailable("this process holds no audit signing key")
        return self._signer.sign(head_message(kind, seq, digest, ts_us))

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction under SQLite's lock: every process appends in turn."""
        if self.read_only:
            raise AuditUnavailable("the audit log is open read-only")
        # One connection per store: a caller's thread (a CLI purge) and the writer thread take
        # turns, never interleave statements of two transactions.
        with self._lock:
            conn = self.connect()
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def append(self, records: Sequence[Pending]) -> list[int]:
        """Check the log, chain and store ``records`` in one transaction; returns their numbers.

        Raises :class:`AuditTampered` (and writes nothing) when the stored log does not match
        its signed head.
        """
        with self._write() as conn:
            seq, prev = self._check_before_extend(conn)
            head, checkpoint, numbers = self._chain(conn, seq, prev, records)
        self._trusted = head
        self._after_commit(head, checkpoint)
        return numbers

    def _chain(
        self, conn: sqlite3.Connection, seq: int, prev: bytes, records: Sequence[Pending]
    ) -> tuple[Mark, Mark | None, list[int]]:
        """Chain ``records`` after (seq, prev) and sign the new head, inside the caller's
        transaction; returns the head, the checkpoint kept (if any) and the records' numbers."""
        covered = self._covered(conn)
        numbers = []
        checkpoint = None
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
            prev = digest
            numbers.append(seq)
            if seq - covered >= self.checkpoint_records and len(numbers) < len(records):
                # Inside a large group: a checkpoint every `checkpoint_records` records.
                checkpoint = self._keep(conn, self._dated(seq, digest))
                covered = seq
        head = self._put_head(conn, seq, prev)
        if seq > covered and self._due(conn, covered, head):
            checkpoint = self._keep(conn, head)
        return head, checkpoint, numbers

    def probe(self) -> None:
        """Sign the head again, dated now: a real write, to learn whether writes succeed again."""
        self.append([])

    def checkpoint(self) -> Mark | None:
        """Keep the signed head as a checkpoint now if records are not yet covered by one."""
        with self._write() as conn:
            seq, prev = self._check_before_extend(conn)
            checkpoint = None
            if seq > self._covered(conn):
                head = self._put_head(conn, seq, prev)
                checkpoint = self._keep(conn, head)
        if checkpoint is None:
            self._uncovered_since = None  # another process's checkpoint covers them
            return None
        self._trusted = checkpoint
        self._after_commit(checkpoint, checkpoint)
        return checkpoint

    def checkpoint_due_in(self) -> float | None:
        """Seconds until this process's uncovered records need a checkpoint (None: none are)."""
        if self._uncovered_since is None:
            return None
        return max(0.0, self._uncovered_since + self.checkpoint_seconds - time.monotonic())

    def _covered(self, conn: sqlite3.Connection) -> int:
        """The last record a checkpoint (or the chain's start) covers."""
        row = conn.execute("SELECT max(seq) FROM audit_checkpoints").fetchone()
        return int(row[0]) if row and row[0] is not None else self._start(conn)[0]

    def _due(self, conn: sqlite3.Connection, covered: int, head: Mark) -> bool:
        """Whether the records after ``covered`` need a checkpoint at ``head`` (by count or age)."""
        if head.seq - covered >= self.checkpoint_records:
            return True
        oldest = conn.execute("SELECT ts_us FROM audit_records WHERE seq = ?", (covered + 1,)).fetchone()
        return oldest is None or head.ts_us - _int(oldest[0]) >= self.checkpoint_seconds * 1_000_000

    def _dated(self, seq: int, digest: bytes) -> Mark:
        ts_us = now_us(self._clock)
        return Mark(seq, digest, self._sign("head", seq, digest, ts_us), ts_us)

    def _keep(self, conn: sqlite3.Connection, head: Mark) -> Mark:
        """Keep a dated signed head as a checkpoint: what witnesses receive."""
        conn.execute(
            "INSERT OR REPLACE INTO audit_checkpoints (seq, hash, sig, ts_us) VALUES (?, ?, ?, ?)",
            (head.seq, head.hash, head.sig, head.ts_us),
        )
        return head

    def _after_commit(self, head: Mark, checkpoint: Mark | None) -> None:
        if checkpoint is not None and checkpoint.seq == head.seq:
            self._uncovered_since = None
        elif self._uncovered_since is None and head.seq > 0:
            self._uncovered_since = time.monotonic()
        if checkpoint is not None and self.on_checkpoint is not None:
            self.on_checkpoint(checkpoint)

    def _start(self, conn: sqlite3.Connection) -> tuple[int, bytes]:
        anchor = conn.execute("SELECT seq, hash FROM audit_marks WHERE kind = 'anchor'").fetchone()
        return (int(anchor[0]), bytes(anchor[1])) if anchor else (0, GENESIS)

    def _check_before_extend(self, conn: sqlite3.Connection) -> tuple[int, bytes]:
        """The signed head to chain from, once the stored log is shown to match it.

        Only the head's signature vouches for the chain: the hashes alone anyone can recompute.
        So the last record must be the one the head signs, with nothing after it, and the head
        must not be older than one this process saw. Cost: a signature check when another
        process wrote since, and two indexed reads.
        """
        try:
            head = self.marks(conn).get("head")
            last = conn.execute("SELECT seq, hash FROM audit_records ORDER BY seq DESC LIMIT 1").fetchone()
            start = self._start(conn)
        except sqlite3.DatabaseError as exc:
            raise AuditTampered(f"the audit tables cannot be read ({exc})") from None
        if head is None:
            raise AuditTampered("the log has no signed head (deleted)")
        if head != self._trusted:
            self._check_new_head(conn, head)
        if last is None:
            if (head.seq, head.hash) != start:
                raise AuditTampered(f"records up to {head.seq} are missing (deleted) below the signed head")
        elif int(last[0]) > head.seq:
            raise AuditTampered(f"records after the signed head (record {head.seq}) were not written here")
        elif int(last[0]) < head.seq:
            raise AuditTampered(
                f"records after {last[0]} are missing (deleted): the signed head is record {head.seq}"
            )
        elif _blob(last[1]) != head.hash:
            raise AuditTampered(f"record {head.seq} does not match the signed head (rewritten)")
        self._trusted = head
        return head.seq, head.hash

    def _check_new_head(self, conn: sqlite3.Connection, head: Mark) -> None:
        """A head this process did not write or see: signed, and not behind what it trusts."""
        trusted = self._trusted
        if self.public_key is None:
            raise AuditUnavailable("no public key to check the signed head with")
        if not self._head_verifies(head):
            raise AuditTampered(f"the signed head (record {head.seq}) does not verify under the signing key")
        if trusted is None:
            return
        if head.seq < trusted.seq or (head.seq == trusted.seq and head.hash != trusted.hash):
            raise AuditTampered(
                f"the log was rolled back: its signed head is record {head.seq}, this process"
                f" saw (or a witness holds) record {trusted.seq}"
            )
        if head.seq > trusted.seq:
            # Others wrote since: the record this process trusted must still be there.
            row = conn.execute("SELECT hash FROM audit_records WHERE seq = ?", (trusted.seq,)).fetchone()
            if row is not None and _blob(row[0]) != trusted.hash:
                raise AuditTampered(
                    f"record {trusted.seq} differs from the head this process saw or a witness holds"
                    " (the log was rewritten)"
                )

    def _head_verifies(self, head: Mark) -> bool:
        """Whether the head verifies under this store's keys, or under its keys read again.

        Reading them again is how a running writer follows a rotation made by another process;
        the reloaded keys pass the start-up checks (with ``audit_public_key`` set, only keys it
        trusts), so a key file swapped in by someone else is no way in.
        """
        assert self.public_key is not None
        try:
            check_signature(self.public_key, "head", head.seq, head.hash, head.sig, ts_us=head.ts_us)
        except InvalidSignature:
            if self.reload_keys is None:
                return False
        else:
            return True
        try:
            signer, ring = self.reload_keys()
        except AuditUnavailable:
            # The keys on disk are not ones this log may be signed with (a key pair swapped in
            # that audit_public_key does not hold): an integrity alarm, not an outage.
            return False
        try:
            check_signature(ring, "head", head.seq, head.hash, head.sig, ts_us=head.ts_us)
        except InvalidSignature:
            return False
        self._signer, self.public_key = signer, ring
        return True

    # -- reading ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: a consistent view while writers append."""
        with self._lock:
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

    def checkpoints(self, conn: sqlite3.Connection) -> dict[int, Checkpoint]:
        """Signed checkpoints by record number."""
        dated = "ts_us" in _columns(conn, "audit_checkpoints")
        # One of two constant column lists: a log from before checkpoints were dated has no ts_us.
        sql = "SELECT seq, hash, sig, " + ("ts_us" if dated else "NULL") + " FROM audit_checkpoints"  # noqa: S608
        return {
            int(s): Checkpoint(_blob(h), _blob(g), None if t is None else int(t))
            for s, h, g, t in conn.execute(sql)
        }

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

    def last_seq(self, conn: sqlite3.Connection) -> int | None:
        """The number of the last stored record, if any."""
        row = conn.execute("SELECT max(seq) FROM audit_records").fetchone()
        return None if row is None or row[0] is None else int(row[0])

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

    def purge(self, before_us: int, record: Callable[[int, int], Pending]) -> tuple[int, int]:
        """Remove records older than ``before_us``; leave a signed anchor. Returns (count, last seq).

        ``record(count, last)`` is the purge's own ``audit:purge`` record (``meta.through_seq``:
        ``last``), chained in the same transaction as the anchor: verify accepts an anchor only
        with the record of the purge that left it, so a crash between the two cannot leave an
        anchor that looks forged, and a signature obtained for an anchor alone proves nothing.
        The whole chain is verified first, inside the purge's transaction: records are never
        removed (nor an anchor signed) unchecked, so a purge cannot hide an edit. A log that does
        not verify is :class:`AuditTampered` and nothing is removed.
        """
        from .verify import ChainBroken, verify_connection  # noqa: PLC0415 - verify imports this module

        with self._write() as conn:
            head_seq, head_hash = self._check_before_extend(conn)
            try:
                verify_connection(self, conn)
            except ChainBroken as broken:
                raise AuditTampered(f"the log does not verify ({broken}): nothing was purged") from None
            # Never remove the newest record: the head must stay anchored to a stored record. A
            # date after the newest record removes all the others.
            row = conn.execute(
                "SELECT seq, hash FROM audit_records WHERE ts_us < ?"
                " AND seq < (SELECT max(seq) FROM audit_records) ORDER BY seq DESC LIMIT 1",
                (before_us,),
            ).fetchone()
            count, seq = 0, 0
            if row is not None:
                seq, digest = int(row[0]), bytes(row[1])
                count = conn.execute("DELETE FROM audit_records WHERE seq <= ?", (seq,)).rowcount
                conn.execute("DELETE FROM audit_fingerprints WHERE seq <= ?", (seq,))
                conn.execute("DELETE FROM audit_checkpoints WHERE seq <= ?", (seq,))
                conn.execute(
                    "INSERT OR REPLACE INTO audit_marks (kind, seq, hash, sig) VALUES ('anchor', ?, ?, ?)",
                    (seq, digest, self._sign("anchor", seq, digest)),
                )
            head, checkpoint, _ = self._chain(conn, head_seq, head_hash, [record(int(count), seq)])
        self._trusted = head
        self._after_commit(head, checkpoint)
        return int(count), seq

    def check_log(self) -> None:
        """The writer's check at start: the log matches its signed head and may be extended.

        Besides what every append checks (:meth:`_check_before_extend`), it walks the links from
        the newest signed checkpoint (or the chain's start) to the head, and checks that a purge
        anchor comes with its ``audit:purge`` record. Bounded work (at most one checkpoint
        interval of records), so a server refuses calls from its first one rather than after
        recording one over a forgery. Raises :class:`AuditTampered`; writes nothing.
        """
        try:
            with self.snapshot() as conn:
                seq, prev = self._check_before_extend(conn)
                self._check_recent_links(conn, seq, prev)
                self._check_anchor_purge(conn)
        except sqlite3.DatabaseError as exc:
            raise AuditTampered(f"the audit tables cannot be read ({exc})") from None

    def _check_recent_links(self, conn: sqlite3.Connection, head_seq: int, head_hash: bytes) -> None:
        """The records from the newest signed point to the head link up to the head's hash."""
        assert self.public_key is not None  # _check_before_extend needs it
        start_seq, start_hash = self._start(conn)
        anchor = self.marks(conn).get("anchor")
        if anchor is not None:
            try:
                check_signature(self.public_key, "anchor", anchor.seq, anchor.hash, anchor.sig)
            except InvalidSignature:
                raise AuditTampered(f"the purge anchor (record {anchor.seq}) does not verify") from None
        newest = conn.execute(
            "SELECT seq, hash, sig, ts_us FROM audit_checkpoints WHERE seq <= ? ORDER BY seq DESC LIMIT 1",
            (head_seq,),
        ).fetchone()
        if newest is not None and int(newest[0]) > start_seq:
            seq, digest, sig, ts_us = int(newest[0]), _blob(newest[1]), _blob(newest[2]), newest[3]
            kind = "head" if ts_us is not None else "checkpoint"
            try:
                check_signature(self.public_key, kind, seq, digest, sig, ts_us=ts_us)
            except InvalidSignature:
                raise AuditTampered(f"the checkpoint at record {seq} does not verify (forged)") from None
            start_seq, start_hash = seq, digest
        prev, expected = start_hash, start_seq
        rows = conn.execute(
            "SELECT seq, body, prev_hash, hash, request, response FROM audit_records"
            " WHERE seq >= ? AND seq <= ? ORDER BY seq",
            (start_seq, head_seq),
        )
        for seq_, body, prev_hash, digest, request, response in rows:
            number = int(seq_)
            if number == start_seq:
                if _blob(digest) != start_hash:
                    raise AuditTampered(f"record {number} differs from its signed checkpoint (rewritten)")
                continue
            expected += 1
            if number != expected:
                raise AuditTampered(f"record {expected} is missing (deleted) below the signed head")
            if _blob(prev_hash) != prev or chain_hash(
                prev, number, _blob(body), _blob(request), _blob(response)
            ) != _blob(digest):
                raise AuditTampered(f"record {number} was changed (its links do not hold)")
            prev = _blob(digest)
        if expected != head_seq or prev != head_hash:
            raise AuditTampered(f"the records do not lead to the signed head (record {head_seq})")

    def _check_anchor_purge(self, conn: sqlite3.Connection) -> None:
        """A purge anchor must come with the purge's own record (see :meth:`purge`)."""
        anchor = self.marks(conn).get("anchor")
        if anchor is None:
            return
        rows = conn.execute(
            "SELECT body FROM audit_records WHERE event = 'audit:purge' AND seq > ?", (anchor.seq,)
        )
        if not any(names_purge(_blob(body), anchor.seq) for (body,) in rows):
            raise AuditTampered(
                f"the purge anchor (record {anchor.seq}) has no audit:purge record: records were"
                " dropped without a purge, or the purge's record was deleted"
            )


def _int(value: object) -> int:
    # A tampered row may hold text where a number belongs: it then counts as very old.
    return value if isinstance(value, int) else 0


def _columns(conn: sqlite3.Connection, table: str) -> set[str]:
    return {str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")}


def _blob(value: object) -> bytes:
    # A tampered row may hold text or a number where bytes belong; compare it as bytes.
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode()
