"""The plain HTTP listener: every method and path gets 308 to the same path and query on HTTPS.

Nothing else is served over plain HTTP: no body is read, no API answer is given, so a client
that posts tokens to http:// learns the right URL without its payload ever being processed.
308 (not 301/302) keeps the method and body on the retry (RFC 9110 section 15.4.9).

The redirect names ``public_host`` when it is set. Otherwise it names the host the caller asked
for only when that is one of the listener's own names (the HTTPS certificate's DNS names and
addresses, the address the connection reached): a Host header is the caller's text, and
reflecting any of it would let a stranger's link send a browser, with its POST body, to a host
of the stranger's choosing. For any other Host the redirect names the address the caller reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
from collections import OrderedDict
from collections.abc import Callable, Iterable

__all__ = ["host_allowed", "redirect_location", "start_redirect_server"]

_MAX_HEAD = 16 * 1024
_HEAD_TIMEOUT = 10.0
# RFC 3986 characters of an origin- or absolute-form target (unreserved, reserved, '%').
_TARGET = re.compile(r"^[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+$")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::[0-9]{1,5})?$")

Names = Callable[[], Iterable[str]]


def host_allowed(host: str, names: Iterable[str]) -> bool:
    """Whether ``host`` (a Host header's name, without port) is one of ``names``.

    DNS names compare case-insensitively, a ``*.`` name covers exactly one more label, and
    addresses compare as addresses (``[::1]`` is ``::1``).
    """
    wanted = host.strip("[]").rstrip(".").lower()
    try:
        wanted_ip = ipaddress.ip_address(wanted)
    except ValueError:
        wanted_ip = None
    for name in names:
        own = name.strip("[]").rstrip(".").lower()
        if wanted_ip is not None:
            with contextlib.suppress(ValueError):
                if ipaddress.ip_address(own) == wanted_ip:
                    return True
            continue
        if own == wanted:
            return True
        if own.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == own[2:]:
            return True
    return False


def redirect_location(
    target: str,
    host_header: str | None,
    fallback_host: str,
    https_port: int,
    allowed: Callable[[str], bool] | None = None,
) -> str | None:
    """The https:// URL for a request target, or None when the request is unusable.

    ``host_header`` is used only if ``allowed`` says it is one of our names; otherwise (or
    without ``allowed``) ``fallback_host`` is.
    """
    if _TARGET.match(target) is None:
        return None
    if target.startswith(("http://", "https://")):
        # Absolute form: keep only its path and query.
        rest = target.split("://", 1)[1]
        target = "/" + rest.split("/", 1)[1] if "/" in rest else "/"
    if not target.startswith("/"):
        return None
    host = fallback_host
    if host_header:
        match = _HOST.match(host_header.strip())
        if match is None:
            return None
        if allowed is not None and allowed(match.group(1)):
            host = match.group(1)
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{host}{port}{target}"


def _reached(writer: asyncio.StreamWriter) -> str:
    """The address this connection reached, as a URL host."""
    address = str(writer.get_extra_info("sockname")[0])
    return f"[{address}]" if ":" in address else address


class _Connections:
    """Open connections by caller address: at a cap the oldest one (of the address, or of all) goes."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self._all: OrderedDict[asyncio.StreamWriter, str] = OrderedDict()
        self._by_address: dict[str, OrderedDict[asyncio.StreamWriter, None]] = {}

    def admit(self, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        address = str(peer[0]) if peer else "?"
        mine = self._by_address.setdefault(address, OrderedDict())
        if len(mine) >= self.per_address:
            self._push_out(next(iter(mine)))
        if len(self._all) >= self.total:
            self._push_out(next(iter(self._all)))
        mine[writer] = None
        self._all[writer] = address

    def release(self, writer: asyncio.StreamWriter) -> None:
        address = self._all.pop(writer, None)
        if address is None:
            return
        mine = self._by_address[address]
        mine.pop(writer, None)
        if not mine:
            del self._by_address[address]

    def _push_out(self, writer: asyncio.StreamWriter) -> None:
        self.release(writer)
        writer.transport.abort()


async def _handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    public_host: str | None,
    https_port: int,
    names: Names,
    *,
    head_timeout: float,
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=head_timeout)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    host_header = next((ln.split(":", 1)[1] for ln in lines[1:] if ln.lower().startswith("host:")), None)
    reached = _reached(writer)
    location = None
    if len(parts) == 3 and parts[2].startswith("HTTP/"):
        if public_host:
            location = redirect_location(parts[1], None, public_host, https_port)
        else:
            own = [*names(), reached]
            location = redirect_location(
                parts[1], host_header, reached, https_port, lambda host: host_allowed(host, own)
            )
    if location is None:
        answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    else:
        answer = (
            b"HTTP/1.1 308 Permanent Redirect\r\nLocation: "
            + location.encode("latin-1")
            + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )
    with contextlib.suppress(ConnectionError):
        writer.write(answer)
        await writer.drain()
    writer.close()


async def start_redirect_server(
    host: str,
    port: int,
    https_port: int,
    public_host: str | None = None,
    *,
    sock: socket.socket | None = None,
    names: Names = tuple,
    head_timeout: float = _HEAD_TIMEOUT,
    max_per_address: int = 128,
    max_connections: int = 4096,
) -> asyncio.Server:
    """Start the 308 listener (on ``sock`` if given, else on host:port).

    ``names`` gives the listener's own names (read at each request, so a reloaded certificate's
    names count at once).
    """
    connections = _Connections(max_per_address, max_connections)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.admit(writer)
        try:
            await _handle(reader, writer, public_host, https_port, names, head_timeout=head_timeout)
        finally:
            connections.release(writer)

    if sock is not None:
        return await asyncio.start_server(handler, sock=sock, limit=_MAX_HEAD)
    return await asyncio.start_server(handler, host, port, limit=_MAX_HEAD)
