"""Per-client token buckets: an optional Get Token rate that makes dictionary enumeration slow.

Marketing Cloud's Get Token is how a holder of a `tokenize` credential learns whether a phone
number is a subscriber (the vault answers with an existing token or makes a new one). A rate per
client, in values per second with a burst of one minute's worth, turns a sweep of a numbering plan
into weeks and shows up in the 429 metrics. Off (0) by default and for the dev client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RateLimiter"]

_BURST_SECONDS = 60.0


@dataclass(slots=True)
class _Bucket:
    level: float
    stamp: float


class RateLimiter:
    """Token buckets keyed by client id, in one worker's memory."""

    def __init__(self) -> None:
        self._buckets: dict[str, _Bucket] = {}

    def take(self, key: str, amount: int, rate: float, now: float) -> int:
        """Take ``amount`` units; 0 when allowed, else the seconds to wait (nothing is taken)."""
        capacity = max(rate * _BURST_SECONDS, float(amount))
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(capacity, now)
        bucket.level = min(capacity, bucket.level + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.level >= amount:
            bucket.level -= amount
            return 0
        return max(1, math.ceil((amount - bucket.level) / rate))
