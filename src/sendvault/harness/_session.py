"""One simulated Marketing Cloud account talking to a server: calls, retries, evidence.

A :class:`Session` keeps one keep-alive connection (opened again when the server closes it),
adds the Authorization header, times every call against the deadline and records each call as
masked evidence. Retries follow Marketing Cloud: after a 4xx, a 5xx, a timeout or a dropped
connection, try again after 5 s, 30 s, 60 s and 120 s (times ``time_scale``); a Get Token call
for an inbound SMS that fails five times goes to the No Token Queue.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from .._fs import write_atomic
from ._http import Authorizer, Connection, Endpoint, HttpFailure, Response, decode_json, request_head
from ._mask import Masker, clean, mask_value
from ._model import Exchange

__all__ = [
    "RETRY_WAITS",
    "STALLED_AFTER",
    "TRIES",
    "Call",
    "NoTokenQueue",
    "Session",
    "Stalled",
    "stalled_reason",
    "with_retries",
]

# Marketing Cloud's schedule after a failed call, in seconds; five tries in all.
RETRY_WAITS = (5.0, 30.0, 60.0, 120.0)
TRIES = len(RETRY_WAITS) + 1
# Calls in a row that got no answer within the deadline before the harness gives up on a server
# (a server that drips its answers would otherwise hold a run for an hour of deadlines).
STALLED_AFTER = 3


def stalled_reason(deadline: float) -> str:
    """Why the harness gave up on a server."""
    return (
        f"the server did not answer {STALLED_AFTER} calls in a row within the {deadline:g} s deadline: "
        "gave up on it"
    )


class Stalled(Exception):
    """The server let :data:`STALLED_AFTER` calls in a row time out: the harness gives up on it."""


@dataclass(slots=True)
class Call:
    """One call's outcome: the answer or the failure, the decoded JSON, and its evidence."""

    response: Response | None
    failure: HttpFailure | None
    doc: Any
    exchange: Exchange
    ms: float

    @property
    def status(self) -> int | None:
        """The HTTP status, or None when nothing came back."""
        return None if self.response is None else self.response.status

    @property
    def ok(self) -> bool:
        """A 200 with a JSON body."""
        return self.status == 200 and self.doc is not None

    def describe(self) -> str:
        """``200``, ``500`` or what went wrong, for a detail line."""
        if self.failure is not None:
            return self.failure.detail
        if self.status == 200 and self.doc is None:
            return "HTTP 200 with a body that is not JSON"
        return f"HTTP {self.status}"


class Session:
    """Calls to one server as one Marketing Cloud account."""

    def __init__(
        self,
        endpoint: Endpoint,
        authorizer: Authorizer,
        ssl_context: ssl.SSLContext | None,
        *,
        deadline: float,
        masker: Masker,
    ) -> None:
        self.endpoint = endpoint
        self.authorizer = authorizer
        self.ssl_context = ssl_context
        self.deadline = deadline
        self.masker = masker
        self.calls = 0
        self.timeouts_in_row = 0
        self.last_headers: dict[str, str] = {}
        self._conn: Connection | None = None

    async def _connection(self) -> Connection:
        if self._conn is None or not self._conn.reusable:
            self._conn = await Connection.open(self.endpoint, self.ssl_context, self.deadline)
        return self._conn

    async def post(
        self,
        path: str,
        body: Any,
        *,
        authorization: str | bool | None = True,
        content_type: str = "application/json",
    ) -> Call:
        """POST ``body`` (a JSON document, or bytes/str sent as they are) to ``path``.

        ``authorization``: True for the session's credentials, False for none, or a header value.
        """
        raw = (
            body
            if isinstance(body, bytes)
            else body.encode()
            if isinstance(body, str)
            else msgspec.json.encode(body)
        )
        headers = {"Content-Type": content_type, "Accept": "application/json"}
        if authorization is True:
            value = await self.authorizer.header(timeout=self.deadline)
            if value is not None:
                headers["Authorization"] = value
        elif isinstance(authorization, str):
            headers["Authorization"] = authorization
        head = request_head("POST", self.endpoint, path, headers, len(raw))
        self.calls += 1
        started = time.perf_counter()
        response: Response | None = None
        failure: HttpFailure | None = None
        try:
            conn = await self._connection()
            response = await conn.request(head, raw, self.deadline)
        except HttpFailure as exc:
            failure = exc
            self._conn = None
        ms = (time.perf_counter() - started) * 1000
        if failure is not None and failure.kind == "timeout":
            self.timeouts_in_row += 1
            if self.timeouts_in_row >= STALLED_AFTER:
                raise Stalled(stalled_reason(self.deadline))
        else:
            self.timeouts_in_row = 0
        doc = None
        if response is not None:
            self.last_headers = response.headers
            try:
                doc = decode_json(response.body) if response.body else None
            except msgspec.DecodeError:
                doc = None
        exchange = Exchange(
            "POST",
            self.endpoint.url(path),
            status=response.status if response else None,
            ms=round(ms, 1),
            sent=self.masker.json(_as_json(raw)),
            received=None
            if response is None
            else self.masker.json(doc if doc is not None else _text(response.body)),
            error=clean(failure.detail) if failure else None,
        )
        return Call(response, failure, doc, exchange, ms)

    async def aclose(self) -> None:
        """Close the connection."""
        if self._conn is not None:
            await self._conn.aclose()
            self._conn = None


def _as_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return _text(raw)


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


async def with_retries(
    attempt: Callable[[], Awaitable[Call]],
    *,
    time_scale: float,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    good: Callable[[Call], bool] = lambda call: call.status == 200,
) -> tuple[Call, int]:
    """Call until ``good`` or five tries, waiting 5/30/60/120 s (scaled) between; (last call, tries)."""
    call = await attempt()
    tries = 1
    for wait in RETRY_WAITS:
        if good(call):
            break
        await sleep(wait * time_scale)
        call = await attempt()
        tries += 1
    return call, tries


@dataclass
class NoTokenQueue:
    """Inbound-SMS Get Token calls that failed five times, kept as Marketing Cloud would queue them.

    Written as JSON lines (values masked) to ``path`` when at least one message is queued.
    """

    path: Path | None
    entries: list[dict[str, Any]] = field(default_factory=list)

    def put(
        self, request_id: str, value: str, token_type: str, *, keyword: str, tries: int, last: str
    ) -> None:
        """Queue one message."""
        self.entries.append(
            {
                "queued_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "tokenRequestId": request_id,
                "tokenType": token_type,
                "tokenValue": mask_value(value),
                "keyword": keyword,
                "tries": tries,
                "last_error": last,
            }
        )

    def write(self) -> str | None:
        """Write the queue file (only when something is queued); its path, or None."""
        if not self.entries or self.path is None:
            return None
        lines = "".join(json.dumps(e, sort_keys=True) + "\n" for e in self.entries)
        write_atomic(self.path, lines.encode(), mode=0o644)  # never over a device, FIFO or folder
        return str(self.path)
