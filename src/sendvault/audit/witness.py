"""Witnesses: every audit checkpoint (a signed, dated head) also written where the insider is not.

The model is CloudTrail's digest files delivered to another account and the witnessed tree heads
of transparency logs: a head held elsewhere pins the log up to it, so rolling the log back,
cutting its tail or rewriting what the head covers shows against it (``audit verify --witness``),
even for someone who can write every file on the host and ask the signer for signatures.

Kinds, by URL (the ``audit_witness`` setting, space-separated):

``file:///PATH``
    JSON lines appended (``O_APPEND``, fsync) to a file that should live on another mount or host
    and be append-only for sendvault's user (``chattr +a``, or a file owned by another user with a
    group-writable append-only share). Readable by ``verify``.
``postgresql://...``
    Rows in the table ``sendvault_audit_witness`` of another PostgreSQL server (made on first use
    when the user may; give sendvault's user INSERT and SELECT only, no UPDATE or DELETE).
    Readable by ``verify``.
``syslog://HOST:PORT``
    One RFC 3164 line over UDP per head (``sendvault-audit: {head JSON}``), for a SIEM. Write-only:
    verify with a head taken from the SIEM (``--known-head``).

Delivery happens after the checkpoint's commit. A witness that cannot be written stops the log
(the API answers 503, as for an audit outage) and delivery is retried every second until it
succeeds: a log never runs ahead of its witnesses by more than one checkpoint interval.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import stat
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Protocol

from .._pglink import alive, masked
from ..config import Settings
from ..errors import AuditTampered, AuditUnavailable
from .export import head_document, parse_head
from .marks import Mark
from .verify import ChainBroken

__all__ = [
    "FileWitness",
    "PostgresWitness",
    "SyslogWitness",
    "Witness",
    "WitnessShared",
    "WitnessTorn",
    "WitnessUnavailable",
    "Witnesses",
    "open_witness",
    "open_witnesses",
    "witnessed_export_heads",
    "witnessed_heads",
    "witnessed_heads_of",
]

_TABLE = "sendvault_audit_witness"


class WitnessUnavailable(AuditUnavailable):
    """A witness could not be written or read."""


class Witness(Protocol):
    """Somewhere signed heads are kept out of the insider's reach."""

    name: str
    readable: bool

    def send(self, head: Mark, log: str | None = None) -> None:
        """Write one head of the log ``log``; raise :class:`WitnessUnavailable` when it is not written."""
        ...

    def entries(self) -> list[tuple[str | None, Mark]]:
        """Every head this witness holds with the log it names (None: written before heads named
        their log); readable witnesses only."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _line(head: Mark, log: str | None) -> str:
    doc = head_document(head)
    if log is not None:
        doc["log"] = log
    return json.dumps(doc, separators=(",", ":"))


def _read_regular(path: Path) -> bytes:
    """The bytes of a regular file; OSError for anything else. Opened without blocking and
    checked before a byte is read: a FIFO would wait for a writer forever, /dev/zero never end."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file (a pipe or a device?)")
        return fh.read()


class WitnessTorn(WitnessUnavailable):
    """A file witness whose last line is cut short (a crash mid-write): nothing more is appended
    to it, and verify does not guess what the line held."""

    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.hint = hint


class WitnessShared(AuditTampered):
    """A witness that holds the heads of another audit log: this log was deleted (or replaced)
    and started again, or the witness is shared by replicas. An integrity alarm either way."""

    def __init__(self, name: str, other: str, upto: int, own: str | None) -> None:
        super().__init__(
            f"witness {name} holds the heads of another audit log (log {other}, up to record {upto}),"
            f" not this one's (log {own or 'unnamed'}): this log was deleted or rolled back and"
            " started again, or the witness is shared by replicas; a witness is not shared: give"
            " each replica its own witness path"
        )


