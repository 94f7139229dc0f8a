"""Report writers: a rich table for people, JSON, SARIF and HTML for machines, and the exit code.

Every writer shows what could not be checked beside the findings: an unknown is never a pass, so
no report may leave it out.
"""

from __future__ import annotations

from .findings import RULES, CheckResult, Finding, Severity

# A scan of one server reads only the JSON writer and the exit code: pathlib and typing load
# with the writers that need them (`scan ssh` is mostly start-up).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path, PurePath
    from typing import Any

__all__ = [
    "EXIT_AFFECTED",
    "EXIT_CLEAN",
    "EXIT_UNKNOWN",
    "exit_code",
    "table_rows",
    "to_html",
    "to_json",
    "to_sarif",
    "to_table",
]

EXIT_CLEAN, EXIT_AFFECTED, EXIT_UNKNOWN = 0, 1, 2


def _finding(f: Finding) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rule": f.rule,
        "severity": f.severity.label,
        "title": RULES[f.rule].title,
        "detail": f.detail,
    }
    if f.file is not None:
        out["file"] = f.file
    if f.line is not None:
        out["line"] = f.line
    return out


def to_json(results: list[CheckResult]) -> dict[str, Any]:
    """The documented JSON document: findings per target; passes only as counts."""
    return {
        "version": 1,
        "targets": [
            {
                "check": r.check,
                "target": r.target,
                "findings": [_finding(f) for f in r.findings],
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


def _summary(r: CheckResult) -> list[tuple[str, str, str]]:
    """(rule, severity, detail) rows after a target's findings: what was not checked when no
    ``*.unknown`` finding says it already, or the passes of a target without findings."""
    said = any(f.rule.endswith(".unknown") for f in r.findings)
    if r.unknown and not said:
        return [("-", "unknown", "could not check: " + "; ".join(r.unknown))]
    if not r.findings and not r.unknown:
        return [("-", "ok", f"{r.passed} check(s) passed")]
    return []


def table_rows(results: list[CheckResult]) -> list[tuple[str, str, str, str, str]]:
    """(check, target, rule, severity, detail): one row per finding, per unknown, per clean target.

    A ``*.unknown`` finding is the unknown's row (severity ``unknown``): it is not repeated.
    """
    rows = []
    for r in results:
        for f in r.findings:
            where = f" ({_place(f)})" if f.file is not None and f.file not in f.detail else ""
            severity = "unknown" if f.rule.endswith(".unknown") else f.severity.label
            rows.append((r.check, r.target, f.rule, severity, f.detail + where))
        rows += [(r.check, r.target, rule, severity, detail) for rule, severity, detail in _summary(r)]
    return rows


def to_table(results: list[CheckResult]) -> Any:
    """A rich table of findings, of what could not be checked, and a line per clean target."""
    from rich.table import Table  # noqa: PLC0415 - rich loads only for people
    from rich.text import Text  # noqa: PLC0415

    table = Table("check", "target", "rule", "severity", "detail", title="sendvault scan")
    for row in table_rows(results):
        table.add_row(*(Text(v) for v in row))  # what servers sent is text, never rich markup
    return table


def _place(f: Finding) -> str:
    return f"{f.file}:{f.line}" if f.line is not None else str(f.file)


# -- SARIF ----------------------------------------------------------------------------------------


def _root(r: CheckResult) -> Path | None:
    """The folder a file-based check scanned (its target, or a target file's folder)."""
    if r.check not in ("code", "content") or "://" in r.target:
        return None
    from pathlib import Path  # noqa: PLC0415

    root = Path(r.target)
    return root.parent if root.is_file() else root


class _Locations:
    """SARIF locations, with one ``uriBaseId`` per scanned folder (``SRCROOT``, ``SRCROOT2``...)."""

    def __init__(self) -> None:
        self.bases: dict[str, dict[str, Any]] = {}
        self._ids: dict[Path, str] = {}

    def of(self, r: CheckResult, f: Finding | None = None) -> dict[str, Any]:
        """Where a finding is: a file and line when it has them, else the endpoint or target."""
        if f is None or f.file is None:
            return {"logicalLocations": [{"fullyQualifiedName": r.target, "kind": "resource"}]}
        physical: dict[str, Any] = {"artifactLocation": self._artifact(r, f.file)}
        if f.line is not None:
            physical["region"] = {"startLine": f.line}
        return {"physicalLocation": physical}

    def _artifact(self, r: CheckResult, file: str) -> dict[str, str]:
        # Code-scanning dashboards place a result by its path in the repository, so a file under
        # the scanned folder is given relative to it; a crawled page keeps its URL.
        if "://" in file:
            return {"uri": file}
        from pathlib import Path, PurePath  # noqa: PLC0415

        root = _root(r)
        path = PurePath(file)
        if root is None:
            return {"uri": Path(file).absolute().as_uri() if path.is_absolute() else path.as_posix()}
        relative = self._under(path, root)
        if relative is None:
            return {"uri": Path(file).absolute().as_uri()}
        return {"uri": relative.as_posix(), "uriBaseId": self._base(root)}

    @staticmethod
    def _under(path: PurePath, root: Path) -> PurePath | None:
        # A finding's file may be given relative to the scanned folder, relative to the working
        # directory (as the folder itself was), or absolute.
        if not path.is_absolute():
            if not root.is_absolute() and path.is_relative_to(root):
                return path.relative_to(root)
            return path
        for base in (root.absolute(), root.resolve()):
            if path.is_relative_to(base):
                return path.relative_to(base)
        return None

    def _base(self, root: Path) -> str:
        key = root.resolve()
        if key not in self._ids:
            name = "SRCROOT" if not self._ids else f"SRCROOT{len(self._ids) + 1}"
            self._ids[key] = name
            self.bases[name] = {"uri": key.as_uri() + "/"}
        return self._ids[key]


def to_sarif(results: list[CheckResult]) -> dict[str, Any]:
    """SARIF 2.1.0, for code-scanning dashboards: one run, rules from the registry.

    File findings carry a physical location (relative to the scanned folder, with the line);
    endpoint findings a logical one (``host:port`` or the URL). Checks that could not be made
    are the run's tool notifications.
    """
    from .. import __version__  # noqa: PLC0415

    level = {Severity.INFO: "note", Severity.LOW: "note", Severity.MEDIUM: "warning"}
    used = sorted({f.rule for r in results for f in r.findings})
    locations = _Locations()
    sarif_results = [
        {
            "ruleId": f.rule,
            "ruleIndex": used.index(f.rule),
            "level": level.get(f.severity, "error"),
            "message": {"text": f.detail},
            "locations": [locations.of(r, f)],
        }
        for r in results
        for f in r.findings
    ]
    notifications = [
        {"level": "warning", "message": {"text": f"could not check: {what}"}, "locations": [locations.of(r)]}
        for r in results
        for what in r.unknown
    ]
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "sendvault scan",
                "version": __version__,
                "rules": [
                    {
                        "id": rule,
                        "shortDescription": {"text": RULES[rule].title},
                        "defaultConfiguration": {"level": level.get(RULES[rule].severity, "error")},
                        "properties": {"severity": RULES[rule].severity.label, "notice": RULES[rule].notice},
                    }
                    for rule in used
                ],
            }
        },
        "invocations": [{"executionSuccessful": True, "toolExecutionNotifications": notifications}],
        "results": sarif_results,
    }
    if locations.bases:
        run["originalUriBaseIds"] = locations.bases
    return {"$schema": "https://json.schemastore.org/sarif-2.1.0.json", "version": "2.1.0", "runs": [run]}


