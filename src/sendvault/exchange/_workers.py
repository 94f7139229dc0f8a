"""Lookups, normalization, HMAC and AES-GCM of bulk jobs, spread over worker processes.

The process that reads and writes the CSV also stores new tokens (SQLite has one writer). The
CPU work per value (the blind index, normalization, a new token and its sealed value, or opening
a ciphertext) runs in ``workers`` spawned processes, each with its own vault opened from the same
settings: keys never cross a pipe. What crosses is the chunk's values and, back, the plan (tokens,
reasons and sealed new rows), or a block of the file's bytes and, back, its output bytes. A
:class:`Planner` with no workers does the same work in-process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import signal
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from typing import Any

from .._orphan import watch_parent
from ..config import Settings
from ..errors import WorkerStopped
from ..vault import Kind, Vault, open_vault
from ..vault.service import TokenPlan
from ._blocks import BlockJob, BlockResult, convert_block

__all__ = ["Planner", "ResolvePlan", "default_workers"]

# (value or None, reason or None) per token, in order.
ResolvePlan = tuple[list[str | None], list[str | None]]
_KINDS = {int(k): k for k in Kind}
_vault: Vault | None = None
_epoch = 0  # the main process's count of key changes this worker's vault has seen


def default_workers() -> int:
    """Workers for a bulk job when none are asked for: 2 where this process may use two or more
    cores, else 0. (Measured on 2 cores, 1,000,000 rows on a store of 1,000,000: known values
    and detokenize 1.7x the speed of no workers, 3 workers slower than 2; new values 1.2x.)"""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 0


def _init(settings: Settings) -> None:
    global _vault  # noqa: PLW0603 - one vault per worker process, opened once
    # Ctrl-C reaches the whole process group: the main process handles it and stops the
    # workers; a worker's own KeyboardInterrupt would only print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A main process killed with SIGKILL cannot stop its workers: they stop themselves.
    watch_parent(os.getppid())
    _vault = open_vault(settings)


def _plan(vault: Vault, items: Sequence[tuple[int, str]], create: bool) -> TokenPlan:
    return vault.plan_tokens([(_KINDS[k], v) for k, v in items], create=create)


def _resolve(vault: Vault, tokens: Sequence[str]) -> ResolvePlan:
    results = vault.resolve_many(tokens)
    return [r.value for r in results], [r.reason for r in results]


def _current(epoch: int) -> Vault:
    """This worker's vault, its keys reloaded if the main process saw them change since."""
    global _epoch  # noqa: PLW0603 - one vault per worker process
    assert _vault is not None
    if epoch != _epoch:
        _vault.refresh_keys()
        _epoch = epoch
    return _vault


def _block_remote(epoch: int, job: BlockJob, block: bytes) -> BlockResult | None:
    return convert_block(_current(epoch), job, block)


def _plan_remote(epoch: int, items: Sequence[tuple[int, str]], create: bool) -> TokenPlan:
    return _plan(_current(epoch), items, create)


def _resolve_remote(epoch: int, tokens: Sequence[str]) -> ResolvePlan:
    return _resolve(_current(epoch), tokens)


_READY = (True, "ready")
_STOPPED = "a worker process stopped before its part of the file was done (killed, or out of memory?)"


def _serve(settings: Settings, conn: Connection) -> None:
    """A worker's life: answer each ``(function, args)`` from ``conn`` with ``(ok, value)``, in
    order, until None or the end of the pipe."""
    failed: BaseException | None = None
    try:
        _init(settings)
    except Exception as exc:  # noqa: BLE001 - sent back as the answer to every call
        failed = exc
    try:
        conn.send(_READY)  # the main process sends this worker no work before it reads this
    except OSError:
        return
    while True:
        try:
            call = conn.recv()
        except (EOFError, OSError):
            return  # the main process is gone
        if call is None:
            return
        if failed is not None:
            conn.send((False, _sendable(failed)))
            continue
        function, args = call
        try:
            answer = (True, function(*args))
        except BaseException as exc:  # noqa: BLE001 - re-raised by the main process
            answer = (False, _sendable(exc))
        try:
            conn.send(answer)
        except OSError:
            return  # the main process is gone (or stopped this worker's run)


def _sendable(exc: BaseException) -> BaseException:
    try:
        pickle.dumps(exc)
    except Exception:  # noqa: BLE001 - whatever keeps it from crossing the pipe
        return RuntimeError(f"{type(exc).__name__} in a worker process")
    return exc


