"""Group commit for new tokens, shared by every backend.

Concurrent creators hand their rows to one committer, which inserts everything pending in a
single transaction: threads through :class:`GroupWriter` (one writer thread per store), coroutines
through :class:`LoopBatcher` (the commit runs on the event loop's own thread between turns, which
is cheaper than handing work to a thread that must win the GIL back at every database call).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from ..errors import StoreUnavailable
from .base import NewContact

__all__ = ["ConnectionsBase", "GroupWriter", "LoopBatcher"]

C = TypeVar("C")
Found = dict[bytes, str]
# Rows per grouped transaction: large enough to amortize the commit, small enough to bound latency.
MAX_GROUP_ROWS = 20_000


def _share(requests: Sequence[tuple[Sequence[NewContact], object]], found: Found) -> list[Found]:
    return [{row.bidx: found[row.bidx] for row in rows if row.bidx in found} for rows, _ in requests]


class GroupWriter(Generic[C]):
    """One thread that commits every pending insert request in a single transaction."""

    def __init__(
        self,
        connect: Callable[[], C],
        commit: Callable[[C, list[NewContact]], Found],
        close: Callable[[C], None],
        name: str,
        usable: Callable[[C], bool] = lambda conn: True,
    ) -> None:
        self._connect = connect
        self._commit = commit
        self._close = close
        self._usable = usable
        self._queue: queue.SimpleQueue[tuple[Sequence[NewContact], Future[Found]] | None] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, rows: Sequence[NewContact]) -> Found:
        """Queue ``rows`` and wait for the commit that includes them."""
        future: Future[Found] = Future()
        self._queue.put((rows, future))
        return future.result()

    def stop(self) -> None:
        """Finish the current group, fail anything queued after it, and end the thread."""
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _run(self) -> None:
        conn: C | None = None
        stopping = False
        while not stopping:
            group, stopping = self._collect()
            if not group:
                break
            try:
                if conn is not None and not self._usable(conn):
                    # Cut while idle (the database restarted): replaced, never tried and failed.
                    self._close(conn)
                    conn = None
                if conn is None:
                    conn = self._connect()
                found = self._commit(conn, [row for rows, _ in group for row in rows])
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting callers, not swallowed
                for _, future in group:
                    future.set_exception(exc)
            else:
                for (_, future), share in zip(group, _share(group, found), strict=True):
                    future.set_result(share)
        # Fail anything that raced with stop() rather than leaving callers waiting forever.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].set_exception(StoreUnavailable("store is closed"))
        if conn is not None:
            self._close(conn)

    def _collect(self) -> tuple[list[tuple[Sequence[NewContact], Future[Found]]], bool]:
        """Block for one request, then take every other pending one up to the group limit."""
        first = self._queue.get()
        if first is None:
            return [], True
        group = [first]
        size = len(first[0])
        while size < MAX_GROUP_ROWS:
            try:
                more = self._queue.get_nowait()
            except queue.Empty:
                break
            if more is None:
                return group, True
            group.append(more)
            size += len(more[0])
        return group, False


# A request waiting on an event loop: its rows, its future, when it was submitted (loop time).
_Waiting = tuple[Sequence[NewContact], "asyncio.Future[Found]", float]


class LoopBatcher(Generic[C]):
    """Group commit for one event loop: inserts requested in one loop turn share a transaction.

    The commit runs on the loop's own thread, so it must never wait for a lock there: a backend
    whose connection reports a held write lock at once (``StoreUnavailable(busy=True)``) gets the
    group retried a moment later, with new requests joining it, for up to ``wait_seconds`` per
    request; meanwhile every other request on the loop is served.
    """

    _FIRST_DELAY, _MAX_DELAY = 0.001, 0.05

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        conn: C,
        commit: Callable[[C, list[NewContact]], Found],
        *,
        wait_seconds: float = 0.0,
        renew: Callable[[C], C] = lambda conn: conn,
    ) -> None:
        self._loop = loop
        self._conn = conn
        self._commit = commit
        self._renew = renew
        self._wait = wait_seconds
        self._pending: list[_Waiting] = []
        self._delay = 0.0  # > 0 while a busy group waits for its retry

    def submit(self, rows: Sequence[NewContact]) -> asyncio.Future[Found]:
        """A future for ``rows``' share of the next commit on this loop."""
        future: asyncio.Future[Found] = self._loop.create_future()
        if not self._pending and not self._delay:
            self._loop.call_soon(self._flush)
        self._pending.append((rows, future, self._loop.time()))
        return future

    def _flush(self) -> None:
        group, self._pending = [e for e in self._pending if not e[1].cancelled()], []
        if not group:
            self._delay = 0.0
            return
        try:
            self._conn = self._renew(self._conn)
            found = self._commit(self._conn, [row for rows, _, _ in group for row in rows])
        except Exception as exc:  # noqa: BLE001 - handed to the awaiting callers, not swallowed
            if isinstance(exc, StoreUnavailable) and exc.busy:
                group = self._retry_later(group)
            else:
                self._delay = 0.0
            for _, future, _ in group:
                future.set_exception(exc)
            return
        self._delay = 0.0
        live = [(rows, future) for rows, future, _ in group]
        for (_, future), share in zip(live, _share(live, found), strict=True):
            future.set_result(share)

    def _retry_later(self, group: list[_Waiting]) -> list[_Waiting]:
        """Keep the requests that may still wait for another try; return those that may not."""
        now = self._loop.time()
        expired = [entry for entry in group if now - entry[2] >= self._wait]
        keep = [entry for entry in group if now - entry[2] < self._wait]
        if not keep:
            self._delay = 0.0
            return expired
        self._pending = keep + self._pending
        self._delay = min(self._MAX_DELAY, self._delay * 2 or self._FIRST_DELAY)
        self._loop.call_later(self._delay, self._flush)
        return expired


