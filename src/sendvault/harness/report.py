"""Reports of the harness: a terminal summary, JSON (schema in docs/harness.md) and one HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._fs import write_atomic
from ._html import render_html
from ._mask import clean
from ._model import Check, CheckReport, LoadReport

__all__ = ["print_summary", "sanitized", "to_json", "write_html"]

_STYLE = {"pass": "green", "fail": "bold red", "untested": "yellow"}
# The last guard on every string of a report, whoever built it: no control character reaches
# a terminal, a file or a page, and nothing is longer than this.
_MAX_STRING = 4000

R = TypeVar("R", bound=CheckReport | LoadReport)


def _walk(value: Any) -> Any:
    if isinstance(value, str):
        return clean(value, _MAX_STRING)
    if isinstance(value, list):
        return [_walk(v) for v in value]
    if isinstance(value, dict):
        return {clean(str(k), _MAX_STRING): _walk(v) for k, v in value.items()}
    return value


def sanitized(report: R) -> R:
    """The report with every string made safe to show (see :func:`sendvault.harness._mask.clean`)."""
    return msgspec.convert(_walk(msgspec.to_builtins(report)), type=type(report))


def to_json(report: CheckReport | LoadReport) -> bytes:
    """The report as JSON (the documented schema), with a trailing newline."""
    return msgspec.json.format(msgspec.json.encode(sanitized(report)), indent=2) + b"\n"


def write_html(report: CheckReport | LoadReport, path: Path) -> None:
    """Write the self-contained HTML page (atomically: no half-written report; never over a device,
    FIFO or folder)."""
    write_atomic(path, render_html(sanitized(report)).encode(), mode=0o644)


def _checks_table(checks: list[Check]) -> Table:
    table = Table(show_header=True, header_style="bold", expand=False, show_lines=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("evidence")
    for check in checks:
        # Text, not a str: a server's words in the evidence are never read as rich markup.
        table.add_row(
            Text(check.status, style=_STYLE[check.status]), Text(check.id), Text(check.evidence.detail)
        )
    return table


def print_summary(report: CheckReport | LoadReport, console: Console) -> None:
    """The terminal summary: the checks, then the verdict (and, for load, the figures).

    Everything that may come from the server is printed as :class:`rich.text.Text`, never as
    markup, after :func:`sanitized` made its control characters visible.
    """
    report = sanitized(report)
    out = console.print
    out(_checks_table(report.checks))
    if isinstance(report, CheckReport):
        s = report.summary
        out(
            Text(
                f"{s.target}: {s.passed} passed, {s.failed} failed, {s.untested} untested in {s.seconds:g} s"
                + (f"; {s.retries} retries" if s.retries else "")
            )
        )
        if s.no_token_queue.count:
            out(Text(f"No Token Queue: {s.no_token_queue.count} message(s) in {s.no_token_queue.file}"))
        if s.stopped:
            out(Text.assemble(("stopped: ", "bold red"), s.stopped))
        _verdict(console, s.verdict, s.untested)
        return
    s2 = report.summary
    lat = s2.latency_ms
    out(
        Text.assemble(
            f"{s2.target}: {s2.calls} resolve calls of {s2.batch} on {s2.connections} connections "
            f"in {s2.seconds:.1f} s: ",
            (f"{s2.tokens_per_s:,.0f} tokens/s", "bold"),
            f" ({s2.calls_per_s:,.1f} calls/s)",
        )
    )
    out(
        Text(
            f"latency ms: p50 {lat.p50:,.1f}  p90 {lat.p90:,.1f}  p99 {lat.p99:,.1f}  max {lat.max:,.1f}  "
            f"(deadline {lat.deadline * 1000:,.0f})"
        )
    )
    if s2.errors:
        out(Text("errors: " + ", ".join(f"{k} {v}" for k, v in sorted(s2.errors.items()))))
    if s2.faults:
        out(Text("faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(s2.faults.items()))))
    if s2.retries or s2.gave_up:
        out(Text(f"retries {s2.retries}, calls given up after five tries {s2.gave_up}"))
    if s2.sms:
        queued = s2.no_token_queue.count
        where = f" in {s2.no_token_queue.file}" if s2.no_token_queue.file else ""
        out(Text(f"inbound SMS (Get Token): {s2.sms}, No Token Queue: {queued}{where}"))
    g = s2.generator
    out(
        Text(
            f"generator: {g.processes} processes, {g.cpu_seconds:.1f} CPU s, busiest process "
            f"{g.busiest_process_percent:.0f}% of a core, {g.machine_percent:.0f}% of the machine"
        )
    )
    if g.warning:
        out(Text.assemble(("warning: ", "bold yellow"), g.warning))
    if s2.stopped:
        out(Text.assemble(("stopped: ", "bold red"), s2.stopped))
    _verdict(console, s2.verdict, 0)


def _verdict(console: Console, verdict: str, untested: int) -> None:
    if verdict == "pass":
        console.print("[bold green]PASS[/bold green]")
    else:
        extra = " (untested checks count: pass what they need, or --skip them)" if untested else ""
        console.print(f"[bold red]FAIL[/bold red]{extra}")
