"""A stranger costs nothing: against a real server, strangers' slow bodies, dripped heads, silent
connections and huge heads never keep the real client out, and every such connection is closed
by a deadline."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time
from collections.abc import Iterator

import pytest
from tests.server.attackers import close_all, drip, open_many, timed, watch
from tests.server.conftest import DevServer, start_dev_server, stop_dev_server
from tests.server.helpers import auth_header, https_request

# Small enough that the attacks below would exhaust it, and short head deadlines for the test.
ENV = {
    "SENDVAULT_MAX_INFLIGHT": "16",
    "SENDVAULT_HEADER_TIMEOUT_SECONDS": "2",
    "SENDVAULT_BODY_TIMEOUT_SECONDS": "3",
    "SENDVAULT_KEEP_ALIVE_SECONDS": "2",
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    running = start_dev_server(tmp_path_factory.mktemp("hostile") / "home", env=ENV)
    yield running
    output = stop_dev_server(running)
    assert "Traceback" not in output


def _resolve(server: DevServer) -> tuple[int, dict[str, str], bytes]:
    headers = {"authorization": auth_header(server), "content-type": "application/json"}
    return https_request(
        server, "POST", "/v1/mc/resolve", {"tokens": [{"tokenRequestId": "1", "token": "t"}]}, headers
    )


def _slow_head(path: str, length: int, auth: str | None = None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: localhost",
        "Content-Type: application/json",
        f"Content-Length: {length}",
    ]
    if auth:
        lines.append(f"Authorization: {auth}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + b"{"


def test_the_real_client_is_served_while_300_strangers_hold_slow_bodies(server: DevServer) -> None:
    async def attack() -> None:
        strangers = await open_many(server, 300, _slow_head("/v1/mc/resolve", 1000))
        try:
            took, answer = await timed(lambda: _resolve(server))
            assert answer[0] == 200, answer  # type: ignore[index]
            assert took < 2.0
            # Each stranger was answered 401 without its body being read, and disconnected.
            await asyncio.gather(*(watch(c, 5.0) for c in strangers))
            # (A stranger whose address is at its connection cap with every connection inside a
            # request would get 503 instead; answers come fast enough that none do here.)
            assert all(c.answer.startswith(b"HTTP/1.1 401") for c in strangers)
            assert all(c.closed_after is not None for c in strangers)
            health = await asyncio.to_thread(https_request, server, "GET", "/healthz")
            assert health[0] == 200
        finally:
            close_all(strangers)

    asyncio.run(attack())


def test_the_real_client_is_served_while_300_strangers_hold_slow_oauth_forms(server: DevServer) -> None:
    # The OAuth form is the one body read before authentication (credentials may be in it): its
    # connections are busy as far as the caps know, and all come from the real client's address.
    async def attack() -> None:
        head = _slow_head("/oauth/token", 1000).replace(
            b"application/json", b"application/x-www-form-urlencoded"
        )
        strangers = await open_many(server, 300, head)
        try:
            took, answer = await timed(lambda: _resolve(server))
            assert answer[0] == 200, answer  # type: ignore[index]
            assert took < 2.0
        finally:
            close_all(strangers)

    asyncio.run(attack())


def test_slow_authenticated_bodies_saturate_healthz_until_the_body_deadline_frees_them(
    server: DevServer,
) -> None:
    async def attack() -> None:
        slow = await open_many(server, 16, _slow_head("/v1/mc/resolve", 100_000, auth_header(server)))
        try:
            await asyncio.sleep(0.3)
            health = await asyncio.to_thread(https_request, server, "GET", "/healthz")
            assert health[0] == 503
            assert json.loads(health[2])["status"] == "saturated"
            assert "retry-after" in health[1]
            # The minimum body rate closes them (2 s grace, then 8 KiB/s): the slots come back.
            await asyncio.gather(*(watch(c, 6.0) for c in slow))
            assert all(c.closed_after is not None and c.closed_after < 5.0 for c in slow)
            health = await asyncio.to_thread(https_request, server, "GET", "/healthz")
            assert health[0] == 200
            _took, answer = await timed(lambda: _resolve(server))
            assert answer[0] == 200  # type: ignore[index]
        finally:
            close_all(slow)

    asyncio.run(attack())


def test_dripped_heads_and_silent_connections_are_cut_and_never_keep_the_real_client_out(
    server: DevServer,
) -> None:
    async def attack() -> None:
        head = b"POST /v1/mc/resolve HTTP/1.1\r\nHost: localhost\r\nX-Padding: "
        drippers = await open_many(server, 300, head[:20])
        silent = await open_many(server, 20)
        # TCP only: no TLS handshake at all.
        bare = [await asyncio.open_connection("127.0.0.1", server.https_port) for _ in range(20)]
        start = time.monotonic()
        dripping = asyncio.create_task(drip(drippers, head[20:] + b"a" * 1000, 0.25, start + 6))
        try:
            await asyncio.sleep(0.5)
            took, answer = await timed(lambda: _resolve(server))
            assert answer[0] == 200, answer  # type: ignore[index]
            assert took < 2.0
            await asyncio.gather(*(watch(c, 6.0) for c in drippers + silent))
            # Dripped and silent heads: closed by the 2 s head deadline (or pushed out earlier
            # to make room), never left open.
            assert all(c.closed_after is not None and c.closed_after < 4.0 for c in drippers + silent)
            timed_out = [c for c in drippers + silent if c.answer.startswith(b"HTTP/1.1 408")]
            assert len(timed_out) >= 100
            for reader, _ in bare:
                # The TLS handshake deadline closes them (a reset or an end of stream).
                with contextlib.suppress(ConnectionError):
                    assert await asyncio.wait_for(reader.read(), timeout=6.0) == b""
        finally:
            dripping.cancel()
            close_all(drippers + silent)
            for _, writer in bare:
                writer.transport.abort()

    asyncio.run(attack())


def test_an_idle_kept_alive_connection_is_closed_after_keep_alive_seconds(server: DevServer) -> None:
    async def attack() -> None:
        (conn,) = await open_many(server, 1)
        conn.writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        await conn.writer.drain()
        answered = time.monotonic()
        await watch(conn, 8.0)
        assert conn.answer.startswith(b"HTTP/1.1 200")
        assert b"connection: close" not in conn.answer.lower()  # kept alive, then idle
        assert conn.closed_after is not None
        idle_for = conn.opened + conn.closed_after - answered
        assert 1.5 < idle_for < 4.0  # keep_alive_seconds is 2 here

    asyncio.run(attack())


def test_a_head_over_16_kib_gets_431_and_a_closed_connection(server: DevServer) -> None:
    async def attack() -> None:
        (conn,) = await open_many(server, 1)
        conn.writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        for _ in range(40):
            conn.writer.write(b"X-Junk: " + b"j" * 1000 + b"\r\n")
        with contextlib.suppress(ConnectionError):
            await conn.writer.drain()
        await watch(conn, 5.0)
        assert conn.answer.startswith(b"HTTP/1.1 431")
        assert conn.closed_after is not None

    asyncio.run(attack())


def test_a_head_over_16_kib_in_one_piece_gets_431_too(server: DevServer) -> None:
    async def attack() -> None:
        for head in (
            b"GET /" + b"a" * 20_000 + b" HTTP/1.1\r\nHost: localhost\r\n\r\n",
            b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n" + b"a: b\r\n" * 3000 + b"\r\n",
        ):
            (conn,) = await open_many(server, 1, head)
            await watch(conn, 5.0)
            assert conn.answer.startswith(b"HTTP/1.1 431")

    asyncio.run(attack())


def test_a_caller_that_never_reads_its_answers_is_cut_off(server: DevServer) -> None:
    # Pipelined calls whose answers (request ids are echoed) fill every buffer on the way.
    items = [{"tokenRequestId": f"{n:04d}" + "i" * 1000, "token": "unknown"} for n in range(500)]
    body = json.dumps({"tokens": items}).encode()
    head = (
        f"POST /v1/mc/resolve HTTP/1.1\r\nHost: localhost\r\nAuthorization: {auth_header(server)}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()

    async def attack() -> None:
        (conn,) = await open_many(server, 1)
        for _ in range(30):
            conn.writer.write(head + body)  # buffered by asyncio; never drained, never read
        await asyncio.sleep(3 + 3)  # answers stop being read; 3 s (body_timeout_seconds) later: cut
        await watch(conn, 20.0)
        assert conn.closed_after is not None
        assert conn.answer.count(b"HTTP/1.1 200") < 30
        close_all([conn])

    asyncio.run(attack())


def test_an_unknown_route_with_a_body_is_answered_without_reading_it(server: DevServer) -> None:
    async def attack() -> None:
        (conn,) = await open_many(server, 1, _slow_head("/nope", 10_000_000, auth_header(server)))
        await watch(conn, 5.0)
        assert conn.answer.startswith(b"HTTP/1.1 404")
        assert b"connection: close" in conn.answer.lower()
        assert conn.closed_after is not None
        assert conn.closed_after < 2.0

    asyncio.run(attack())


def _audit_rows(home: object, after: int) -> list[tuple[int, str, bytes, int]]:
    import sqlite3
    from pathlib import Path

    db = sqlite3.connect(f"file:{Path(str(home)) / 'audit.db'}?mode=ro", uri=True)
    try:
        return [
            (int(seq), str(event), bytes(body), int(size))
            for seq, event, body, size in db.execute(
                "SELECT seq, event, body, length(body) + length(request) + length(response)"
                " FROM audit_records WHERE seq > ? ORDER BY seq",
                (after,),
            )
        ]
    finally:
        db.close()


def _audit_bytes(home: object) -> int:
    """The audit database's size as its committed pages (what the file holds once checkpointed)."""
    import sqlite3
    from pathlib import Path

    db = sqlite3.connect(f"file:{Path(str(home)) / 'audit.db'}?mode=ro", uri=True)
    try:
        (pages,) = db.execute("PRAGMA page_count").fetchone()
        (size,) = db.execute("PRAGMA page_size").fetchone()
        return int(pages) * int(size)
    finally:
        db.close()