class ConnectionsBase(Generic[C]):
    """What every backend shares: a connection per thread, and group commit for new tokens.

    Subclasses open and close their kind of connection and commit a group of new rows; the
    thread-local connections, the writer thread, the per-loop batchers and shutdown live here.
    """

    _writer_name = "sendvault-store-writer"

    def __init__(self) -> None:
        self._local = threading.local()
        self._connections: list[C] = []
        self._conn_lock = threading.Lock()
        self._writer: GroupWriter[C] | None = None
        self._batchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopBatcher[C]] = (
            weakref.WeakKeyDictionary()
        )
        self._closed = False

    # -- for subclasses --------------------------------------------------------------------

    def _open_connection(self) -> C:
        raise NotImplementedError

    def _close_connection(self, conn: C) -> None:
        raise NotImplementedError

    def _usable(self, conn: C) -> bool:
        """Whether a thread's cached connection can still be used."""
        return True

    def _commit(self, conn: C, rows: list[NewContact]) -> Found:
        raise NotImplementedError

    def _loop_connection(self) -> tuple[C, float]:
        """A connection for an event loop's group commits, and how long a request may wait for
        the write lock there (0: the backend waits inside the commit)."""
        return self._connect(), 0.0

    # -- shared ----------------------------------------------------------------------------

    def _connect(self) -> C:
        conn = self._open_connection()
        with self._conn_lock:
            self._connections.append(conn)
        return conn

    def _discard(self, conn: C) -> None:
        """Close a connection that can no longer be used and forget it."""
        self._close_connection(conn)
        with self._conn_lock:
            if conn in self._connections:
                self._connections.remove(conn)

    def _renew(self, conn: C) -> C:
        """``conn`` while it is usable; else a new connection in its place (which may raise
        :class:`StoreUnavailable`: the old one is then kept, to be checked again next time)."""
        if self._usable(conn):
            return conn
        if self._closed:
            raise StoreUnavailable("store is closed")
        fresh = self._connect()
        self._discard(conn)
        return fresh

    @property
    def _conn(self) -> C:
        conn: C | None = getattr(self._local, "conn", None)
        if conn is None or not self._usable(conn):
            if self._closed:
                raise StoreUnavailable("store is closed")
            if conn is not None:
                self._local.conn = None
                self._discard(conn)
            conn = self._connect()
            self._local.conn = conn
        return conn

    def insert_new(self, rows: Sequence[NewContact]) -> Found:
        """Insert-or-get through this process's group writer (see the module docstring)."""
        if not rows:
            return {}
        writer = self._writer
        if writer is None:
            with self._conn_lock:
                if self._writer is None:
                    if self._closed:
                        raise StoreUnavailable("store is closed")
                    self._writer = GroupWriter(
                        self._connect, self._commit, self._discard, self._writer_name, self._usable
                    )
                writer = self._writer
        return writer.submit(rows)

    async def insert_new_async(self, rows: Sequence[NewContact]) -> Found:
        """Insert-or-get, grouped with the other inserts of this event loop's current turn."""
        if not rows:
            return {}
        loop = asyncio.get_running_loop()
        batcher = self._batchers.get(loop)
        if batcher is None:
            conn, wait = self._loop_connection()
            batcher = self._batchers[loop] = LoopBatcher(
                loop, conn, self._commit, wait_seconds=wait, renew=self._renew
            )
        return await batcher.submit(rows)

    def close(self) -> None:
        """Stop the writer and close every connection this store opened."""
        self._closed = True
        if self._writer is not None:
            self._writer.stop()
            self._writer = None
        with self._conn_lock:
            for conn in self._connections:
                self._close_connection(conn)
            self._connections.clear()
        self._batchers.clear()
        self._local = threading.local()