class _Worker:
    """One worker process and its own pipe.

    A pipe per worker, held only by the two processes: a worker that dies, even half-way
    through an answer, ends its pipe, and the main process sees that at once (a pool sharing one
    result queue can wait forever for the rest of a message the dead worker was writing).
    Calls are sent by a thread of their own, so a large call never blocks the main process
    while the worker is busy sending an answer back.
    """

    def __init__(self, context: Any, settings: Settings) -> None:
        self._conn, child = context.Pipe(duplex=True)
        self.process = context.Process(
            target=_serve, args=(settings, child), name="sendvault-bulk-worker", daemon=True
        )
        self.process.start()
        child.close()
        self._outbox: queue.SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...]] | None] = (
            queue.SimpleQueue()
        )
        self._sender = threading.Thread(target=self._send, name="sendvault-bulk-sender", daemon=True)
        self._sender.start()
        self._ready = False

    @property
    def ready(self) -> bool:
        """Whether the worker has started (imported, vault opened): until then, work given to it
        would wait. A worker that died while starting counts as ready: its calls say so."""
        return self.wait_ready(0)

    def wait_ready(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: as long as it takes) for :attr:`ready`."""
        if not self._ready:
            try:
                if not self._conn.poll(timeout):
                    return False
                self._conn.recv()
            except (EOFError, OSError):
                pass
            self._ready = True
        return True

    def _send(self) -> None:
        while True:
            call = self._outbox.get()
            try:
                self._conn.send(call)
            except (OSError, ValueError):
                return  # the worker is gone, or closed: result() says so
            if call is None:
                return

    def call(self, function: Callable[..., Any], *args: Any) -> None:
        """Queue a call; its answer comes from :meth:`result`, in the order of the calls."""
        self._outbox.put((function, args))

    def result(self) -> Any:
        """The answer to the oldest call not yet answered (its error re-raised)."""
        try:
            self.wait_ready(None)
            ok, value = self._conn.recv()
        except (EOFError, OSError):
            raise WorkerStopped(_STOPPED) from None
        if not ok:
            raise value
        return value

    def stop(self) -> None:
        """Ask the worker to finish (after the calls already queued)."""
        self._outbox.put(None)

    def kill(self) -> None:
        """Kill the worker if it still runs (also when stopped: SIGKILL ends a stopped process,
        where multiprocessing's own SIGTERM at exit would wait for it without end)."""
        if self.process.is_alive():
            self.process.kill()
            self.process.join()

    def close(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the worker to finish, then kill it (at once if it
        has not started: it was given no work)."""
        try:
            self.process.join(timeout if self.ready else 0)
        finally:
            self.kill()
        # The sender ends once it has sent the stop, or failed to (the worker is gone); the pipe
        # is closed only then, never under a send.
        self._sender.join(5.0)
        if not self._sender.is_alive():
            self._conn.close()


@contextlib.contextmanager
def _ctrl_c_blocked() -> Iterator[None]:
    """Start processes that never act on Ctrl-C, and finish starting them.

    A spawned worker imports for a second or so before :func:`_init` ignores SIGINT, and Ctrl-C
    reaches the whole process group: each worker printed a KeyboardInterrupt traceback. A
    process starts with the signal mask of the thread that started it, across exec, so SIGINT
    stays blocked in the workers (as multiprocessing's resource tracker starts its own).

    Blocking it in this thread is not enough for this process: another thread (the audit
    writer's) takes the signal, and Python raised KeyboardInterrupt here, between a child's
    start and the start-up data it reads (which then printed an EOFError traceback). So, in the
    main thread, a Ctrl-C meanwhile is noted and raised once the workers are started.
    """
    # Starting a process starts multiprocessing's resource tracker the first time, which blocks
    # SIGINT around its own start and then unblocks it: start it first, outside the mask.
    resource_tracker.ensure_running()
    held: list[bool] = []
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(True)) if main else None
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if main:
            signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


class Planner:
    """Runs chunk plans in order: in-process, or on worker processes started on first need.

    ``submit_*`` returns at once; ``take`` gives results back in submission order, and
    ``backlog`` bounds how many chunks are in flight so memory stays flat whatever the file size.
    """

    def __init__(self, vault: Vault, settings: Settings, *, workers: int) -> None:
        self._vault = vault
        self._settings = settings
        self._workers = workers
        self._pool: list[_Worker] | None = None
        self._inflight: deque[tuple[Any, Future[Any] | _Worker]] = deque()
        self._calls = 0
        self._epoch = 0
        self._used: set[int] = set()

    @property
    def workers_used(self) -> int:
        """How many worker processes were given work (a worker that never started got none)."""
        return len(self._used)

    def start_workers(self, *, wait: bool = False) -> None:
        """Start the worker processes (a no-op without workers or when started). Work goes to a
        worker once it has started; until then this process does it. ``wait``: return only once
        every worker has started."""
        if self._workers and self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = []  # filled as they start: close() stops those that did
            with _ctrl_c_blocked():
                for _ in range(self._workers):
                    self._pool.append(_Worker(context, self._settings))
        if wait and self._pool is not None:
            for worker in self._pool:
                worker.wait_ready(None)

    @property
    def backlog(self) -> int:
        """Chunks submitted and not yet taken back."""
        return len(self._inflight)

    @property
    def capacity(self) -> int:
        """How many chunks may be in flight before the caller should take results back."""
        return 2 * self._workers + 1 if self._pool is not None else 1

    def submit_plan(self, tag: Any, items: Sequence[tuple[int, str]], *, create: bool) -> None:
        """Plan tokens for ``items`` (kind as int, value)."""
        self._submit(tag, _plan_remote, _plan, items, create)

    def submit_resolve(self, tag: Any, tokens: Sequence[str]) -> None:
        """Resolve ``tokens``."""
        self._submit(tag, _resolve_remote, _resolve, tokens)

    def submit_block(self, tag: Any, job: BlockJob, block: bytes) -> None:
        """Convert a whole block of the file (see ``_blocks``)."""
        self._submit(tag, _block_remote, convert_block, job, block)

    def refresh_keys(self) -> None:
        """The vault's keys changed: workers reload theirs before their next submission (the
        vault of this process is the caller's to reload)."""
        self._epoch += 1

    def _submit(self, tag: Any, remote: Callable[..., Any], local: Callable[..., Any], *args: Any) -> None:
        worker = self._next_worker()
        if worker is not None:
            # Each worker answers its own calls in order, and take() asks the worker of the
            # oldest submission: results come back in submission order.
            worker.call(remote, self._epoch, *args)
            self._inflight.append((tag, worker))
            return
        # No workers, or none started yet: this process does the work meanwhile.
        done: Future[Any] = Future()
        try:
            done.set_result(local(self._vault, *args))
        except Exception as exc:  # noqa: BLE001 - re-raised by take(); Ctrl-C stops the run now
            done.set_exception(exc)
        self._inflight.append((tag, done))

    def _next_worker(self) -> _Worker | None:
        """The next started worker in turn, or None when there is none."""
        if self._pool is None:
            return None
        for _ in range(len(self._pool)):
            worker = self._pool[self._calls % len(self._pool)]
            self._calls += 1
            if worker.ready:
                self._used.add(id(worker))
                return worker
        return None

    def take(self) -> tuple[Any, Any]:
        """The oldest submission's tag and result (waits for it; re-raises its error)."""
        tag, pending = self._inflight[0]
        try:
            result = pending.result()
        except KeyboardInterrupt:
            raise  # still in flight: close() stops the workers at once, not after a grace
        except BaseException:
            self._inflight.popleft()
            raise
        self._inflight.popleft()
        return tag, result

    def abandon(self) -> list[Any]:
        """Tags of every submission not taken back, oldest first; their results are waited for
        and dropped (a worker's next answer must be to its next call)."""
        tags = []
        while self._inflight:
            tag, pending = self._inflight.popleft()
            tags.append(tag)
            try:
                pending.result()
            except WorkerStopped:
                raise
            except Exception:  # noqa: BLE001, S110 - the caller does this work again itself
                pass
        return tags

    def close(self) -> None:
        """Stop the workers: at once if calls are still in flight (the run stopped: an error,
        Ctrl-C), else once they are done with what was queued (killed after 5 s)."""
        grace = 0.0 if self._inflight else 5.0
        self._inflight.clear()
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                for worker in pool:
                    worker.stop()
                for worker in pool:
                    worker.close(timeout=grace)
            finally:  # a Ctrl-C while waiting for one: the others are killed all the same
                for worker in pool:
                    worker.kill()
