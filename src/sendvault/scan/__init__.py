"""The compliance scanner: one module per check, each returning per-target results."""

from .findings import RULES, CheckResult, Finding, Severity
from .http import scan_http
from .report import exit_code, to_json
from .tls import scan_tls

__all__ = ["RULES", "CheckResult", "Finding", "Severity", "exit_code", "scan_http", "scan_tls", "to_json"]
