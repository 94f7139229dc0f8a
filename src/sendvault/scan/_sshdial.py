"""The TCP connections of an SSH scan, opened at once and each sent the client's identification.

A scan is mostly waiting on the server: for each connection it forks, loads its host keys, and
sends its KEXINIT once it has the client's identification. Every connection of a scan (the first
and its spares) therefore starts on a thread of its own, identification included, as soon as
the scan knows where to go; `sendvault scan ssh` dials before it loads the scanner, so the
server works while the modules load. This module imports only what the interpreter has
built in (``_socket``, ``_thread``, ``time``): it is loaded before anything else.
"""

from __future__ import annotations

import _socket
import _thread
import time

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without the typing import
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    _T = TypeVar("_T")

__all__ = ["CLIENT_ID", "Arrivals", "Dial", "dial_scan", "spawn"]

CLIENT_ID = b"SSH-2.0-sendvault_scan\r\n"
# How many connections open beside the first, before its KEXINIT says how many are needed. Most
# servers hold an RSA key (read on the first) beside Ed25519 and ECDSA keys (whose names give
# their size) and offer group exchange (probed on a spare): one spare. Reading every key for its
# fingerprint takes one per key: two to four keys. An unused spare costs the server a process.
_SPARES, _SPARES_EVERY_KEY = 1, 3


def spawn(call: Callable[..., _T], *args: object, then: Callable[[], None] | None = None) -> Callable[[], _T]:
    """Start ``call(*args)`` on a thread of its own; the function returned waits for it, then
    returns what it returned or raises what it raised; ``then`` is called on that thread once it
    has. The thread is a daemon: a connection nobody needs never holds up the exit.
    (``_thread``: the threading module, and concurrent.futures with logging, were a tenth of a
    `scan ssh` process's start-up.)"""
    done = _thread.allocate_lock()
    done.acquire()
    returned: list[_T] = []
    raised: list[BaseException] = []

    def run() -> None:
        try:
            returned.append(call(*args))
        except BaseException as exc:  # noqa: BLE001 - raised again by result(), in the caller
            raised.append(exc)
        finally:
            done.release()
            if then is not None:
                then()

    def result() -> _T:
        with done:
            pass
        if raised:
            raise raised[0]
        return returned[0]

    _thread.start_new_thread(run, ())
    return result


class Arrivals:
    """Which of several spawned calls have finished, in the order they did (``arrived`` is their
    ``then``); ``wait()`` returns once one more has, or at once when one has since the last."""

    def __init__(self) -> None:
        self.order: list[int] = []
        self._more = _thread.allocate_lock()
        self._more.acquire()

    def arrived(self, index: int) -> None:
        """Call ``index`` has finished (on its thread)."""
        self.order.append(index)
        try:  # noqa: SIM105 - contextlib is not loaded on this path
            self._more.release()
        except RuntimeError:
            pass  # signalled already, not yet waited for: the waiter reads the whole order

    def wait(self) -> None:
        """Until a call has finished since the last wait."""
        self._more.acquire()


class Dial:
    """A TCP connection being opened on a thread; ``result()`` waits for it: the socket, its
    identification sent, or None when the server closed it first. The deadline for everything
    read from it starts now."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.result = spawn(_dial, host, port, timeout)


def _dial(host: str, port: int, timeout: float) -> _socket.socket | None:
    try:
        sock = _connect(host, port, timeout)
    except ConnectionResetError:
        return None  # accepted and closed at once: a close, as one after the identification
    try:
        # The identification and, later, a KEXINIT and the first key-exchange message go out
        # back to back: with Nagle's algorithm each waits for the server's delayed ACK (40 ms).
        sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        sock.sendall(CLIENT_ID)
    except (BrokenPipeError, ConnectionResetError):
        sock.close()
        return None  # the server closed first (Connection reports it as a close)
    except BaseException:
        sock.close()
        raise
    return sock


def _connect(host: str, port: int, timeout: float) -> _socket.socket:
    """A literal IP address is connected to as it is, without getaddrinfo (and the IDNA codec
    it imports); a name goes through ``socket.create_connection``, every address in turn."""
    for family in (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(family, host)
        except OSError:
            continue
        sock = _socket.socket(family, _socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
        return sock
    import socket  # noqa: PLC0415 - names only

    return socket.create_connection((host, port), timeout=timeout)


def dial_scan(host: str, port: int, timeout: float, *, fingerprints: bool = False) -> list[Dial]:
    """The connections one scan of ``host`` starts with: the first and its spares."""
    return [Dial(host, port, timeout) for _ in range(1 + (_SPARES_EVERY_KEY if fingerprints else _SPARES))]
