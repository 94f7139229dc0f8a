"""The harness's report: what `--json` prints, what the HTML page and the terminal show.

These structs are the JSON schema documented in docs/harness.md (``python -m
sendvault.harness.reference`` prints it; a test keeps the document current).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "Check",
    "CheckReport",
    "CheckSummary",
    "Evidence",
    "Exchange",
    "Generator",
    "LatencyBin",
    "LatencySummary",
    "LoadReport",
    "LoadSummary",
    "QueueSummary",
    "Status",
    "TimelinePoint",
]

Status = Literal["pass", "fail", "untested"]


class Exchange(msgspec.Struct, omit_defaults=True):
    """One call the harness made: what it sent and what came back, clear values masked."""

    method: str
    url: str
    status: int | None = None
    ms: float | None = None
    sent: Any = None
    received: Any = None
    headers: dict[str, str] | None = None
    error: str | None = None


class Evidence(msgspec.Struct, omit_defaults=True):
    """Why a check has its status: one line, the calls behind it, and notes."""

    detail: str
    exchanges: list[Exchange] = msgspec.field(default_factory=list)
    notes: list[str] = msgspec.field(default_factory=list)


class Check(msgspec.Struct):
    """One check's outcome. ``id`` is stable (docs/harness.md lists every id)."""

    id: str
    title: str
    status: Status
    evidence: Evidence


class QueueSummary(msgspec.Struct):
    """Inbound-SMS Get Token calls that still failed after five tries (the No Token Queue)."""

    count: int
    file: str | None = None


class CheckSummary(msgspec.Struct):
    """The verdict of `harness check`."""

    target: str
    started: str
    seconds: float
    passed: int
    failed: int
    untested: int
    verdict: Literal["pass", "fail"]
    retries: int
    no_token_queue: QueueSummary
    stopped: str | None = None


class CheckReport(msgspec.Struct, tag="check", tag_field="kind"):
    """What `harness check --json` prints."""

    checks: list[Check]
    summary: CheckSummary


class LatencySummary(msgspec.Struct):
    """Latency of answered calls, in milliseconds."""

    p50: float
    p90: float
    p99: float
    max: float
    deadline: float


class LatencyBin(msgspec.Struct, array_like=True):
    """Histogram bin: [upper bound in ms, number of calls]."""

    upper_ms: float
    count: int


class TimelinePoint(msgspec.Struct, array_like=True):
    """One second of the run: [second, calls answered, p50 ms, p99 ms, max ms, failed calls]."""

    second: int
    calls: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    failed: int


class Generator(msgspec.Struct):
    """The load generator's own cost: if it saturates, the figures understate the server."""

    processes: int
    cpu_seconds: float
    busiest_process_percent: float
    machine_percent: float
    saturated: bool
    warning: str | None = None


class LoadSummary(msgspec.Struct):
    """The verdict and figures of `harness load`."""

    target: str
    started: str
    seconds: float
    connections: int
    batch: int
    pool: int
    calls: int
    tokens: int
    tokens_per_s: float
    calls_per_s: float
    latency_ms: LatencySummary
    deadline_held: bool
    errors: dict[str, int]
    retries: int
    gave_up: int
    faults: dict[str, int]
    sms: int
    no_token_queue: QueueSummary
    generator: Generator
    verdict: Literal["pass", "fail"]
    stopped: str | None = None


class LoadReport(msgspec.Struct, tag="load", tag_field="kind"):
    """What `harness load --json` prints."""

    checks: list[Check]
    summary: LoadSummary
    histogram: list[LatencyBin]
    timeline: list[TimelinePoint]
