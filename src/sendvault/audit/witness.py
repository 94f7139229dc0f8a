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
import json
import os
import socket
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Protocol

from .._pglink import alive, masked
from ..config import Settings
from ..errors import AuditUnavailable
from .export import head_document, parse_head
from .marks import Mark

__all__ = [
    "FileWitness",
    "PostgresWitness",
    "SyslogWitness",
    "Witness",
    "WitnessUnavailable",
    "Witnesses",
    "open_witness",
    "open_witnesses",
    "witnessed_heads",
]

_TABLE = "sendvault_audit_witness"


class WitnessUnavailable(AuditUnavailable):
    """A witness could not be written or read."""


class Witness(Protocol):
    """Somewhere signed heads are kept out of the insider's reach."""

    name: str
    readable: bool

    def send(self, head: Mark) -> None:
        """Write one head; raise :class:`WitnessUnavailable` when it is not written."""
        ...

    def heads(self) -> list[Mark]:
        """Every head this witness holds (readable witnesses only)."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


def _line(head: Mark) -> str:
    return json.dumps(head_document(head), separators=(",", ":"))


class FileWitness:
    """An append-only JSON-lines file."""

    readable = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = f"file://{path}"

    def send(self, head: Mark) -> None:
        """Append the head's line and fsync it."""
        data = (_line(head) + "\n").encode()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise WitnessUnavailable(f"witness {self.name}: {exc.strerror}") from None

    def heads(self) -> list[Mark]:
        """The heads of the file; a line that is not one makes the witness unusable (ValueError)."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []  # nothing delivered yet (verify names a missing file itself)
        except OSError as exc:
            raise WitnessUnavailable(f"witness {self.name}: {exc.strerror}") from None
        heads = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    heads.append(parse_head(line))
                except ValueError:
                    raise ValueError(f"witness {self.name}: line {number} is not a signed head") from None
        return heads

    def close(self) -> None:
        """Nothing is kept open."""


def _safe(url: str) -> str:
    """The URL without a password (for messages)."""
    return masked(url)


class PostgresWitness:
    """A table on another PostgreSQL server (psycopg 3, the ``postgres`` extra)."""

    readable = True

    def __init__(self, url: str) -> None:
        self._url = url
        self.name = _safe(url)
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
                    " sig BYTEA NOT NULL, ts_us BIGINT NOT NULL, received TIMESTAMPTZ NOT NULL DEFAULT now())"
                )
        return self._conn

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

    def send(self, head: Mark) -> None:
        """Insert the head as a row."""
        self._run(
            "insert",
            lambda conn: conn.execute(
                f"INSERT INTO {_TABLE} (seq, hash, sig, ts_us) VALUES (%s, %s, %s, %s)",  # noqa: S608 - constant
                (head.seq, head.hash, head.sig, head.ts_us),
            ),
        )

    def heads(self) -> list[Mark]:
        """Every row, oldest first."""
        rows = self._run(
            "read",
            lambda conn: conn.execute(f"SELECT seq, hash, sig, ts_us FROM {_TABLE} ORDER BY seq").fetchall(),  # noqa: S608
        )
        return [Mark(int(s), bytes(h), bytes(g), int(t)) for s, h, g, t in rows]

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

    def send(self, head: Mark) -> None:
        """Send one datagram (UDP: delivery is not confirmed; a send error stops the log)."""
        message = f"<134>sendvault-audit: {_line(head)}".encode()
        try:
            family = socket.AF_INET6 if ":" in self._address[0] else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.sendto(message, self._address)
        except OSError as exc:
            raise WitnessUnavailable(f"witness {self.name}: {exc.strerror or type(exc).__name__}") from None

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
    raise ValueError(f"witness {_safe(url)[:60]}: not a file:///, postgresql:// or syslog:// URL")


class Witnesses:
    """The witnesses of one writer, each with the newest head it has not yet received."""

    def __init__(self, witnesses: list[Witness]) -> None:
        self.witnesses = witnesses
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
                    self.witnesses[index].send(head)
                except WitnessUnavailable as exc:
                    failure = failure or exc
                else:
                    del self._pending[index]
        if failure is not None:
            raise failure

    def newest(self) -> Mark | None:
        """The newest head any readable witness holds (None when none holds one)."""
        marks = [m for w in self.witnesses if w.readable for m in w.heads()]
        return max(marks, key=lambda m: m.seq, default=None)

    def close(self) -> None:
        """Close every witness."""
        for witness in self.witnesses:
            witness.close()


def open_witnesses(settings: Settings, urls: list[str] | None = None) -> Witnesses:
    """The witnesses ``urls`` name (default: the ``audit_witness`` setting)."""
    chosen = settings.audit_witness.split() if urls is None else urls
    return Witnesses([open_witness(url) for url in chosen])


def witnessed_heads(urls: list[str]) -> list[Mark]:
    """Every head the readable witnesses ``urls`` hold; ValueError for a write-only one or a bad
    line, :class:`WitnessUnavailable` when one cannot be read. An empty witness holds nothing."""
    heads: list[Mark] = []
    for url in urls:
        witness = open_witness(url)
        try:
            if isinstance(witness, FileWitness) and not witness.path.exists():
                raise WitnessUnavailable(f"witness {witness.name}: no such file")
            heads.extend(witness.heads())
        finally:
            witness.close()
    return heads