def test_strangers_cannot_fill_the_disk_through_the_audit_log(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    home = tmp_path_factory.mktemp("disk") / "home"
    # Failed logins are slowed (one check at a time, 0.1 s apart, scrypt for each Basic one);
    # this test is about what reaches the disk, so without the spacing.
    server = start_dev_server(home, env={"SENDVAULT_AUTH_FAILURE_SPACING_SECONDS": "0"})
    try:
        before = max([0] + [seq for seq, *_ in _audit_rows(home, 0)])
        audit_bytes = _audit_bytes(home)
        big = b'{"tokens":[' + b'{"tokenRequestId":"1","token":"x"},' * 115_000 + b"{}]}"
        assert 4_000_000 < len(big) < 4 * 1024 * 1024  # under max_body_bytes: today it is read

        async def flood() -> None:
            # Five 4 MB bodies without credentials; they are answered before they are read.
            for _ in range(5):
                (conn,) = await open_many(server, 1, _slow_head("/v1/mc/resolve", len(big))[:-1])
                try:
                    conn.writer.write(big)
                    await asyncio.wait_for(conn.writer.drain(), timeout=10)
                except (ConnectionError, TimeoutError):
                    pass
                await watch(conn, 5.0)
                assert conn.answer.startswith(b"HTTP/1.1 401")
                close_all([conn])
            # And 300 small ones, as fast as they come: bad Basic, bad Bearer, no credentials.
            heads = [
                _slow_head("/v1/mc/resolve", 1)[:-1],
                _slow_head("/v1/mc/tokens", 1, "Bearer x.y.z")[:-1],
                _slow_head("/v1/mc", 1, "Basic " + base64.b64encode(b"who:guess").decode())[:-1],
            ]
            for head, count in zip(heads, (250, 35, 15), strict=True):
                for start in range(0, count, 50):
                    conns = await open_many(server, min(50, count - start), head + b"{")
                    await asyncio.gather(*(watch(c, 10.0) for c in conns))
                    close_all(conns)

        asyncio.run(flood())
        time.sleep(0.5)  # the API's records gather 200 ms before they are written
    finally:
        output = stop_dev_server(server)
    # The access log is bounded the same way, with one line for what it left out.
    lines = output.splitlines()
    refused_lines = [line for line in lines if "sendvault.access" in line and "status=401" in line]
    assert len(refused_lines) <= 40
    assert "access lines of unauthenticated calls not written" in output
    # What the 305 refusals added to the audit database, its pages and indexes included: a few
    # kB each at most (the records themselves are far smaller).
    grown = _audit_bytes(home) - audit_bytes
    assert grown < 305 * 2048, grown
    rows = _audit_rows(home, before)
    stranger_rows = [r for r in rows if r[1] == "auth:fail"]
    singles = [r for r in stranger_rows if b'"summary":true' not in r[2]]
    summaries = [json.loads(r[2]) for r in stranger_rows if b'"summary":true' in r[2]]
    # A small, fixed-size record per refusal, and a bounded number of them; the rest summed up.
    assert all(size < 2048 for _, _, _, size in stranger_rows)
    assert len(singles) <= 40
    assert sum(s["counts"]["unrecorded"] for s in summaries) + len(singles) == 305
    assert sum(size for *_, size in rows) < 100_000


def _plain_exchange(server: DevServer, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        with contextlib.suppress(ConnectionError):
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)


def test_the_plain_listener_never_copies_a_callers_control_bytes_into_its_answer(server: DevServer) -> None:
    for target in (b"/x\nSet-Cookie:a=b", b"/x\rSet-Cookie:a=b", b"/\xff\x00z", b"/a\tb", b"/\x7f"):
        answer = _plain_exchange(server, b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400"), (target, answer)
        assert b"set-cookie" not in answer.lower()
    answer = _plain_exchange(server, b"GET /v1/mc/resolve?a=%0D%0A&b=[1] HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert (
        f"Location: https://localhost:{server.https_port}/v1/mc/resolve?a=%0D%0A&b=[1]\r\n".encode() in answer
    )


def test_the_plain_listener_cuts_dripped_heads_and_caps_connections_per_address(server: DevServer) -> None:
    async def attack() -> None:
        # 200 connections from one address, each sending part of a head: the cap (128) pushes
        # out the oldest, the head deadline (2 s here) closes the rest, and a real caller from
        # the same address still gets its 308 at once.
        conns = [await asyncio.open_connection("127.0.0.1", server.http_port) for _ in range(200)]
        opened = time.monotonic()
        for _, writer in conns:
            writer.write(b"GET / HTTP/1.1\r\nHost: loc")
        answer = await asyncio.to_thread(
            _plain_exchange, server, b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n"
        )
        assert answer.startswith(b"HTTP/1.1 308")

        async def closed_after(reader: asyncio.StreamReader) -> float:
            with contextlib.suppress(ConnectionError):
                await asyncio.wait_for(reader.read(), timeout=8.0)
            return time.monotonic() - opened

        try:
            times = await asyncio.gather(*(closed_after(reader) for reader, _ in conns))
            assert max(times) < 4.0
            assert sorted(times)[72] < 1.0  # the first 72 (and the real caller's room) made at once
        finally:
            for _, writer in conns:
                writer.transport.abort()

    asyncio.run(attack())
