"""How failed logins slow their source down without ever refusing the right credential.

Counting failures per address and refusing that address past a limit (what this replaced) locks
Marketing Cloud out whenever a stranger shares its address: a NAT, a load balancer not listed in
`trusted_proxies`. So nothing is refused here. Instead:

- **A failing source is served one check at a time.** Once an address (an IPv6 /64) has
  ``max_failures`` failures within the window, each of its checks that cannot be answered from
  a cache waits in that address's queue (first come, first served) and runs at least
  ``spacing`` seconds after the previous one. Its guessing rate is bounded whatever it opens,
  and a right credential from the same address is checked in its turn: it waits behind at most
  the address's open connections, never behind a refusal.
- **scrypt runs one at a time per worker**, and addresses without recent failures go first, so
  strangers cannot take the CPU that Marketing Cloud's first check needs.
- Waiting connections are *parked*: at a connection cap they are the first to make room.

A secret that once passed scrypt is then recognised from its SHA-256 (see Authenticator), and a
valid bearer token costs one HMAC: neither ever waits here.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

__all__ = ["FailureLedger", "KdfGate", "Park"]

# A connection's "I am only waiting" flag (see server/protocol.py); None outside a server.
Park = Callable[[bool], None] | None

# Past this many addresses the least recently failed are forgotten (per worker).
_MAX_SOURCES = 100_000


@dataclass(slots=True)
class _Source:
    failures: deque[float] = field(default_factory=deque)
    lock: asyncio.Lock | None = None
    last_check: float = float("-inf")


class FailureLedger:
    """Failures per source within a window, and the queue a failing source's checks wait in."""

    def __init__(
        self, *, max_failures: int, window: float, spacing: float, clock: Callable[[], float]
    ) -> None:
        self._max = max_failures
        self._window = window
        self._spacing = spacing
        self._clock = clock
        self._sources: OrderedDict[str, _Source] = OrderedDict()

    def recent(self, source: str) -> int:
        """Failures of ``source`` within the window."""
        entry = self._sources.get(source)
        if entry is None:
            return 0
        horizon = self._clock() - self._window
        while entry.failures and entry.failures[0] <= horizon:
            entry.failures.popleft()
        return len(entry.failures)

    def failing(self, source: str) -> bool:
        """Whether ``source`` has reached ``max_failures`` within the window."""
        return self.recent(source) >= self._max

    def fail(self, source: str) -> None:
        """Count one failure of ``source``."""
        entry = self._sources.get(source)
        if entry is None:
            entry = self._sources[source] = _Source()
        entry.failures.append(self._clock())
        self._sources.move_to_end(source)
        while len(self._sources) > _MAX_SOURCES:
            _, oldest = next(iter(self._sources.items()))
            if oldest.lock is not None and oldest.lock.locked():
                break  # never forget a source while its queue is in use
            self._sources.popitem(last=False)

    @contextlib.asynccontextmanager
    async def turn(self, source: str, park: Park = None) -> AsyncIterator[None]:
        """Wait for ``source``'s turn if it is failing (at once otherwise), then check."""
        if not self.failing(source):
            yield
            return
        entry = self._sources[source]
        if entry.lock is None:
            entry.lock = asyncio.Lock()  # FIFO: waiters are served in arrival order
        if park is not None:
            park(True)
        try:
            async with entry.lock:
                wait = entry.last_check + self._spacing - self._clock()
                if wait > 0:
                    await asyncio.sleep(wait)
                if park is not None:
                    park(False)
                try:
                    yield
                finally:
                    entry.last_check = self._clock()
        finally:
            if park is not None:
                park(False)


class KdfGate:
    """One scrypt at a time per worker; waiters with fewer recent failures first, then in order."""

    def __init__(self, slots: int = 1) -> None:
        self._free = slots
        self._waiting: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, priority: int) -> AsyncIterator[None]:
        """Hold a slot; ``priority`` is the caller's source's recent failures (0 goes first)."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
        else:
            future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (priority, next(self._order), future))
            try:
                await future
            except asyncio.CancelledError:
                if future.done() and not future.cancelled():
                    self._release()  # handed over just as we were cancelled: pass it on
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiting:
            _, _, future = heapq.heappop(self._waiting)
            if not future.done():
                future.set_result(None)
                return
        self._free += 1
