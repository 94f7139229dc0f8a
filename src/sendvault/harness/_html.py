"""The HTML report: one self-contained page (inline CSS and SVG, no script, no network asset)."""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence

from ._model import Check, CheckReport, Exchange, LatencyBin, LoadReport, TimelinePoint

__all__ = ["render_html", "svg_histogram", "svg_timeline"]

_W, _H, _PAD_L, _PAD_B, _PAD_T, _PAD_R = 640, 240, 56, 36, 16, 16
_COLORS = {"pass": "#15803d", "fail": "#b91c1c", "untested": "#a16207"}
BAR_COLOR = "#2563eb"
LINE_COLORS = {"p50": "#2563eb", "p99": "#d97706", "max": "#7c3aed"}
DEADLINE_COLOR = "#dc2626"

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;
color:#111827;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px}
.verdict{display:inline-block;padding:4px 12px;border-radius:6px;color:#fff;font-weight:700}
.pass{background:#15803d}.fail{background:#b91c1c}.untested{background:#a16207}
table{border-collapse:collapse;width:100%;max-width:1200px}
th,td{border-bottom:1px solid #e5e7eb;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6}.pill{padding:1px 8px;border-radius:10px;color:#fff;font-size:12px;font-weight:700}
code,pre{font:12px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace}
pre{background:#f9fafb;border:1px solid #e5e7eb;padding:8px;overflow:auto;max-height:320px;
white-space:pre-wrap}
.figures td:first-child{color:#4b5563;width:220px}.plots{display:flex;flex-wrap:wrap;gap:24px}
.plot{border:1px solid #e5e7eb;border-radius:6px;padding:8px}.muted{color:#6b7280}
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _two_digits(value: float) -> str:
    """``17.78`` -> ``18``, ``562.3`` -> ``560``, ``0.5623`` -> ``0.56``: two significant digits."""
    rounded = float(f"{value:.2g}")
    return f"{rounded:.0f}" if rounded >= 10 else f"{rounded:g}"


def _axis_label(ms: float) -> str:
    if ms >= 1000:
        return f"{_two_digits(ms / 1000)} s"
    return f"{_two_digits(ms)} ms"


def svg_histogram(bins: Sequence[LatencyBin], deadline_ms: float, title: str) -> str:
    """Bars of calls per latency bin (log-spaced bins), with the deadline marked when in range."""
    shown = [b for b in bins if b.count] or list(bins)
    if not shown:
        return _empty_plot(title)
    first = next(i for i, b in enumerate(bins) if b in shown)
    last = max(i for i, b in enumerate(bins) if b in shown)
    window = list(bins[first : last + 1])
    peak = max(b.count for b in window) or 1
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B
    bar_w = plot_w / len(window)
    parts = [_frame(title)]
    for i, b in enumerate(window):
        h = plot_h * b.count / peak
        x = _PAD_L + i * bar_w
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{_PAD_T + plot_h - h:.1f}" width="{max(bar_w - 2, 1):.1f}" '
            f'height="{h:.1f}" fill="{BAR_COLOR}">'
            f"<title>&le; {_e(_axis_label(b.upper_ms))}: {b.count}</title></rect>"
        )
    step = max(1, len(window) // 6)
    for i in range(0, len(window), step):
        x = _PAD_L + (i + 1) * bar_w
        parts.append(_text(x, _H - 12, _axis_label(window[i].upper_ms), anchor="middle"))
    parts.append(_text(_PAD_L - 6, _PAD_T + 10, str(peak), anchor="end"))
    parts.append(_text(_PAD_L - 6, _PAD_T + plot_h, "0", anchor="end"))
    lows = [0.0] + [b.upper_ms for b in window[:-1]]
    for i, b in enumerate(window):
        if lows[i] < deadline_ms <= b.upper_ms:
            x = _PAD_L + (i + 1) * bar_w
            parts.append(_vline(x, "deadline"))
    parts.append("</svg>")
    return "".join(parts)


def svg_timeline(
    points: Sequence[TimelinePoint], deadline_ms: float, title: str, *, per_call: bool = False
) -> str:
    """p50, p99 and max latency per second of the run (log scale), failures as red marks.

    With ``per_call`` each point is one call (the check report): one line, x counts calls.
    """
    if not points:
        return _empty_plot(title)
    values = [v for p in points for v in (p.p50_ms, p.p99_ms, p.max_ms) if v > 0]
    low = min(values, default=1.0)
    high = max([*values, 1.0])
    if deadline_ms <= high * 3:
        high = max(high, deadline_ms)
    lo, hi = math.log10(max(low / 2, 0.01)), math.log10(high * 1.5)
    span_t = max(points[-1].second - points[0].second, 1)
    plot_w, plot_h = _W - _PAD_L - _PAD_R, _H - _PAD_T - _PAD_B

    def xy(second: int, ms: float) -> tuple[float, float]:
        x = _PAD_L + plot_w * (second - points[0].second) / span_t
        y = _PAD_T + plot_h * (1 - (math.log10(max(ms, 10**lo)) - lo) / (hi - lo))
        return x, y

    series = {"each call": LINE_COLORS["p50"]} if per_call else LINE_COLORS
    parts = [_frame(title)]
    for name, color in series.items():
        attr = "p50" if per_call else name
        coords = [xy(p.second, getattr(p, f"{attr}_ms")) for p in points if p.calls]
        if coords:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2"/>')
            for x, y in coords if len(coords) == 1 else ():
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
    for p in points:
        if p.failed:
            x, _ = xy(p.second, 1)
            parts.append(
                f'<rect x="{x - 2:.1f}" y="{_PAD_T + plot_h - 8}" width="4" height="8" '
                f'fill="{DEADLINE_COLOR}">'
                f"<title>second {p.second}: {p.failed} failed</title></rect>"
            )
    if 10**lo <= deadline_ms <= 10**hi:
        _, y = xy(points[0].second, deadline_ms)
        parts.append(
            f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="{DEADLINE_COLOR}" '
            f'stroke-dasharray="6 4"/>'
        )
        parts.append(_text(_W - _PAD_R - 4, y - 4, "deadline", anchor="end", color=DEADLINE_COLOR))
    for exp in range(math.ceil(lo), math.floor(hi) + 1):
        _, y = xy(points[0].second, 10**exp)
        parts.append(_text(_PAD_L - 6, y + 4, _axis_label(10**exp), anchor="end"))
        parts.append(f'<line x1="{_PAD_L}" x2="{_W - _PAD_R}" y1="{y:.1f}" y2="{y:.1f}" stroke="#f3f4f6"/>')
    unit = "call " if per_call else ""
    suffix = "" if per_call else " s"
    parts.append(_text(_PAD_L, _H - 12, f"{unit}{points[0].second + per_call}{suffix}", anchor="start"))
    parts.append(_text(_W - _PAD_R, _H - 12, f"{unit}{points[-1].second + per_call}{suffix}", anchor="end"))
    legend_x = _PAD_L + 8
    for name, color in series.items():
        parts.append(f'<rect x="{legend_x}" y="{_PAD_T}" width="10" height="10" fill="{color}"/>')
        parts.append(_text(legend_x + 14, _PAD_T + 9, name, anchor="start"))
        legend_x += 14 + 7 * len(name) + 16
    parts.append("</svg>")
    return "".join(parts)


def _frame(title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" viewBox="0 0 {_W} {_H}" '
        f'role="img" aria-label="{_e(title)}"><rect width="{_W}" height="{_H}" fill="#ffffff"/>'
        f'<line x1="{_PAD_L}" y1="{_H - _PAD_B}" x2="{_W - _PAD_R}" y2="{_H - _PAD_B}" stroke="#9ca3af"/>'
        f'<line x1="{_PAD_L}" y1="{_PAD_T}" x2="{_PAD_L}" y2="{_H - _PAD_B}" stroke="#9ca3af"/>'
    )


def _text(x: float, y: float, text: str, *, anchor: str, color: str = "#374151") -> str:
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="11" fill="{color}" text-anchor="{anchor}">'
        f"{_e(text)}</text>"
    )


def _vline(x: float, label: str) -> str:
    return (
        f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_PAD_T}" y2="{_H - _PAD_B}" stroke="{DEADLINE_COLOR}" '
        f'stroke-dasharray="6 4"/>' + _text(x - 4, _PAD_T + 10, label, anchor="end", color=DEADLINE_COLOR)
    )


def _empty_plot(title: str) -> str:
    return _frame(title) + _text(_W / 2, _H / 2, "no answered call to plot", anchor="middle") + "</svg>"


def _exchange(ex: Exchange) -> str:
    outcome = ex.status if ex.status is not None else ex.error or "no answer"
    head = f"{_e(ex.method)} {_e(ex.url)} &rarr; {_e(outcome)}"
    if ex.ms is not None:
        head += f' <span class="muted">({ex.ms:g} ms)</span>'
    body = {
        k: v
        for k, v in (("sent", ex.sent), ("received", ex.received), ("headers", ex.headers))
        if v is not None
    }
    text = json.dumps(body, indent=2, ensure_ascii=False) if body else ""
    return f"<div>{head}</div>" + (f"<pre>{_e(text)}</pre>" if text else "")


def _check_row(check: Check) -> str:
    ev = check.evidence
    inner = "".join(f"<li>{_e(n)}</li>" for n in ev.notes)
    inner = f"<ul>{inner}</ul>" if inner else ""
    inner += "".join(_exchange(x) for x in ev.exchanges)
    details = f"<details><summary>{_e(ev.detail)}</summary>{inner}</details>" if inner else _e(ev.detail)
    color = _COLORS[check.status]
    return (
        f'<tr><td><span class="pill" style="background:{color}">{_e(check.status)}</span></td>'
        f'<td><code>{_e(check.id)}</code><br><span class="muted">{_e(check.title)}</span></td>'
        f"<td>{details}</td></tr>"
    )


def _figures(rows: list[tuple[str, str]]) -> str:
    return (
        '<table class="figures">'
        + "".join(f"<tr><td>{_e(k)}</td><td>{_e(v)}</td></tr>" for k, v in rows)
        + "</table>"
    )


def _check_plots(report: CheckReport) -> tuple[list[LatencyBin], list[TimelinePoint], float]:
    from .load import histogram  # noqa: PLC0415 - shared binning

    seen: list[float] = []
    shown: set[int] = set()
    for check in report.checks:
        for x in check.evidence.exchanges:
            # Checks share calls (one Get Token answer is evidence for several): plot each once.
            if x.ms is not None and x.status is not None and id(x) not in shown:
                shown.add(id(x))
                seen.append(x.ms)
    points = [TimelinePoint(i, 1, ms, ms, ms, 0) for i, ms in enumerate(seen)]
    return histogram(seen), points, 60_000.0


def render_html(report: CheckReport | LoadReport) -> str:
    """The whole page."""
    if isinstance(report, CheckReport):
        s = report.summary
        title = "sendvault harness check"
        verdict = s.verdict
        rows = [
            ("target", s.target),
            ("started", s.started),
            ("checks", f"{s.passed} passed, {s.failed} failed, {s.untested} untested"),
            ("duration", f"{s.seconds:g} s"),
            ("retries", str(s.retries)),
            (
                "No Token Queue",
                f"{s.no_token_queue.count} message(s)"
                + (f" in {s.no_token_queue.file}" if s.no_token_queue.file else ""),
            ),
        ]
        bins, points, deadline_ms = _check_plots(report)
        over_time = "latency of each call, in order (log scale)"
        per_call = True
    else:
        s2 = report.summary
        title = "sendvault harness load"
        verdict = s2.verdict
        lat = s2.latency_ms
        rows = [
            ("target", s2.target),
            ("started", s2.started),
            (
                "load",
                (
                    f"{s2.calls} resolve calls of {s2.batch} tokens on {s2.connections} connections, "
                    f"{s2.seconds:.1f} s"
                ),
            ),
            ("throughput", f"{s2.tokens_per_s:,.0f} tokens/s ({s2.calls_per_s:,.1f} calls/s)"),
            (
                "latency",
                f"p50 {lat.p50:,.1f} ms, p90 {lat.p90:,.1f} ms, p99 {lat.p99:,.1f} ms, max {lat.max:,.1f} ms",
            ),
            ("deadline", f"{lat.deadline:g} s: {'held' if s2.deadline_held else 'NOT held'}"),
            ("errors", ", ".join(f"{k} {v}" for k, v in sorted(s2.errors.items())) or "none"),
            ("retries / given up", f"{s2.retries} / {s2.gave_up}"),
            ("faults injected", ", ".join(f"{k} {v}" for k, v in sorted(s2.faults.items())) or "none"),
            ("inbound SMS / No Token Queue", f"{s2.sms} / {s2.no_token_queue.count}"),
            (
                "generator",
                f"{s2.generator.processes} processes, {s2.generator.cpu_seconds:.1f} CPU s, busiest "
                f"{s2.generator.busiest_process_percent:.0f}% of a core"
                + (f" - {s2.generator.warning}" if s2.generator.warning else ""),
            ),
        ]
        bins, points, deadline_ms = report.histogram, report.timeline, lat.deadline * 1000
        over_time = "latency per second of the run: p50, p99, max (log scale)"
        per_call = False
    table = "".join(_check_row(c) for c in report.checks)
    plots = (
        f'<div class="plots"><div class="plot"><div>latency histogram (calls per bin)</div>'
        f"{svg_histogram(bins, deadline_ms, 'latency histogram')}</div>"
        f'<div class="plot"><div>{_e(over_time)}</div>'
        f"{svg_timeline(points, deadline_ms, 'latency over time', per_call=per_call)}</div></div>"
    )
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<style>{_CSS}</style></head><body>"
        f'<h1>{_e(title)}</h1><p><span class="verdict {verdict}">{_e(verdict.upper())}</span></p>'
        f"{_figures(rows)}<h2>Checks</h2><table><tr><th>status</th><th>check</th><th>evidence</th></tr>{table}</table>"
        f"<h2>Latency</h2>{plots}"
        f'<p class="muted">Clear values are masked. Generated by sendvault harness.</p></body></html>\n'
    )
