"""Raw TLS connections for hostile tests: slow heads, slow bodies, silence, as strangers send them."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tests.server.conftest import DevServer
from tests.server.helpers import client_context


@dataclass
class Held:
    """One open connection and what came back on it."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    answer: bytes = b""
    closed_after: float | None = None  # seconds from `opened` until the server closed it
    opened: float = 0.0


async def open_tls(server: DevServer, context: ssl.SSLContext | None = None) -> Held:
    """A connection that has completed its TLS handshake and sent nothing."""
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        server.https_port,
        ssl=context or client_context(server),
        server_hostname="localhost",
        limit=1 << 20,
    )
    return Held(reader, writer, opened=time.monotonic())


async def open_many(server: DevServer, count: int, first: bytes = b"") -> list[Held]:
    """``count`` connections, each having sent ``first``; handshakes in parallel batches."""
    context = client_context(server)
    held: list[Held] = []
    for start in range(0, count, 50):
        batch = await asyncio.gather(*(open_tls(server, context) for _ in range(min(50, count - start))))
        for conn in batch:
            if first:
                conn.writer.write(first)
        held.extend(batch)
    await asyncio.gather(*(c.writer.drain() for c in held if first), return_exceptions=True)
    return held


async def watch(conn: Held, seconds: float) -> None:
    """Read what the server sends until it closes the connection or ``seconds`` pass."""
    deadline = conn.opened + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            chunk = await asyncio.wait_for(conn.reader.read(65536), timeout=left)
            if not chunk:
                conn.closed_after = time.monotonic() - conn.opened
                return
            conn.answer += chunk
    except TimeoutError:
        return
    except (ConnectionError, ssl.SSLError):
        conn.closed_after = time.monotonic() - conn.opened


async def drip(conns: list[Held], data: bytes, every: float, until: float) -> None:
    """Send ``data`` one byte at a time on each connection, every ``every`` seconds, until ``until``."""
    i = 0
    while time.monotonic() < until:
        for conn in conns:
            if conn.closed_after is None and not conn.writer.is_closing():
                with contextlib.suppress(ConnectionError, RuntimeError):
                    conn.writer.write(data[i % len(data) : i % len(data) + 1])
        i += 1
        await asyncio.sleep(every)


def close_all(conns: list[Held]) -> None:
    for conn in conns:
        conn.writer.transport.abort()


async def timed(func: Callable[[], object]) -> tuple[float, object]:
    """Run a blocking client call in a thread; (seconds it took, its result)."""
    start = time.monotonic()
    result = await asyncio.to_thread(func)
    return time.monotonic() - start, result


def run(coro: Awaitable[object]) -> object:
    return asyncio.run(coro)  # type: ignore[arg-type]