class FileWitness:
    """An append-only JSON-lines file."""

    readable = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"file://{path}"

    def send(self, head: Mark, log: str | None = None) -> None:
        """Append the head's line and fsync it; refuse to append after a torn last line."""
        data = (_line(head, log) + "\n").encode()
        try:
            try:
                fd, readable = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640), True
            except PermissionError:
                # An append-only share this user may write but not read: no torn-line check.
                fd, readable = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640), False
            try:
                size = os.fstat(fd).st_size
                if readable and size and os.pread(fd, 1, size - 1) != b"\n":
                    # Appending would glue this head onto the torn line: both would be lost.
                    raise self._torn(size)
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise WitnessUnavailable(f"witness {self.name}: {exc.strerror}") from None

    def _torn(self, size: int, number: int | None = None) -> WitnessTorn:
        data = self.path.read_bytes()[:size]
        keep = data.rfind(b"\n") + 1
        number = number if number is not None else data[:keep].count(b"\n") + 1
        return WitnessTorn(
            f"witness {self.name}: line {number} is torn (cut short without its newline, a crash mid-write)",
            f"the lines before it are whole; check it, then as the file's owner keep them:"
            f" truncate -s {keep} {self.path} (the next checkpoint is witnessed again)",
        )

    def entries(self) -> list[tuple[str | None, Mark]]:
        """The heads of the file; a line that is not one makes the witness unusable (ValueError),
        a torn last line too (:class:`WitnessTorn`)."""
        try:
            data = _read_regular(self.path)
        except FileNotFoundError:
            return []  # nothing delivered yet (verify names a missing file itself)
        except OSError as exc:
            raise WitnessUnavailable(f"witness {self.name}: {exc.strerror}") from None
        lines = data.split(b"\n")
        if lines[-1].strip():
            raise self._torn(len(data), len(lines))
        entries = []
        for number, raw in enumerate(lines, start=1):
            if raw.strip():
                try:
                    line = raw.decode()
                    log = json.loads(line).get("log")
                    entries.append((log if isinstance(log, str) else None, parse_head(line)))
                except (ValueError, AttributeError):
                    raise ValueError(f"witness {self.name}: line {number} is not a signed head") from None
        return entries

    def heads(self) -> list[Mark]:
        """Every head of the file, whichever log it names."""
        return [mark for _, mark in self.entries()]

    def close(self) -> None:
        """Nothing is kept open."""


class PostgresWitness:
    """A table on another PostgreSQL server (psycopg 3, the ``postgres`` extra)."""

    readable = True

    def __init__(self, url: str) -> None:
        self._url = url
        self.name = masked(url)
        self._conn: Any = None
        self._lock = threading.Lock()

    def _connect(self) -> Any:
        try:
            import psycopg  # noqa: PLC0415 - optional extra
        except ImportError:
            raise WitnessUnavailable(
                "a postgresql witness needs the postgres extra: pip install 'sendvault[postgres]'"
            ) from None
        if self._conn is not None and not alive(self._conn):
            # Cut while idle (the server restarted): replaced, rather than failing this head.
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None
        if self._conn is None:
            self._conn = psycopg.connect(self._url, autocommit=True, connect_timeout=5)
            exists = self._conn.execute("SELECT to_regclass(%s)", (_TABLE,)).fetchone()
            if exists is None or exists[0] is None:
                # Only when missing: a witness user with INSERT and SELECT alone may not create.
                self._conn.execute(
                    f"CREATE TABLE IF NOT EXISTS {_TABLE} (seq BIGINT NOT NULL, hash BYTEA NOT NULL,"
                    " sig BYTEA NOT NULL, ts_us BIGINT NOT NULL, received TIMESTAMPTZ NOT NULL DEFAULT now(),"
                    " log_id TEXT)"
                )
            self._add_log_column(self._conn)
        return self._conn

    def _add_log_column(self, conn: Any) -> None:
        """Heads name their log (column ``log_id``); a table from before gets the column."""
        import psycopg  # noqa: PLC0415 - present once connected

        found = conn.execute(
            "SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = 'log_id'"
            " AND table_schema = current_schema()",
            (_TABLE,),
        ).fetchone()
        if found is not None:
            return
        try:
            conn.execute(f"ALTER TABLE {_TABLE} ADD COLUMN IF NOT EXISTS log_id TEXT")
        except psycopg.errors.InsufficientPrivilege:
            conn.close()
            self._conn = None
            raise WitnessUnavailable(
                f"witness {self.name}: the table {_TABLE} has no log_id column and this user may not"
                f" add it; as its owner run: ALTER TABLE {_TABLE} ADD COLUMN log_id TEXT"
            ) from None

    def _run(self, what: str, fn: Any) -> Any:
        import psycopg  # noqa: PLC0415 - present once _connect succeeded

        with self._lock:
            try:
                return fn(self._connect())
            except psycopg.Error as exc:
                if self._conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        self._conn.close()
                self._conn = None
                raise WitnessUnavailable(
                    f"witness {self.name}: {what} failed ({type(exc).__name__})"
                ) from None

    def send(self, head: Mark, log: str | None = None) -> None:
        """Insert the head as a row."""
        self._run(
            "insert",
            lambda conn: conn.execute(
                f"INSERT INTO {_TABLE} (seq, hash, sig, ts_us, log_id) VALUES (%s, %s, %s, %s, %s)",  # noqa: S608 - constant
                (head.seq, head.hash, head.sig, head.ts_us, log),
            ),
        )

    def entries(self) -> list[tuple[str | None, Mark]]:
        """Every row, oldest first, with the log it names."""
        rows = self._run(
            "read",
            lambda conn: conn.execute(
                f"SELECT seq, hash, sig, ts_us, log_id FROM {_TABLE} ORDER BY seq"  # noqa: S608 - constant
            ).fetchall(),
        )
        return [
            (None if o is None else str(o), Mark(int(s), bytes(h), bytes(g), int(t)))
            for s, h, g, t, o in rows
        ]

    def heads(self) -> list[Mark]:
        """Every row's head, whichever log it names."""
        return [mark for _, mark in self.entries()]

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


