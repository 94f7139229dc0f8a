"""Per-client token buckets: an optional Get Token rate that makes dictionary enumeration slow.

Marketing Cloud's Get Token is how a holder of a `tokenize` credential learns whether a phone
number is a subscriber (the vault answers with an existing token or makes a new one). A rate per
client, in values per second with a burst of one minute's worth, turns a sweep of a numbering plan
into weeks and shows up in the 429 metrics. Off (0) by default and for the dev client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["RateLimiter", "RefusalLedger"]

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


class RefusalLedger:
    """Which refused calls of unauthenticated callers get an audit record of their own.

    Each such record is small and of fixed size (no body is read or kept), but a stranger can make
    thousands a second, and every record is disk. Per caller address the first ``burst`` refusals
    of each ``period`` are recorded one by one, and at most ``global_burst`` over all addresses;
    the rest are counted, and one summary record per period gives their number, how many
    addresses made them, and the busiest few. So the log grows by a bounded amount per period
    whatever strangers do, and still shows that they did.
    """

    def __init__(
        self,
        *,
        burst: int = 20,
        global_burst: int = 600,
        period: float = 60.0,
        busiest: int = 10,
        max_addresses: int = 10_000,
    ) -> None:
        self._burst = burst
        self._global_burst = global_burst
        self._period = period
        self._busiest = busiest
        self._max_addresses = max_addresses
        self._start: float | None = None
        self._recorded: dict[str, int] = {}
        self._recorded_total = 0
        self._unrecorded: dict[str, int] = {}
        self._pending: dict[str, object] | None = None

    def admit(self, address: str, now: float) -> bool:
        """Whether this refusal gets its own record (else it is counted for the summary)."""
        self._roll(now)
        seen = self._recorded.get(address, 0)
        if (
            seen < self._burst
            and self._recorded_total < self._global_burst
            and (seen or len(self._recorded) < self._max_addresses)
        ):
            self._recorded[address] = seen + 1
            self._recorded_total += 1
            return True
        # Past max_addresses distinct addresses, the rest are counted together under "*".
        key = address if address in self._unrecorded or len(self._unrecorded) < self._max_addresses else "*"
        self._unrecorded[key] = self._unrecorded.get(key, 0) + 1
        return False

    def summary(self, now: float, *, final: bool = False) -> dict[str, object] | None:
        """The summary of a period that has ended (or, with ``final``, of the current one), once."""
        self._roll(now, final=final)
        pending, self._pending = self._pending, None
        return pending

    def _roll(self, now: float, *, final: bool = False) -> None:
        if self._start is None:
            self._start = now
            return
        if not final and now - self._start < self._period:
            return
        if self._unrecorded:
            busiest = sorted(self._unrecorded.items(), key=lambda kv: -kv[1])[: self._busiest]
            self._pending = {
                "unrecorded": sum(self._unrecorded.values()),
                "addresses": len(self._unrecorded),
                "busiest": [[address, count] for address, count in busiest],
                "seconds": round(now - self._start, 3),
            }
        self._start = now
        self._recorded.clear()
        self._recorded_total = 0
        self._unrecorded.clear()
