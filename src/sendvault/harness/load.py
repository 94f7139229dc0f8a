"""`sendvault harness load`: Marketing Cloud's send-time load, with every answer checked.

First the token pool is made through Get Token (as Marketing Cloud would have got its tokens),
then several generator processes keep ``connections`` keep-alive connections busy resolving
batches of ``batch`` tokens for ``duration`` seconds or ``count`` calls. The generator measures
its own CPU: a generator that saturates a core understates the server, and the report says so.
"""

from __future__ import annotations

import asyncio
import bisect
import datetime as dt
import functools
import math
import multiprocessing
import os
import queue
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from ._http import Authorizer, Endpoint, HttpFailure
from ._loadworker import WorkerArgs, WorkerResult, worker_main
from ._mask import Masker
from ._model import (
    Check,
    Evidence,
    Generator,
    LatencyBin,
    LatencySummary,
    LoadReport,
    LoadSummary,
    QueueSummary,
    TimelinePoint,
)
from ._session import NoTokenQueue, Session, Stalled, with_retries
from .checks import Target, Unreachable, refused, unreachable

__all__ = ["LOAD_CHECKS", "LoadOptions", "histogram", "run_load"]

LOAD_CHECKS: dict[str, tuple[str, str]] = {
    "load.correct": (
        "Every answer under load is right",
        "Each resolve answer holds every request id once, each with the value its token was made for.",
    ),
    "load.deadline": (
        "Every call is answered within the deadline",
        "No call took longer than the deadline (60 s unless --deadline) or timed out.",
    ),
    "load.errors": (
        "No call fails except those broken on purpose",
        "Every call is answered 200 on its first try, apart from calls --faults broke.",
    ),
    "load.no-token-queue": (
        "No inbound SMS goes to the No Token Queue",
        "Every inbound-SMS Get Token call (--sms) got its token within five tries.",
    ),
}
# A generator process busier than this share of one core is the bottleneck, not the server.
SATURATED = 0.9
# Four bins per decade from 0.1 ms; the last bin (about 17 min) holds anything slower.
_BOUNDS = [round(10 ** (e / 4), 3) for e in range(-4, 25)]


def _default_processes() -> int:
    return max(1, min(4, os.cpu_count() or 2))


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How `harness load` runs."""

    connections: int = 50
    batch: int = 500
    duration: float | None = None
    count: int | None = None
    pool: int = 10_000
    processes: int = 0  # 0: one per core, at most 4
    time_scale: float = 1.0
    fault_rate: float = 0.0
    sms: int = 0
    mobile_share: float = 0.2
    queue_file: Path | None = None
    seed: int = 0


def histogram(samples: list[float]) -> list[LatencyBin]:
    """Calls per latency bin (bounds log-spaced from 0.1 ms)."""
    counts = [0] * len(_BOUNDS)
    last = len(_BOUNDS) - 1
    for ms in samples:
        counts[min(bisect.bisect_left(_BOUNDS, ms), last)] += 1
    return [LatencyBin(bound, n) for bound, n in zip(_BOUNDS, counts, strict=True)]


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def _values(options: LoadOptions) -> list[tuple[str, str]]:
    """The pool's values, deterministic for a seed so that runs reuse their tokens."""
    mobiles = min(int(options.pool * options.mobile_share), 10_000)
    emails = [("Email", f"load.{options.seed}.{i}@example.com") for i in range(options.pool - mobiles)]
    numbers = [("MobileNumber", f"3363998{i:04d}") for i in range(mobiles)]  # ARCEP's fiction range
    # Mixed through the pool, as a real list would be: every Get Token batch holds both kinds.
    out: list[tuple[str, str]] = []
    for i in range(options.pool):
        share = (i + 1) * mobiles // options.pool - i * mobiles // options.pool
        out.append(numbers.pop() if share and numbers else emails.pop() if emails else numbers.pop())
    return out


