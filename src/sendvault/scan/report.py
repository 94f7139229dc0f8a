"""Report writers: a rich table for people, a JSON document for machines, and the exit code."""

from __future__ import annotations

from typing import Any

from .findings import RULES, CheckResult, Severity

__all__ = ["EXIT_AFFECTED", "EXIT_CLEAN", "EXIT_UNKNOWN", "exit_code", "to_json", "to_table"]

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
