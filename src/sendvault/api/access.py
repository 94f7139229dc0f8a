"""The access log: one line per API call, for the operator.

What it holds is fixed here and nowhere else: method, route (a known route or ``other``, never the
path a caller sent), status, item count, latency, client id and caller address. Never a token, a
clear value, a header, a body or a secret. A client id a caller merely claimed is written only
when it names an existing client (a wrong secret for a real client is worth seeing); a stranger's
made-up id, which may be anything they typed, is not.
"""

from __future__ import annotations

import logging

__all__ = ["AccessLog"]

_KNOWN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


class AccessLog:
    """Writes access lines to the ``sendvault.access`` logger at info."""

    def __init__(self, enabled: bool = True) -> None:
        self._log = logging.getLogger("sendvault.access")
        self.enabled = enabled

    def emit(
        self,
        *,
        method: str,
        route: str,
        status: int,
        seconds: float,
        items: int | None,
        client: str | None,
        verified: bool,
        source: str,
    ) -> None:
        """Log one call (cheap when the level or the setting turns it off)."""
        if not self.enabled or not self._log.isEnabledFor(logging.INFO):
            return
        method = method if method in _KNOWN_METHODS else "OTHER"
        latency_ms = round(seconds * 1000, 2)
        fields = {
            "event": "access",
            "method": method,
            "route": route,
            "status": status,
            "items": items,
            "latency_ms": latency_ms,
            "client": client,
            "client_verified": verified if client is not None else None,
            "source": source,
        }
        # The text form says method and route in the message; JSON has every field.
        self._log.info(
            "%s %s", method, route, extra={"fields": fields, "in_message": ("event", "method", "route")}
        )
