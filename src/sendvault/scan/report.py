"""Report writers: a rich table for people, a JSON document for machines, and the exit code."""

from __future__ import annotations

from typing import Any

from .findings import RULES, CheckResult, Severity

__all__ = [
    "EXIT_AFFECTED",
    "EXIT_CLEAN",
    "EXIT_UNKNOWN",
    "exit_code",
    "to_html",
    "to_json",
    "to_sarif",
    "to_table",
]

EXIT_CLEAN, EXIT_AFFECTED, EXIT_UNKNOWN = 0, 1, 2


def to_json(results: list[CheckResult]) -> dict[str, Any]:
    """The documented JSON document: findings per target; passes only as counts."""
    return {
        "version": 1,
        "targets": [
            {
                "check": r.check,
                "target": r.target,
                "findings": [
                    {
                        "rule": f.rule,
                        "severity": f.severity.label,
                        "title": RULES[f.rule].title,
                        "detail": f.detail,
                    }
                    for f in r.findings
                ],
                "passed": r.passed,
                "unknown": r.unknown,
                "facts": r.facts,
            }
            for r in results
        ],
    }


def exit_code(results: list[CheckResult], fail_on: Severity) -> int:
    """1 when a finding is at or above ``fail_on``; else 2 when a check could not be made; else 0."""
    if any(f.severity >= fail_on for r in results for f in r.findings):
        return EXIT_AFFECTED
    if any(r.unknown for r in results):
        return EXIT_UNKNOWN
    return EXIT_CLEAN


def to_table(results: list[CheckResult]) -> Any:
    """A rich table of findings (and a line per clean target)."""
    from rich.table import Table  # noqa: PLC0415 - rich loads only for people

    table = Table("target", "rule", "severity", "detail", title="sendvault scan")
    for r in results:
        if not r.findings:
            note = f"{r.passed} check(s) passed" + (f", {len(r.unknown)} unknown" if r.unknown else "")
            table.add_row(r.target, "-", "ok", note)
        for f in r.findings:
            table.add_row(r.target, f.rule, f.severity.label, f.detail)
    return table


def to_sarif(results: list[CheckResult]) -> dict[str, Any]:
    """SARIF 2.1.0, for code-scanning dashboards: one run, rules from the registry."""
    level = {Severity.INFO: "note", Severity.LOW: "note", Severity.MEDIUM: "warning"}
    used = sorted({f.rule for r in results for f in r.findings})
    return {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "sendvault scan",
                        "rules": [
                            {
                                "id": rule,
                                "shortDescription": {"text": RULES[rule].title},
                                "properties": {
                                    "severity": RULES[rule].severity.label,
                                    "notice": RULES[rule].notice,
                                },
                            }
                            for rule in used
                        ],
                    }
                },
                "results": [
                    {
                        "ruleId": f.rule,
                        "level": level.get(f.severity, "error"),
                        "message": {"text": f.detail},
                        "locations": [{"physicalLocation": {"artifactLocation": {"uri": r.target}}}],
                    }
                    for r in results
                    for f in r.findings
                ],
            }
        ],
    }


def to_html(results: list[CheckResult]) -> str:
    """A self-contained HTML report (no external resources: it passes its own content check)."""
    from html import escape  # noqa: PLC0415

    rows = []
    for r in results:
        for f in r.findings:
            rows.append(
                f"<tr class='{f.severity.label}'><td>{escape(r.check)}</td><td>{escape(r.target)}</td>"
                f"<td>{escape(f.rule)}</td><td>{f.severity.label}</td><td>{escape(f.detail)}</td></tr>"
            )
        if not r.findings:
            rows.append(
                f"<tr class='ok'><td>{escape(r.check)}</td><td>{escape(r.target)}</td><td>-</td><td>ok</td>"
                f"<td>{r.passed} passed, {len(r.unknown)} unknown</td></tr>"
            )
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sendvault scan</title><style>"
        "body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
        ".high,.critical{background:#fdd}.medium{background:#ffe9c6}.ok{background:#e8f6e8}</style></head><body>"
        "<h1>sendvault scan</h1><table><tr><th>check</th><th>target</th><th>rule</th><th>severity</th>"
        "<th>detail</th></tr>" + "".join(rows) + "</table></body></html>\n"
    )
