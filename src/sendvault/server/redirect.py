"""The plain HTTP listener: every method and path gets 308 to the same path and query on HTTPS.

Nothing else is served over plain HTTP: no body is read, no API answer is given, so a client
that posts tokens to http:// learns the right URL without its payload ever being processed.
308 (not 301/302) keeps the method and body on the retry (RFC 9110 section 15.4.9).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket

__all__ = ["redirect_location", "start_redirect_server"]

_MAX_HEAD = 16 * 1024
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)(?::[0-9]{1,5})?$")


def redirect_location(
    target: str, host_header: str | None, fallback_host: str, https_port: int
) -> str | None:
    """The https:// URL for a request target, or None when the request is unusable."""
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
        host = match.group(1)
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{host}{port}{target}"


async def _handle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, public_host: str | None, https_port: int
) -> None:
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
        writer.close()
        return
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    host_header = next((ln.split(":", 1)[1] for ln in lines[1:] if ln.lower().startswith("host:")), None)
    sockname = writer.get_extra_info("sockname")
    fallback = public_host or (f"[{sockname[0]}]" if ":" in str(sockname[0]) else str(sockname[0]))
    location = None
    if len(parts) == 3 and parts[2].startswith("HTTP/"):
        location = redirect_location(parts[1], None if public_host else host_header, fallback, https_port)
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
) -> asyncio.Server:
    """Start the 308 listener (on ``sock`` if given, else on host:port)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(reader, writer, public_host, https_port)

    if sock is not None:
        return await asyncio.start_server(handler, sock=sock, limit=_MAX_HEAD)
    return await asyncio.start_server(handler, host, port, limit=_MAX_HEAD)