async def _make_pool(target: Target, options: LoadOptions, endpoint: Endpoint) -> list[tuple[str, str, str]]:
    """(type, value, token) for the pool, made through Get Token with Marketing Cloud's retries."""
    values = _values(options)
    chunk = min(options.batch, 500)
    parts = [values[i : i + chunk] for i in range(0, len(values), chunk)]
    authorizer = Authorizer(target.credentials, target.tls)
    try:
        await authorizer.header(timeout=target.deadline)
    except HttpFailure as exc:
        raise unreachable(exc) from None
    ctx = target.tls.context()
    made: list[tuple[str, str, str]] = []
    sessions = [
        Session(endpoint, authorizer, ctx, deadline=target.deadline, masker=Masker())
        for _ in range(min(8, len(parts)))
    ]

    async def make(session: Session, mine: list[list[tuple[str, str]]]) -> None:
        for part in mine:
            body = {
                "tokenValues": [
                    {"tokenRequestId": str(i), "tokenValue": v, "tokenType": t}
                    for i, (t, v) in enumerate(part)
                ]
            }
            try:
                call, _ = await with_retries(
                    functools.partial(session.post, target.token_path, body), time_scale=options.time_scale
                )
            except Stalled as exc:
                raise Unreachable(
                    f"Get Token, making the token pool: {exc}",
                    "is the server overloaded, or --deadline short?",
                ) from None
            if call.failure is not None and call.failure.kind in ("connection", "tls"):
                raise unreachable(call.failure)
            if call.status in (401, 403):
                raise refused(call.status)
            if (
                call.status != 200
                or not isinstance(call.doc, dict)
                or not isinstance(call.doc.get("tokens"), list)
            ):
                raise Unreachable(f"Get Token, making the token pool, answered {call.describe()}")
            for item in call.doc["tokens"]:
                if isinstance(item, dict) and isinstance(item.get("token"), str):
                    rid = item.get("tokenRequestId")
                    # Only the ids sent ("0" to "499"); anything else a server made up is no token.
                    index = int(rid) if isinstance(rid, str) and rid.isdigit() and len(rid) < 6 else -1
                    if 0 <= index < len(part):
                        made.append((part[index][0], part[index][1], item["token"]))

    try:
        await asyncio.gather(*(make(s, parts[i :: len(sessions)]) for i, s in enumerate(sessions)))
    finally:
        await asyncio.gather(*(s.aclose() for s in sessions))
    if not made:
        raise Unreachable(
            "Get Token gave no token for the pool's values (none under a tokenRequestId it was sent)",
            "run `sendvault harness check` against the server first",
        )
    return made


def run_load(
    target: Target,
    options: LoadOptions,
    *,
    progress: Callable[[int, float], None] = lambda _done, _elapsed: None,
    pool_made: Callable[[int], None] = lambda _n: None,
) -> LoadReport:
    """Make the pool, run the generator processes, and judge the run."""
    try:
        endpoint = Endpoint.parse(target.url, want="https")
        target.tls.context()
    except ValueError as exc:
        raise Unreachable(str(exc), "--url takes the https:// URL of the server") from None
    started_wall = dt.datetime.now(dt.UTC)
    made = asyncio.run(_make_pool(target, options, endpoint))
    pool_made(len(made))
    pool = [(token, value) for _, value, token in made]
    mobiles = [(token, value) for kind, value, token in made if kind == "MobileNumber"]
    processes = max(1, min(options.processes or _default_processes(), options.connections))
    results = _spawn(target, options, pool=pool, mobiles=mobiles, processes=processes, progress=progress)
    return _report(
        target,
        options,
        endpoint,
        started_wall=started_wall,
        results=results,
        pool=len(made),
        processes=processes,
    )


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


def _spawn(
    target: Target,
    options: LoadOptions,
    *,
    pool: list[tuple[str, str]],
    mobiles: list[tuple[str, str]],
    processes: int,
    progress: Callable[[int, float], None],
) -> list[WorkerResult]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    out: multiprocessing.Queue[tuple[str, object]] = ctx.Queue()
    counters = [ctx.Value("q", 0) for _ in range(processes)]
    sms = [mobiles[i % len(mobiles)] for i in range(options.sms)] if mobiles else []
    workers = []
    for i in range(processes):
        args = WorkerArgs(
            url=target.url,
            credentials=target.credentials,
            tls=target.tls,
            resolve_path=target.resolve_path,
            token_path=target.token_path,
            pool=pool,
            sms=sms[i::processes],
            connections=_share(options.connections, processes, i),
            batch=options.batch,
            duration=options.duration,
            count=None if options.count is None else _share(options.count, processes, i),
            deadline=target.deadline,
            time_scale=options.time_scale,
            fault_rate=options.fault_rate,
            seed=options.seed * 1000 + i,
        )
        proc = ctx.Process(target=worker_main, args=(args, start, counters[i], out), daemon=True)
        proc.start()
        workers.append(proc)
    results: list[WorkerResult] = []
    try:
        _wait_ready(out, workers, processes)
        start.set()
        began = time.monotonic()
        while len(results) < processes:
            try:
                kind, payload = out.get(timeout=0.25)
            except queue.Empty:
                progress(sum(c.value for c in counters), time.monotonic() - began)
                if not any(p.is_alive() for p in workers):
                    raise Unreachable("a load generator process died") from None
                continue
            if kind == "error":
                raise Unreachable(f"load generator: {payload}")
            if kind == "done":
                assert isinstance(payload, bytes)
                results.append(msgspec.msgpack.decode(payload, type=WorkerResult))
        progress(sum(c.value for c in counters), time.monotonic() - began)
    finally:
        for proc in workers:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        out.close()
    return results


