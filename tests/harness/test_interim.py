"""Interim (1xx) answers: read past to the call's answer, as the platform's HTTP client does.

A server may send ``100 Continue`` or ``103 Early Hints`` before its answer (RFC 9110 §15.2);
the harness took the first of them for the answer and judged a sound server a failure. A server
that sends nothing but interim answers is cut off, not read forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest

from sendvault.harness._http import MAX_INTERIM, Connection, Endpoint, HttpFailure, request_head

FINAL = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{"ok":true}'
EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


@asynccontextmanager
async def _server(answer: bytes) -> AsyncIterator[Endpoint]:
    """A real HTTP server on 127.0.0.1 that sends ``answer`` to every request it reads."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield Endpoint.parse(f"http://127.0.0.1:{port}")
    finally:
        server.close()
        await server.wait_closed()


def _run(answer: bytes, calls: Callable[[Connection, bytes], Awaitable[object]]) -> object:
    async def main() -> object:
        async with _server(answer) as endpoint:
            conn = await Connection.open(endpoint, None, timeout=5)
            try:
                return await calls(conn, request_head("GET", endpoint, "/x", {}, 0))
            finally:
                conn.close()

    return asyncio.run(main())


def test_interim_answers_are_read_past_to_the_answer_and_the_connection_stays_usable() -> None:
    async def twice(conn: Connection, head: bytes) -> object:
        return [await conn.request(head, b"", timeout=5) for _ in range(2)]

    answers = _run(CONTINUE + EARLY_HINTS + FINAL, twice)
    assert isinstance(answers, list)
    for answer in answers:
        assert (answer.status, answer.body) == (200, b'{"ok":true}')
        assert "link" not in answer.headers  # the hint's headers are not the answer's


def test_a_server_that_sends_only_interim_answers_is_cut_off() -> None:
    async def once(conn: Connection, head: bytes) -> object:
        return await conn.request(head, b"", timeout=5)

    with pytest.raises(HttpFailure, match=f"more than {MAX_INTERIM} interim"):
        _run(EARLY_HINTS * (MAX_INTERIM + 1) + FINAL, once)
    # Up to the bound, the answer is still read.
    answer = _run(EARLY_HINTS * MAX_INTERIM + FINAL, once)
    assert getattr(answer, "status", None) == 200


def test_an_unasked_101_is_the_answer_and_the_connection_is_dropped_without_a_traceback() -> None:
    switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    errors: list[dict[str, object]] = []

    async def once(conn: Connection, head: bytes) -> object:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, context: errors.append(context))
        answer = await conn.request(head, b"", timeout=5)
        await asyncio.sleep(0.1)  # let the transport report anything it would
        return answer, conn.reusable

    answer, reusable = _run(switching + FINAL, once)  # type: ignore[misc]
    assert answer.status == 101
    assert reusable is False
    assert errors == []
