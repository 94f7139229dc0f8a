"""The compliance scanner: one module per check, each returning per-target results.

Names load on first use (PEP 562), so ``sendvault scan tls`` imports the TLS check and not the
HTTP client, the HTML parser or the database probes: a CI job's scan starts faster.
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without the typing import (`scan ssh` is mostly start-up)
if TYPE_CHECKING:
    from typing import Any

    from .findings import RULES, CheckResult, Finding, Severity
    from .http import scan_http
    from .report import exit_code, to_json
    from .tls import scan_tls

__all__ = ["RULES", "CheckResult", "Finding", "Severity", "exit_code", "scan_http", "scan_tls", "to_json"]

_HOME = {
    "RULES": "findings",
    "CheckResult": "findings",
    "Finding": "findings",
    "Severity": "findings",
    "scan_http": "http",
    "exit_code": "report",
    "to_json": "report",
    "scan_tls": "tls",
}


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