class SyslogWitness:
    """Heads as syslog lines over UDP (facility local0, severity info), for a SIEM."""

    readable = False

    def __init__(self, host: str, port: int) -> None:
        self.name = f"syslog://{host}:{port}"
        self._address = (host, port)

    def send(self, head: Mark, log: str | None = None) -> None:
        """Send one datagram (UDP: delivery is not confirmed; a send error stops the log)."""
        message = f"<134>sendvault-audit: {_line(head, log)}".encode()
        try:
            family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            raise WitnessUnavailable(f"witness {self.name}: {exc.strerror or type(exc).__name__}") from None

    def entries(self) -> list[tuple[str | None, Mark]]:
        """A syslog witness cannot be read back."""
        raise ValueError(
            f"witness {self.name} is write-only: verify against a head taken from it with --known-head"
        )

    def heads(self) -> list[Mark]:
        """A syslog witness cannot be read back."""
        raise ValueError(
            f"witness {self.name} is write-only: verify against a head taken from it with --known-head"
        )

    def close(self) -> None:
        """Nothing is kept open."""


def open_witness(url: str) -> Witness:
    """The witness a URL names; ValueError for one that is not usable."""
    if url.startswith("file://"):
        path = Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path))
        if not path.is_absolute() or not str(path).strip("/"):
            raise ValueError(f"witness {url}: give an absolute file path (file:///PATH)")
        return FileWitness(path)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresWitness(url)
    if url.startswith("syslog://"):
        parts = urllib.parse.urlsplit(url)
        try:
            port = parts.port or 514
        except ValueError:
            raise ValueError(f"witness {url}: bad port") from None
        if not parts.hostname:
            raise ValueError(f"witness {url}: give syslog://HOST:PORT")
        return SyslogWitness(parts.hostname, port)
    raise ValueError(f"witness {masked(url)[:60]}: not a file:///, postgresql:// or syslog:// URL")


class Witnesses:
    """The witnesses of one writer, each with the newest head it has not yet received."""

    def __init__(self, witnesses: list[Witness], log_id: str | None = None) -> None:
        self.witnesses = witnesses
        self.log_id = log_id
        self._pending: dict[int, Mark] = {}
        self._lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.witnesses)

    @property
    def pending(self) -> bool:
        """Whether a head waits for a witness that could not be written."""
        return bool(self._pending)

    def deliver(self, head: Mark) -> None:
        """Give every witness this head (or, after a failure, the newest one); raise if one fails."""
        with self._lock:
            for index in range(len(self.witnesses)):
                self._pending[index] = head
        self.retry()

    def retry(self) -> None:
        """Send what each witness is owed; :class:`WitnessUnavailable` names the first that failed."""
        failure: WitnessUnavailable | None = None
        with self._lock:
            for index, head in sorted(self._pending.items()):
                try:
                    self.witnesses[index].send(head, self.log_id)
                except WitnessUnavailable as exc:
                    failure = failure or exc
                else:
                    del self._pending[index]
        if failure is not None:
            raise failure

    def newest(self) -> Mark | None:
        """The newest head of this log any readable witness holds (None when none holds one).

        A witness that holds another log's heads is :class:`WitnessShared` (a writer refuses to
        start: see docs/audit.md, Witnesses), one that cannot be read or holds a line that is
        not a head :class:`WitnessUnavailable`.
        """
        marks: list[Mark] = []
        for witness in self.witnesses:
            if not witness.readable:
                continue
            try:
                entries = witness.entries()
            except ValueError as exc:
                raise WitnessUnavailable(str(exc)) from None
            foreign = [(log, mark) for log, mark in entries if log is not None and log != self.log_id]
            if foreign:
                log, mark = max(foreign, key=lambda entry: entry[1].seq)
                raise WitnessShared(witness.name, log or "", mark.seq, self.log_id)
            marks.extend(mark for _, mark in entries)
        return max(marks, key=lambda m: m.seq, default=None)

    def close(self) -> None:
        """Close every witness."""
        for witness in self.witnesses:
            witness.close()


