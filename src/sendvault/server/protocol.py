"""uvicorn's HTTP protocol with the limits a stranger meets before the app sees a request.

uvicorn (httptools) has no deadline for a request's head or body, no bound on the head's size,
and no limit on connections per caller: a stranger could hold connections open by dripping
bytes, or grow a header list without end. This protocol adds, per connection:

- a deadline for the head (request line and headers), from the connection's start or the first
  byte of a kept-alive connection's next request; a head over ``max_head_bytes`` gets 431;
- a minimum body rate once the head is in (after a short grace, counted only while the server
  reads: a body the app has not asked for yet is never held against the caller), and a deadline
  for the whole body; a caller that stops reading its answer gets as long to resume;
- a cap on the connections of one caller address and on all of this worker's connections. At a
  cap, a new connection pushes out the oldest one that is not inside a request (one the app
  parked while its failing address waits its turn, then a dripped head, then an idle kept-alive
  one), so a stranger's sockets can never keep Marketing Cloud out; only when every connection
  of that address is busy is the new one refused (503).

The idle keep-alive deadline is uvicorn's own (``timeout_keep_alive``); the TLS handshake's is
the event loop's (see :mod:`sendvault.server.worker`). Answering a request without reading its
body (the app does so for strangers) is safe: the app then sends ``Connection: close`` and
uvicorn closes the connection once the answer is written, so the body is never read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from dataclasses import dataclass, field
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..api.metrics import METRICS

__all__ = ["ConnectionLimits", "ConnectionTable", "GuardedProtocol", "protocol_class"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# Before the head is complete nothing is known about the caller: a short grace, then the rate.
_BODY_GRACE = 2.0
_TICK = 0.5


def _plain(status: bytes, error: bytes, reason: bytes) -> bytes:
    body = b'{"error":"' + error + b'","reason":"' + reason + b'"}'
    return (
        b"HTTP/1.1 " + status + b"\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


_HEAD_TIMEOUT = _plain(b"408 Request Timeout", b"timeout", b"request head not received in time")
_HEAD_TOO_LARGE = _plain(b"431 Request Header Fields Too Large", b"too-large", b"request head too large")
_TOO_MANY = _plain(b"503 Service Unavailable", b"unavailable", b"too many connections from this address")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-connection and per-worker limits (see the settings of the same meaning)."""

    head_timeout: float = 10.0
    max_head_bytes: int = 16 * 1024
    body_timeout: float = 60.0
    body_min_rate: float = 8192.0
    per_address: int = 128
    total: int = 4096
    # Load balancers in `trusted_proxies`: every caller arrives from them, so no cap per address.
    exempt: tuple[Network, ...] = field(default_factory=tuple)