def _wait_ready(
    out: multiprocessing.Queue[tuple[str, object]],
    workers: Sequence[multiprocessing.process.BaseProcess],
    n: int,
) -> None:
    ready = 0
    deadline = time.monotonic() + 120
    while ready < n:
        try:
            kind, payload = out.get(timeout=0.5)
        except queue.Empty:
            if time.monotonic() > deadline or not all(p.is_alive() for p in workers):
                raise Unreachable("the load generator processes did not start") from None
            continue
        if kind == "error":
            raise Unreachable(f"load generator: {payload}")
        ready += kind == "ready"


def _report(
    target: Target,
    options: LoadOptions,
    endpoint: Endpoint,
    *,
    started_wall: dt.datetime,
    results: list[WorkerResult],
    pool: int,
    processes: int,
) -> LoadReport:
    t0 = min(r.t0 for r in results)
    t1 = max(r.t1 for r in results)
    wall = max(t1 - t0, 1e-9)
    millis: list[float] = []
    timeline: dict[int, list[float]] = {}
    failed_per_second: Counter[int] = Counter()
    for r in results:
        millis += r.millis
        offset = r.t0 - t0
        for start, ms, failed in zip(r.starts, r.millis, r.failed, strict=True):
            second = int(offset + start)
            timeline.setdefault(second, []).append(ms)
            if failed:
                failed_per_second[second] += 1
    ordered = sorted(millis)
    errors: Counter[str] = Counter()
    faults: Counter[str] = Counter()
    for r in results:
        errors.update(r.errors)
        faults.update(r.faults)
    calls = sum(r.calls for r in results)
    tokens = sum(r.tokens for r in results)
    deadline_ms = target.deadline * 1000
    latency = LatencySummary(
        p50=round(_percentile(ordered, 0.5), 2),
        p90=round(_percentile(ordered, 0.9), 2),
        p99=round(_percentile(ordered, 0.99), 2),
        max=round(ordered[-1] if ordered else 0.0, 2),
        deadline=target.deadline,
    )
    deadline_held = latency.max <= deadline_ms and not errors.get("timeout")
    queue_file = NoTokenQueue(options.queue_file)
    for r in results:
        for entry in r.queued:
            queue_file.put(
                entry["tokenRequestId"],
                entry["value"],
                "MobileNumber",
                keyword="STOP",
                tries=entry["tries"],
                last=entry["last_error"],
            )
    checks = _load_checks(
        errors,
        deadline_held=deadline_held,
        latency=latency,
        options=options,
        queue_file=queue_file,
        results=results,
    )
    generator = _generator(results, wall, processes, endpoint)
    # Pass when every check passed; without --sms the queue check is untested and does not count.
    counted = [c for c in checks if not (c.id == "load.no-token-queue" and not options.sms)]
    verdict = "pass" if all(c.status == "pass" for c in counted) else "fail"
    points = [
        TimelinePoint(
            second,
            len(values),
            round(_percentile(sorted(values), 0.5), 2),
            round(_percentile(sorted(values), 0.99), 2),
            round(max(values), 2),
            failed_per_second.get(second, 0),
        )
        for second, values in sorted(timeline.items())
    ]
    summary = LoadSummary(
        target=endpoint.url(),
        started=started_wall.isoformat(timespec="seconds"),
        seconds=round(wall, 3),
        connections=options.connections,
        batch=options.batch,
        pool=pool,
        calls=calls,
        tokens=tokens,
        tokens_per_s=round(tokens / wall, 1),
        calls_per_s=round(sum(1 for r in results for f in r.failed if not f) / wall, 2),
        latency_ms=latency,
        deadline_held=deadline_held,
        errors=dict(errors),
        retries=sum(r.retries for r in results),
        gave_up=sum(r.gave_up for r in results),
        faults=dict(faults),
        sms=sum(r.sms for r in results),
        no_token_queue=QueueSummary(len(queue_file.entries), queue_file.write()),
        generator=generator,
        verdict=verdict,  # type: ignore[arg-type]
        stopped=next((r.stopped for r in results if r.stopped), None),
    )
    return LoadReport(checks, summary, histogram(millis), points)


