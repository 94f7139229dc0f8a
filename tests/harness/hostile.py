"""A hostile token server for the harness tests: raw HTTP/1.1 over TLS, answering what a test says.

The fakes of tests/harness/fakes.py go through uvicorn, which keeps them honest HTTP. This one
writes bytes by hand, so a test can answer with anything a hostile or broken server could send:
rich markup and terminal escapes in its text, JSON nested 100 000 deep, bodies and headers
without end, one byte per second, ids that are lists. Sound by default (the contract from
:class:`tests.harness.fakes.FakeServer`'s memory); a test sets :attr:`Hostile.rule` to take over
some calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trustme
from tests.harness.fakes import _AUTH, FakeServer

__all__ = ["Hostile", "Request", "answer", "hostile_server"]


@dataclass
class Request:
    """One request the hostile server read."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def doc(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


# What a rule gives back: None (answer soundly), the bytes of a whole answer, or a coroutine
# function that writes to the connection itself (for drips and floods).
Writer = Callable[[asyncio.StreamWriter], Awaitable[None]]
Reply = bytes | Writer | None


def answer(status: int, body: Any, *, headers: dict[str, str] | None = None, raw: bool = False) -> bytes:
    """A whole HTTP/1.1 answer: ``body`` JSON-encoded unless ``raw`` (then bytes or text)."""
    payload = (body if isinstance(body, bytes) else str(body).encode()) if raw else json.dumps(body).encode()
    lines = [
        f"HTTP/1.1 {status} X",
        "Content-Type: application/json",
        f"Content-Length: {len(payload)}",
        "Strict-Transport-Security: max-age=31536000",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + payload


class Hostile:
    """The server: an asyncio loop in a background thread; :attr:`rule` decides each answer."""

    def __init__(self, workdir: Path) -> None:
        ca = trustme.CA()
        self.ca_file = workdir / "hostile-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self._ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("127.0.0.1").configure_cert(self._ctx)
        self.brain = FakeServer(frozenset())
        self.rule: Callable[[Request], Reply] | None = None
        self.extra_headers: dict[str, str] = {}
        self.requests: list[Request] = []
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hostile-server", daemon=True)

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self._ctx, limit=1 << 20)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        with contextlib.suppress(Exception):
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                request = Request(method, path, headers, body)
                self.requests.append(request)
                reply = self.rule(request) if self.rule is not None else None
                if reply is None:
                    reply = await self._sound(request)
                if isinstance(reply, bytes):
                    writer.write(reply)
                    await writer.drain()
                else:
                    await reply(writer)
                    return
        with contextlib.suppress(Exception):
            writer.close()

    async def _sound(self, request: Request) -> bytes:
        if request.headers.get("authorization") != _AUTH:
            return answer(401, {"error": "unauthorized"})
        if request.path == "/v1/mc/tokens":
            status, doc = self.brain.get_token(request.doc)
            return answer(status, doc, headers=self.extra_headers)
        if request.path == "/v1/mc/resolve":
            status, doc = await self.brain.resolve(request.doc)
            return answer(status, doc, headers=self.extra_headers)
        return answer(404, {"error": "not found"})

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the hostile server did not start")

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in self._writers:
                writer.transport.abort()
            current = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not current]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)
            if self._server is not None:
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()


def hostile_server(workdir: Path) -> Iterator[Hostile]:
    """Start the hostile server, yield it, stop it."""
    server = Hostile(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()
