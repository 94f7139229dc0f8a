"""One load-generator process: its share of keep-alive connections, each resolving batches.

Every answer is checked item by item against the values the tokens were made for. A failed
call (a status other than 200, a timeout, a dropped connection) is retried after 5/30/60/120 s
times ``time_scale``, as Marketing Cloud does; inbound-SMS Get Token calls that fail five times
are returned for the No Token Queue. With faults on, some calls are broken on purpose: the
connection dropped after the request, dropped mid-request, or stalled mid-request until the
platform times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing.synchronize
import random
import resource
import time
from array import array
from collections import Counter
from typing import Any

import msgspec

from ._http import (
    Authorizer,
    Connection,
    Credentials,
    Endpoint,
    HttpFailure,
    Response,
    TlsOptions,
    decode_json,
    request_head,
)
from ._session import RETRY_WAITS, STALLED_AFTER, TRIES, stalled_reason

__all__ = ["FAULT_KINDS", "WorkerArgs", "WorkerResult", "worker_main"]

FAULT_KINDS = ("drop-after-send", "drop-mid-request", "stall-mid-request")
# How long a stalled call waits before the simulated platform gives up on it.
_STALL_SECONDS = 2.0
_BODIES = 32  # distinct request bodies per process, drawn from the pool
_MAX_SAMPLES = 500_000


class WorkerArgs(msgspec.Struct, frozen=True):
    """What one generator process needs (sent to it pickled)."""

    url: str
    credentials: Credentials
    tls: TlsOptions
    resolve_path: str
    token_path: str
    pool: list[tuple[str, str]]
    sms: list[tuple[str, str]]
    connections: int
    batch: int
    duration: float | None
    count: int | None
    deadline: float
    time_scale: float
    fault_rate: float
    seed: int


class WorkerResult(msgspec.Struct):
    """What one generator process measured."""

    t0: float
    t1: float
    cpu_seconds: float
    starts: list[float]
    millis: list[float]
    failed: list[bool]
    tokens: int
    calls: int
    errors: dict[str, int]
    faults: dict[str, int]
    retries: int
    gave_up: int
    unfinished: int
    sms: int
    queued: list[dict[str, Any]]
    stopped: str | None = None


class _Item(msgspec.Struct):
    tokenRequestId: str | int  # noqa: N815 - Marketing Cloud's field name
    tokenValue: str | None = None  # noqa: N815


class _Unresolved(msgspec.Struct):
    tokenRequestId: str | int  # noqa: N815


class _Answer(msgspec.Struct):
    # Lenient, as the contract's sample servers are: an empty array may be left out.
    resolvedTokens: list[_Item] = msgspec.field(default_factory=list)  # noqa: N815
    unresolvedTokens: list[_Unresolved] = msgspec.field(default_factory=list)  # noqa: N815


_decode_answer = msgspec.json.Decoder(_Answer).decode


def _index(request_id: str | int, size: int, seen: bytearray, errors: Counter[str]) -> int | None:
    """The position an answered id stands for, or None (counted as unknown or duplicate)."""
    try:
        index = int(request_id)
    except ValueError:
        errors["unknown-id"] += 1
        return None
    if not 0 <= index < size:
        errors["unknown-id"] += 1
        return None
    if seen[index]:
        errors["duplicate-id"] += 1
        return None
    seen[index] = 1
    return index


def _check_answer(body: bytes, expected: list[str], errors: Counter[str]) -> int:
    """Count what is wrong with one resolve answer into ``errors``; the number of right items."""
    try:
        answer = _decode_answer(body)
    except msgspec.DecodeError:
        errors["bad-answer"] += 1
        return 0
    size = len(expected)
    seen = bytearray(size)
    right = 0
    for item in answer.resolvedTokens:
        index = _index(item.tokenRequestId, size, seen, errors)
        if index is not None:
            if item.tokenValue == expected[index]:
                right += 1
            else:
                errors["wrong-value"] += 1
    for unresolved in answer.unresolvedTokens:
        if _index(unresolved.tokenRequestId, size, seen, errors) is not None:
            errors["unresolved-known"] += 1
    missing = size - sum(seen)
    if missing:
        errors["missing-id"] += missing
    return right


class _Worker:
    def __init__(self, args: WorkerArgs) -> None:
        self.a = args
        self.endpoint = Endpoint.parse(args.url)
        self.ssl = args.tls.context()
        self.auth = Authorizer(args.credentials, args.tls)
        self.rng = random.Random(args.seed)  # noqa: S311 - load shape, not secrets
        self.bodies = self._bodies()
        self.remaining = args.count if args.count is not None else -1
        self.t0 = 0.0
        self.stop_at = float("inf")
        self.starts: array[float] = array("d")
        self.millis: array[float] = array("d")
        self.failed: list[bool] = []
        self.tokens = 0
        self.calls = 0
        self.errors: Counter[str] = Counter()
        self.faults: Counter[str] = Counter()
        self.retries = 0
        self.gave_up = 0
        self.unfinished = 0
        self.queued: list[dict[str, Any]] = []
        self.done_calls = 0
        self.timeouts_in_row = 0
        self.stopped: str | None = None
        self._heads: dict[tuple[str, int, str | None], bytes] = {}

    def _bodies(self) -> list[tuple[bytes, list[str]]]:
        out = []
        pool = self.a.pool
        for _ in range(_BODIES):
            picked = (
                self.rng.sample(pool, self.a.batch)
                if len(pool) >= self.a.batch
                else self.rng.choices(pool, k=self.a.batch)
            )
            doc = {
                "tokens": [{"tokenRequestId": str(i), "token": token} for i, (token, _) in enumerate(picked)]
            }
            out.append((msgspec.json.encode(doc), [value for _, value in picked]))
        return out

    async def _head(self, path: str, length: int) -> bytes:
        auth = await self.auth.header(timeout=self.a.deadline)
        key = (path, length, auth)
        head = self._heads.get(key)
        if head is None:
            headers = {"Content-Type": "application/json"}
            if auth is not None:
                headers["Authorization"] = auth
            if len(self._heads) > 4 * _BODIES:
                self._heads.clear()
            head = self._heads[key] = request_head("POST", self.endpoint, path, headers, length)
        return head

    def _over(self) -> bool:
        return time.monotonic() >= self.stop_at

    async def _call(
        self, slot: list[Connection | None], path: str, body: bytes
    ) -> tuple[Response | None, str | None]:
        """One try: (answer, None) or (None, what failed: an error kind or fault:KIND)."""
        head = await self._head(path, len(body))
        fault = None
        if self.a.fault_rate and self.rng.random() < self.a.fault_rate:
            fault = self.rng.choice(FAULT_KINDS)
        try:
            conn = slot[0]
            if conn is None or not conn.reusable:
                conn = slot[0] = await Connection.open(self.endpoint, self.ssl, self.a.deadline)
            if fault is None:
                return await conn.request(head, body, self.a.deadline), None
        except HttpFailure as exc:
            slot[0] = None
            return None, exc.kind
        # A fault: the simulated platform breaks the call on purpose.
        slot[0] = None
        if fault == "drop-after-send":
            conn.send_raw(head + body)
            await asyncio.sleep(0)
        else:
            conn.send_raw(head + body[: len(body) // 2])
            if fault == "stall-mid-request":
                await asyncio.sleep(min(self.a.deadline, _STALL_SECONDS))
        conn.close()
        return None, f"fault:{fault}"

    def _record(self, started: float, failed: bool) -> None:
        if len(self.millis) < _MAX_SAMPLES:
            self.starts.append(started - self.t0)
            self.millis.append((time.monotonic() - started) * 1000)
            self.failed.append(failed)

    def _given_up(self) -> bool:
        return self.stopped is not None

    def _count_timeouts(self, *, answered: bool, timed_out: bool) -> None:
        """Give up on the server after STALLED_AFTER timeouts in a row: every loop ends at its next call."""
        if answered:
            self.timeouts_in_row = 0
        elif timed_out:
            self.timeouts_in_row += 1
            if self.timeouts_in_row >= STALLED_AFTER and self.stopped is None:
                self.stopped = stalled_reason(self.a.deadline)
                self.stop_at = time.monotonic()
                self.remaining = 0

    async def _message(
        self, slot: list[Connection | None], path: str, body: bytes, *, resolve: bool = True
    ) -> tuple[Response | None, int, str]:
        """A call with Marketing Cloud's retries: (answer or None, tries, last failure)."""
        last = ""
        for tries in range(1, TRIES + 1):
            started = time.monotonic()
            answer, failure = await self._call(slot, path, body)
            self.calls += resolve
            self._count_timeouts(answered=answer is not None, timed_out=failure == "timeout")
            # Latency is the resolve calls' (send time); inbound-SMS calls are counted, not timed.
            if answer is not None and answer.status == 200:
                if resolve:
                    self._record(started, False)
                return answer, tries, ""
            if answer is not None:
                failure = f"status-{answer.status}"
                if resolve:
                    self._record(started, True)
            assert failure is not None
            if failure.startswith("fault:"):
                self.faults[failure[6:]] += 1
            else:
                self.errors[failure] += 1
            last = failure
            if self.stopped is not None:
                self.unfinished += 1
                return None, tries, last
            if tries == TRIES:
                break
            wait = RETRY_WAITS[tries - 1] * self.a.time_scale
            if self.a.duration is not None and time.monotonic() + wait > self.stop_at:
                self.unfinished += 1  # the run ends before the retry would be sent
                return None, tries, last
            self.retries += 1
            await asyncio.sleep(wait)
        self.gave_up += 1
        return None, TRIES, last

    async def _connection_loop(self, slot: list[Connection | None]) -> None:
        index = self.rng.randrange(len(self.bodies))
        while True:
            if self.remaining == 0 or (self.a.duration is not None and self._over()):
                return
            if self.remaining > 0:
                self.remaining -= 1
            index = (index + 1) % len(self.bodies)
            body, expected = self.bodies[index]
            answer, _, _ = await self._message(slot, self.a.resolve_path, body)
            if answer is not None:
                self.tokens += _check_answer(answer.body, expected, self.errors)
            self.done_calls += 1

    async def _sms_loop(self) -> None:
        slot: list[Connection | None] = [None]
        spacing = (self.a.duration / max(len(self.a.sms), 1)) if self.a.duration else 0.05
        for n, (token, value) in enumerate(self.a.sms):
            await asyncio.sleep(spacing * self.rng.random() if n == 0 else spacing)
            rid = f"sms-{self.a.seed}-{n}"
            body = msgspec.json.encode(
                {"tokenValues": [{"tokenRequestId": rid, "tokenValue": value, "tokenType": "MobileNumber"}]}
            )
            if self.stopped is not None:
                break
            answer, tries, last = await self._message(slot, self.a.token_path, body, resolve=False)
            if answer is None and self._given_up():
                break
            if answer is None:
                self.queued.append(
                    {"tokenRequestId": rid, "value": value, "tries": tries, "last_error": last}
                )
                continue
            try:
                doc = decode_json(answer.body)
                got = {str(i.get("tokenRequestId")): i.get("token") for i in doc["tokens"]}
            except (msgspec.DecodeError, KeyError, TypeError, AttributeError):
                self.errors["bad-answer"] += 1
                continue
            if got.get(rid) != token:
                self.errors["gettoken-changed"] += 1
        if slot[0] is not None:
            await slot[0].aclose()

    async def run(self, start: multiprocessing.synchronize.Event, ready: Any) -> WorkerResult:
        await self.auth.header(timeout=self.a.deadline)
        slots: list[list[Connection | None]] = [[None] for _ in range(self.a.connections)]

        async def warm(slot: list[Connection | None]) -> None:
            with contextlib.suppress(HttpFailure):
                slot[0] = await Connection.open(self.endpoint, self.ssl, self.a.deadline)

        await asyncio.gather(*(warm(s) for s in slots))
        ready()
        await asyncio.to_thread(start.wait)
        self.t0 = time.monotonic()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        if self.a.duration is not None:
            self.stop_at = self.t0 + self.a.duration
        tasks = [self._connection_loop(s) for s in slots]
        if self.a.sms:
            tasks.append(self._sms_loop())
        await asyncio.gather(*tasks)
        t1 = time.monotonic()
        after = resource.getrusage(resource.RUSAGE_SELF)
        await asyncio.gather(*(s[0].aclose() for s in slots if s[0] is not None))
        return WorkerResult(
            t0=self.t0,
            t1=t1,
            cpu_seconds=(after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime),
            starts=list(self.starts),
            millis=list(self.millis),
            failed=self.failed,
            tokens=self.tokens,
            calls=self.calls,
            errors=dict(self.errors),
            faults=dict(self.faults),
            retries=self.retries,
            gave_up=self.gave_up,
            unfinished=self.unfinished,
            sms=len(self.a.sms),
            queued=self.queued,
            stopped=self.stopped,
        )


def worker_main(
    args: WorkerArgs,
    start: multiprocessing.synchronize.Event,
    progress: Any,
    out: Any,
) -> None:
    """Process entry point: report ``ready``, wait for ``start``, run, put the result on ``out``."""
    with contextlib.suppress(ImportError):
        import uvloop  # noqa: PLC0415 - optional speed-up, as the server uses it

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    worker: _Worker | None = None

    async def main() -> WorkerResult:
        nonlocal worker
        worker = _Worker(args)

        async def publish() -> None:
            while True:
                await asyncio.sleep(0.2)
                progress.value = worker.done_calls if worker else 0

        publisher = asyncio.ensure_future(publish())
        try:
            return await worker.run(start, lambda: out.put(("ready", None)))
        finally:
            publisher.cancel()
            progress.value = worker.done_calls

    try:
        result = asyncio.run(main())
    except Exception as exc:  # noqa: BLE001 - reported to the parent as one line
        out.put(("error", f"{type(exc).__name__}: {exc}"))
        return
    out.put(("done", msgspec.msgpack.encode(result)))