def _load_checks(
    errors: Counter[str],
    *,
    deadline_held: bool,
    latency: LatencySummary,
    options: LoadOptions,
    queue_file: NoTokenQueue,
    results: list[WorkerResult],
) -> list[Check]:
    wrong = {
        k: v
        for k, v in errors.items()
        if k
        in (
            "wrong-value",
            "unresolved-known",
            "missing-id",
            "duplicate-id",
            "unknown-id",
            "bad-answer",
            "gettoken-changed",
        )
    }
    failed_calls = {k: v for k, v in errors.items() if k not in wrong}
    checks = []

    def put(check_id: str, status: str, detail: str) -> None:
        checks.append(Check(check_id, LOAD_CHECKS[check_id][0], status, Evidence(detail)))  # type: ignore[arg-type]

    if wrong:
        put(
            "load.correct",
            "fail",
            "wrong answers: " + ", ".join(f"{k} {v}" for k, v in sorted(wrong.items())),
        )
    elif sum(r.tokens for r in results) == 0:
        put("load.correct", "untested", "no answer came back to check")
    else:
        put("load.correct", "pass", f"{sum(r.tokens for r in results):,} tokens resolved to the right values")
    stopped = next((r.stopped for r in results if r.stopped), None)
    if stopped:
        put("load.deadline", "fail", f"{stopped}; the run ended there")
    elif deadline_held:
        put("load.deadline", "pass", f"slowest call {latency.max:,.1f} ms, deadline {latency.deadline:g} s")
    else:
        timeouts = errors.get("timeout", 0)
        put(
            "load.deadline",
            "fail",
            f"slowest answer {latency.max:,.1f} ms, {timeouts} call(s) timed out; "
            f"deadline {latency.deadline:g} s",
        )
    if failed_calls:
        gave_up = sum(r.gave_up for r in results)
        put(
            "load.errors",
            "fail",
            "failed tries: "
            + ", ".join(f"{k} {v}" for k, v in sorted(failed_calls.items()))
            + f"; given up after five tries: {gave_up}",
        )
    else:
        put(
            "load.errors",
            "pass",
            "every call answered 200 on its first try"
            + (" (apart from injected faults)" if options.fault_rate else ""),
        )
    if not options.sms:
        put("load.no-token-queue", "untested", "no inbound SMS sent (--sms N sends some)")
    elif queue_file.entries:
        put(
            "load.no-token-queue", "fail", f"{len(queue_file.entries)} inbound SMS went to the No Token Queue"
        )
    else:
        put("load.no-token-queue", "pass", f"{options.sms} inbound SMS got their tokens")
    return checks


def _generator(results: list[WorkerResult], wall: float, processes: int, endpoint: Endpoint) -> Generator:
    cpu = sum(r.cpu_seconds for r in results)
    busiest = max(r.cpu_seconds / max(r.t1 - r.t0, 1e-9) for r in results)
    cores = os.cpu_count() or 1
    saturated = busiest >= SATURATED
    warning = None
    if saturated:
        warning = (
            f"a generator process used {busiest:.0%} of a core: the generator may be the bottleneck, "
            "so the figures may understate the server; add --processes or run the harness on another machine"
        )
    elif endpoint.host in ("127.0.0.1", "localhost", "::1") and cpu / wall / cores > 0.25:
        warning = (
            f"the generator used {cpu / wall / cores:.0%} of this machine, which it shares with the server "
            "under test: the server had that much less"
        )
    return Generator(
        processes=processes,
        cpu_seconds=round(cpu, 2),
        busiest_process_percent=round(busiest * 100, 1),
        machine_percent=round(cpu / wall / cores * 100, 1),
        saturated=saturated,
        warning=warning,
    )
