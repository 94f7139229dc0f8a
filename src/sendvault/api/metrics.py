"""Prometheus metrics of the token API, served only on the admin listener.

With several worker processes, prometheus-client's multiprocess mode aggregates their values
(the server sets PROMETHEUS_MULTIPROC_DIR before the workers start).
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["METRICS", "Metrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 10, 50, 100, 250, 500, 1000)


class Metrics:
    """The API's counters and histograms."""

    def __init__(self) -> None:
        self.requests = Counter("sendvault_requests", "Requests by route and status.", ["route", "status"])
        # Latency by status class, not exact status: 2xx, 4xx and 5xx answers take different
        # paths (a refused request is fast), and classes keep the series few.
        self.latency = Histogram(
            "sendvault_request_seconds",
            "Request latency by route and status class.",
            ["route", "status_class"],
            buckets=_LATENCY_BUCKETS,
        )
        self.batch_items = Histogram(
            "sendvault_batch_items", "Items per Marketing Cloud call.", ["route"], buckets=_BATCH_BUCKETS
        )
        self.token_outcomes = Counter("sendvault_tokens", "Token outcomes.", ["outcome"])
        self.tls_failures = Counter(
            "sendvault_tls_handshake_failures", "TLS handshakes refused, by reason.", ["reason"]
        )
        self.connections_closed = Counter(
            "sendvault_connections_closed",
            "Connections closed or refused by a limit, by reason (head-timeout, body-too-slow, ...).",
            ["reason"],
        )
        self.unrecorded = Counter(
            "sendvault_unauthenticated_unrecorded",
            "Refused unauthenticated calls counted in a summary record instead of one record each.",
        )

    def observe(self, route: str, status: int, seconds: float) -> None:
        """Count one request."""
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route, f"{status // 100}xx").observe(seconds)

    def batch(self, route: str, size: int) -> None:
        """Record a batch size."""
        self.batch_items.labels(route).observe(size)

    def tokens(self, outcome: str, count: int) -> None:
        """Count token outcomes: resolved, unresolved, created, invalid."""
        if count:
            self.token_outcomes.labels(outcome).inc(count)

    def tls_failure(self, reason: str) -> None:
        """Count a refused TLS handshake."""
        self.tls_failures.labels(reason).inc()

    def connection_refused(self, reason: str) -> None:
        """Count a connection closed or refused by a limit."""
        self.connections_closed.labels(reason).inc()

    def unrecorded_call(self) -> None:
        """Count a refused unauthenticated call left to a summary record."""
        self.unrecorded.inc()


METRICS = Metrics()
