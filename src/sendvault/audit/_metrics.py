"""The audit log's own metrics (on the admin listener with the API's, in every worker)."""

from __future__ import annotations

from prometheus_client import Counter

__all__ = ["INTEGRITY_FAILURES"]

INTEGRITY_FAILURES = Counter(
    "sendvault_audit_integrity_failures",
    "Times a writer found the audit log not matching its signed or witnessed head and stopped it.",
)
