"""The connection caps against a real server: one address cannot take more than its share, a
worker full of busy connections says so on /healthz, and other addresses are still served.

Callers come from different loopback addresses (127.0.0.2, 127.0.0.3: Linux routes all of
127.0.0.0/8 to the loopback), so the caps per address can be seen apart from the total.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest
from tests.server.attackers import Held, close_all, watch
from tests.server.conftest import DevServer, start_dev_server, stop_dev_server
from tests.server.helpers import auth_header, client_context

ENV = {
    "SENDVAULT_MAX_CONNECTIONS_PER_ADDRESS": "4",
    "SENDVAULT_MAX_CONNECTIONS": "6",
    "SENDVAULT_BODY_TIMEOUT_SECONDS": "4",
    "SENDVAULT_BODY_MIN_BYTES_PER_SECOND": "0",  # busy connections end by the deadline only
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    running = start_dev_server(tmp_path_factory.mktemp("caps") / "home", env=ENV)
    yield running
    assert "Traceback" not in stop_dev_server(running)


async def _open(server: DevServer, source: str) -> Held:
    reader, writer = await asyncio.open_connection(
        "127.0.0.1",
        server.https_port,
        ssl=client_context(server),
        server_hostname="localhost",
        local_addr=(source, 0),
    )
    return Held(reader, writer, opened=time.monotonic())


def _busy_head(server: DevServer) -> bytes:
    """An authenticated resolve whose body never comes: a connection inside a request."""
    return (
        "POST /v1/mc/resolve HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Authorization: {auth_header(server)}\r\nContent-Length: 100000\r\n\r\n{{"
    ).encode()


async def _busy(server: DevServer, source: str, count: int) -> list[Held]:
    conns = [await _open(server, source) for _ in range(count)]
    for conn in conns:
        conn.writer.write(_busy_head(server))
        await conn.writer.drain()
    await asyncio.sleep(0.2)  # the heads are in: these connections are inside a request
    return conns


async def _get(conn: Held, path: str) -> tuple[int, bytes]:
    """One request on a kept-alive connection; (status, body)."""
    conn.writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    await conn.writer.drain()
    head = await asyncio.wait_for(conn.reader.readuntil(b"\r\n\r\n"), timeout=10)
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    body = await asyncio.wait_for(conn.reader.readexactly(length), timeout=10)
    return int(head.split(b" ", 2)[1]), body


async def _answer_of_new(server: DevServer, source: str) -> bytes:
    """What a new connection from ``source`` gets for /healthz (b"" if it was closed unanswered)."""
    conn = await _open(server, source)
    try:
        conn.writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        await conn.writer.drain()
        await watch(conn, 10.0)
        return conn.answer
    finally:
        close_all([conn])


def test_an_address_with_every_connection_busy_gets_503_and_others_are_served(server: DevServer) -> None:
    async def attack() -> None:
        busy = await _busy(server, "127.0.0.2", 4)
        try:
            refused = await _answer_of_new(server, "127.0.0.2")
            assert refused.startswith(b"HTTP/1.1 503"), refused
            assert b"too many connections from this address" in refused
            served = await _answer_of_new(server, "127.0.0.3")
            assert served.startswith(b"HTTP/1.1 200"), served
        finally:
            close_all(busy)

    asyncio.run(attack())


def test_idle_connections_of_an_address_make_room_for_its_newcomers(server: DevServer) -> None:
    async def attack() -> None:
        idle = [await _open(server, "127.0.0.2") for _ in range(4)]
        try:
            for conn in idle:
                assert (await _get(conn, "/healthz"))[0] == 200  # now idle, kept alive
            served = await _answer_of_new(server, "127.0.0.2")
            assert served.startswith(b"HTTP/1.1 200"), served
            # The oldest idle connection made room: the server closed it.
            await watch(idle[0], 5.0)
            assert idle[0].closed_after is not None
        finally:
            close_all(idle)

    asyncio.run(attack())


def test_a_worker_full_of_busy_connections_is_saturated_on_healthz_until_they_end(
    server: DevServer,
) -> None:
    async def attack() -> None:
        probe = await _open(server, "127.0.0.4")
        assert (await _get(probe, "/healthz"))[0] == 200
        busy = await _busy(server, "127.0.0.2", 3) + await _busy(server, "127.0.0.3", 2)
        try:
            # Six connections, five inside a request; the probe's own request makes six.
            status, body = await _get(probe, "/healthz")
            assert status == 503
            assert json.loads(body) == {"status": "saturated", "full": "connections"}
            refused = await _answer_of_new(server, "127.0.0.5")
            assert refused.startswith(b"HTTP/1.1 503"), refused
            # The body deadline (4 s here) ends the busy connections: room again.
            await asyncio.gather(*(watch(c, 8.0) for c in busy))
            assert all(c.closed_after is not None for c in busy)
            healthy = await _answer_of_new(server, "127.0.0.5")
            assert healthy.startswith(b"HTTP/1.1 200"), healthy
        finally:
            close_all([*busy, probe])

    asyncio.run(attack())