# -- HTML -----------------------------------------------------------------------------------------


def to_html(results: list[CheckResult]) -> str:
    """A self-contained HTML report (no external resources: it passes its own content check)."""
    from html import escape  # noqa: PLC0415

    def row(css: str, r: CheckResult, rule: str, severity: str, detail: str) -> str:
        return (
            f"<tr class='{css}'><td>{escape(r.check)}</td><td>{escape(r.target)}</td>"
            f"<td>{escape(rule)}</td><td>{escape(severity)}</td><td>{escape(detail)}</td></tr>"
        )

    rows = []
    for r in results:
        for f in r.findings:
            where = f" ({_place(f)})" if f.file is not None and f.file not in f.detail else ""
            rows.append(row(f.severity.label, r, f.rule, f.severity.label, f.detail + where))
        for rule, severity, detail in _summary(r):
            rows.append(row(severity if severity in ("ok", "unknown") else "", r, rule, severity, detail))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>sendvault scan</title><style>"
        "body{font-family:sans-serif}td,th{padding:4px 8px;border-bottom:1px solid #ddd}"
        ".high,.critical{background:#fdd}.medium{background:#ffe9c6}.unknown{background:#e8eaf6}"
        ".ok{background:#e8f6e8}</style></head><body>"
        "<h1>sendvault scan</h1><table><tr><th>check</th><th>target</th><th>rule</th><th>severity</th>"
        "<th>detail</th></tr>" + "".join(rows) + "</table></body></html>\n"
    )