class ConnectionTable:
    """This worker's open connections by caller address: the caps, and saturation for /healthz."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._by_address: dict[str, dict[GuardedProtocol, None]] = {}
        self.count = 0

    def admit(self, conn: GuardedProtocol) -> bool:
        """Count ``conn`` in, pushing out an idle connection at a cap; False if it must be refused."""
        peers = self._by_address.setdefault(conn.peer, {})
        if len(peers) >= self.limits.per_address and not self._exempt(conn.peer):
            victim = _oldest_idle(peers)
            if victim is None:
                return False
            victim.push_out("address")
        if self.count >= self.limits.total:
            victim = _oldest_idle(c for group in self._by_address.values() for c in group)
            if victim is None:
                return False
            victim.push_out("total")
        peers[conn] = None
        self.count += 1
        return True

    def release(self, conn: GuardedProtocol) -> None:
        """Count ``conn`` out (idempotent)."""
        peers = self._by_address.get(conn.peer)
        if peers is not None and conn in peers:
            del peers[conn]
            self.count -= 1
            if not peers:
                del self._by_address[conn.peer]

    def saturation(self) -> str | None:
        """Why this worker cannot take more connections now, or None."""
        if (
            self.count >= self.limits.total
            and _oldest_idle(c for group in self._by_address.values() for c in group) is None
        ):
            return "connections"
        return None

    def _exempt(self, peer: str) -> bool:
        if not self.limits.exempt:
            return False
        try:
            ip = ipaddress.ip_address(peer)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in n for n in self.limits.exempt)


# Which connections make room at a cap, first to last; one inside a request never does.
_EVICTION_ORDER = {"parked": 0, "head": 1, "idle": 2}


def _oldest_idle(conns: object) -> GuardedProtocol | None:
    """The connection to push out: one parked by the app (a failing address waiting its turn),
    then a head still arriving, then an idle kept-alive one; oldest first within each."""
    best: GuardedProtocol | None = None
    best_key: tuple[int, float] | None = None
    for conn in conns:  # type: ignore[attr-defined]
        rank = _EVICTION_ORDER.get(conn.phase)
        if rank is None:
            continue
        key = (rank, conn.since)
        if best_key is None or key < best_key:
            best, best_key = conn, key
    return best


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing a head over the limit."""


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol with deadlines, size limits, connection caps and TLS details."""

    table: ClassVar[ConnectionTable]
    _tls: dict[str, str] | None = None
    _write_timer: asyncio.TimerHandle | None = None

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        obj = transport.get_extra_info("ssl_object")
        cipher = obj.cipher() if obj is not None else None
        self._tls = (
            {"version": str(obj.version()), "cipher": cipher[0]} if obj is not None and cipher else None
        )
        self.peer = self.client[0] if self.client else "?"
        self.phase = "head"
        self._in_head = True
        self.since = time.monotonic()
        self._head_bytes = 0
        self._head_size = 0
        self._too_large = False
        self._timer: asyncio.TimerHandle | None = None
        self._body_start = 0.0
        self._body_bytes = 0
        self._counted = False
        if not self.table.admit(self):
            METRICS.connection_refused("address-cap")
            transport.write(_TOO_MANY)
            transport.close()
            return
        self._counted = True
        self._arm(self.table.limits.head_timeout, self._head_late)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._write_timer is not None:
            self._write_timer.cancel()
        if self._counted:
            self.table.release(self)
            self._counted = False
        super().connection_lost(exc)

    def push_out(self, why: str) -> None:
        """Close this connection at once to make room for a new one (it was idle or dripping)."""
        METRICS.connection_refused(f"pushed-out-{why}")
        self._disarm()
        self.table.release(self)
        self._counted = False
        self.transport.abort()

    # -- head ------------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        # Counted from the bytes read, not from the parser's callbacks: httptools keeps a header
        # that is still arriving in its own buffer and reports it only once it is complete.
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if (
            self._in_head
            and self._head_bytes > self.table.limits.max_head_bytes
            and not self.transport.is_closing()
        ):
            self._refuse(_HEAD_TOO_LARGE, "head-too-large")

    def on_message_begin(self) -> None:
        self._in_head = True
        self._head_size = 0
        super().on_message_begin()
        extensions: dict[str, object] = {"sendvault.park": self._park}
        if self._tls is not None:
            extensions["tls"] = self._tls
        self.scope["extensions"] = extensions  # type: ignore[typeddict-item]
        if self.phase == "idle":
            # The next request of a kept-alive connection: its head has the same deadline.
            self.phase, self.since = "head", time.monotonic()
            self._arm(self.table.limits.head_timeout, self._head_late)

    def on_url(self, url: bytes) -> None:
        self._head_size += len(url)
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_size += len(name) + len(value) + 4
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm()
        if self._head_size > self.table.limits.max_head_bytes:
            # A whole head that came in one read: the byte count above never saw it arrive. The
            # exception stops the parser; uvicorn answers its parse errors, and so this one
            # (see send_400_response), and closes the connection.
            self._too_large = True
            raise _HeadTooLarge
        self.phase, self.since = "request", time.monotonic()
        self._in_head, self._head_bytes = False, 0
        if self._expects_body():
            self._body_start, self._body_bytes = time.monotonic(), 0
            self._arm(_TICK, self._body_check)
        super().on_headers_complete()

    def send_400_response(self, msg: str) -> None:
        if getattr(self, "_too_large", False):
            self._refuse(_HEAD_TOO_LARGE, "head-too-large")
            return
        super().send_400_response(msg)

    def _head_late(self) -> None:
        self._timer = None
        if self.phase != "request" and not self.transport.is_closing():
            self._refuse(_HEAD_TIMEOUT, "head-timeout")

    def _refuse(self, answer: bytes, reason: str) -> None:
        METRICS.connection_refused(reason)
        self._disarm()
        self.transport.write(answer)
        self.transport.close()

    def _park(self, waiting: bool) -> None:
        """The app says this request only waits (its address's turn to be checked): at a
        connection cap such a connection is the first to make room."""
        if waiting and self.phase == "request":
            self.phase = "parked"
        elif not waiting and self.phase == "parked":
            self.phase = "request"

    # -- body ------------------------------------------------------------------------------

    def _expects_body(self) -> bool:
        for name, value in self.headers:
            if name == b"content-length":
                return value.strip() not in (b"0", b"")
            if name == b"transfer-encoding":
                return True
        return False

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _body_check(self) -> None:
        self._timer = None
        if self.transport.is_closing() or self.cycle is None or not self.cycle.more_body:
            return
        limits = self.table.limits
        elapsed = time.monotonic() - self._body_start
        # While uvicorn has paused reading (the app has not asked for the body yet, or has
        # enough buffered), the caller is not the slow one.
        slow = (
            not self.flow.read_paused
            and elapsed > _BODY_GRACE
            and self._body_bytes < limits.body_min_rate * (elapsed - _BODY_GRACE)
        )
        if slow or elapsed > limits.body_timeout:
            METRICS.connection_refused("body-too-slow" if slow else "body-timeout")
            # The app is waiting for the body: closing tells it the caller is gone.
            self.transport.close()
            return
        self._arm(_TICK, self._body_check)

    # -- writing ---------------------------------------------------------------------------

    def pause_writing(self) -> None:
        # The caller stopped reading its answer: it gets as long as a body would to resume.
        super().pause_writing()
        self._write_timer = self.loop.call_later(self.table.limits.body_timeout, self._write_late)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_late(self) -> None:
        self._write_timer = None
        if not self.transport.is_closing():
            METRICS.connection_refused("answer-not-read")
            self.transport.abort()

    # -- after the answer ------------------------------------------------------------------

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.phase == "request" and not self.pipeline:
            self.phase, self.since = "idle", time.monotonic()

    # -- timers ----------------------------------------------------------------------------

    def _arm(self, delay: float, callback: object) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)  # type: ignore[arg-type]

    def _disarm(self) -> None:
        timer = getattr(self, "_timer", None)
        if timer is not None:
            timer.cancel()
            self._timer = None


def protocol_class(table: ConnectionTable) -> type[GuardedProtocol]:
    """A protocol class bound to this worker's connection table (uvicorn takes a class)."""
    return type("SendvaultProtocol", (GuardedProtocol,), {"table": table})


class _QuietParserErrors(logging.Filter):
    """uvicorn logs each unparsable request and each upgrade request (WebSocket, h2c), two lines
    for the latter; strangers could fill a log with them. Counted instead."""

    _COUNTED: ClassVar[dict[str, str]] = {
        "Invalid HTTP request received.": "unparsable",
        "Unsupported upgrade request.": "upgrade-refused",
    }

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        reason = self._COUNTED.get(message)
        if reason is not None:
            METRICS.connection_refused(reason)
            return False
        return not message.startswith("No supported WebSocket library detected.")


logging.getLogger("uvicorn.error").addFilter(_QuietParserErrors())