def open_witnesses(settings: Settings, urls: list[str] | None = None, log_id: str | None = None) -> Witnesses:
    """The witnesses ``urls`` name (default: the ``audit_witness`` setting) for the log ``log_id``."""
    chosen = settings.audit_witness.split() if urls is None else urls
    return Witnesses([open_witness(url) for url in chosen], log_id)


def witnessed_heads(urls: list[str]) -> list[Mark]:
    """Every head the readable witnesses ``urls`` hold, whichever log it names (see
    :func:`witnessed_heads_of`)."""
    return [mark for _, entries in _entries(urls) for _, mark in entries]


def witnessed_export_heads(urls: list[str]) -> list[Mark]:
    """The heads the witnesses ``urls`` hold for an export, which names no log: its log is the
    one whose heads they hold (heads that name no log count as its own, see
    :func:`witnessed_heads_of`), and its chain must hold them.

    Raises :class:`ChainBroken` when they hold more than one log's heads (a witness is one log's),
    and what :func:`witnessed_heads_of` raises for a witness that cannot be read.
    """
    found = _entries(urls)
    logs = sorted({log for _, entries in found for log, _ in entries if log is not None})
    if len(logs) > 1:
        raise ChainBroken(
            0,
            f"the witnesses hold the heads of {len(logs)} audit logs ({', '.join(logs)}): an export"
            " names no log, so give only the witness of the log it was exported from",
        )
    return _heads_of(found, logs[0] if logs else None)


def witnessed_heads_of(urls: list[str], log_id: str | None) -> list[Mark]:
    """The heads of the log ``log_id`` the readable witnesses ``urls`` hold (heads that name no
    log were written before heads named theirs, and count as its own).

    ValueError for a write-only witness or a bad line; :class:`ChainBroken` for a witness that
    holds another log's heads, with or without this log's (this log was replaced, or the witness
    is another log's or shared), as a writer refuses such a witness;
    :class:`WitnessUnavailable` when one cannot be read (:class:`WitnessTorn`: its last line is
    torn). An empty witness holds nothing.
    """
    return _heads_of(_entries(urls), log_id)


def _heads_of(found: list[tuple[str, list[tuple[str | None, Mark]]]], log_id: str | None) -> list[Mark]:
    heads: list[Mark] = []
    for name, entries in found:
        own = [mark for log, mark in entries if log is None or log == log_id]
        foreign = [(log, mark) for log, mark in entries if log is not None and log != log_id]
        if foreign:
            # Writers never add a head to a witness holding another log's (they refuse to start),
            # so a witness holding both had heads appended by hand: a log deleted and started
            # again whose new heads were copied into the append-only witness would otherwise
            # verify on its own heads alone.
            log, mark = max(foreign, key=lambda entry: entry[1].seq)
            held = (
                f"holds another audit log's heads (log {log}, up to record {mark.seq}) beside this"
                f" log's (log {log_id or 'unnamed'})"
                if own
                else f"holds no head of this audit log (log {log_id or 'unnamed'}), only another log's"
                f" (log {log}, up to record {mark.seq})"
            )
            raise ChainBroken(
                0,
                f"witness {name} {held}: this log was deleted or replaced and started again, or the"
                " witness is another log's or shared by replicas",
            )
        heads.extend(own)
    return heads


def _entries(urls: list[str]) -> list[tuple[str, list[tuple[str | None, Mark]]]]:
    found = []
    for url in urls:
        witness = open_witness(url)
        try:
            if isinstance(witness, FileWitness) and not witness.path.exists():
                raise WitnessUnavailable(f"witness {witness.name}: no such file")
            found.append((witness.name, witness.entries()))
        finally:
            witness.close()
    return found
