"""The bulk jobs' worker processes: a worker that dies is an error at once, never a wait."""

from __future__ import annotations

import gc
import multiprocessing.connection
import os
import signal
import struct
import threading
import time

import pytest

from sendvault.config import Settings
from sendvault.errors import WorkerStopped
from sendvault.exchange import _workers
from sendvault.exchange._workers import Planner
from sendvault.vault import Vault


def _die_half_way_through_an_answer(epoch: int) -> None:
    """In the worker: the start of a 1 MiB answer on its pipe, then death (as a kill -9 or the
    out-of-memory killer would leave it)."""
    (pipe,) = [
        o for o in gc.get_objects() if isinstance(o, multiprocessing.connection.Connection) and not o.closed
    ]
    os.write(pipe.fileno(), struct.pack("!i", 1 << 20) + b"x" * 100)
    os._exit(9)


def _echo(epoch: int, value: int) -> int:
    return value


def _take(planner: Planner) -> list[object]:
    """What take() gave (a result or an error), from a thread that must be done within 60 s."""
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(planner.take())
        except BaseException as exc:  # noqa: BLE001 - the outcome under test
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive(), "take() is still waiting for an answer that will never come"
    return outcome


def test_a_worker_that_dies_half_way_through_an_answer_is_an_error_not_a_wait(
    vault: Vault, settings: Settings
) -> None:
    # With one result queue shared by the whole pool (ProcessPoolExecutor), the reader waited
    # without end for the rest of the message, and the other worker for the queue's lock.
    planner = Planner(vault, settings, workers=2)
    planner.start_workers(wait=True)
    try:
        planner._submit("dies", _die_half_way_through_an_answer, _die_half_way_through_an_answer)
        planner._submit("echo", _echo, _echo, 7)
        (outcome,) = _take(planner)
        assert isinstance(outcome, WorkerStopped)
        assert str(outcome).startswith("a worker process stopped before its part of the file was done")
    finally:
        planner.close()


def test_answers_come_back_in_the_order_of_the_calls_across_workers(vault: Vault, settings: Settings) -> None:
    planner = Planner(vault, settings, workers=2)
    planner.start_workers(wait=True)
    try:
        for i in range(9):
            planner._submit(i, _echo, _echo, i * 10)
        got = [_take(planner)[0] for _ in range(9)]
        assert got == [(i, i * 10) for i in range(9)]
        assert planner.backlog == 0
    finally:
        planner.close()


def _pid(epoch: int, value: int) -> tuple[int, int]:
    return os.getpid(), value


def test_until_a_worker_has_started_this_process_does_the_work_in_order(
    vault: Vault, settings: Settings
) -> None:
    # A spawned worker imports and opens the vault for most of a second: work given to it then
    # waited, and so did this process. Now it converts meanwhile. Stopped workers cannot start.
    planner = Planner(vault, settings, workers=2)
    planner.start_workers()
    assert planner._pool is not None
    workers = [w.process.pid for w in planner._pool]
    try:
        for pid in workers:
            assert pid is not None
            os.kill(pid, signal.SIGSTOP)
        for i in range(3):
            planner._submit(i, _pid, _pid, i)
        assert planner.workers_used == 0
        for pid in workers:
            assert pid is not None
            os.kill(pid, signal.SIGCONT)
        planner.start_workers(wait=True)
        for i in range(3, 9):
            planner._submit(i, _pid, _pid, i)
        assert planner.workers_used == 2
        got = [_take(planner)[0] for _ in range(9)]
    finally:
        for pid in workers:
            assert pid is not None
            os.kill(pid, signal.SIGCONT)
        planner.close()
    assert [(tag, value) for tag, (_, value) in got] == [(i, i) for i in range(9)]
    by = [pid for _, (pid, _) in got]
    assert by[:3] == [os.getpid()] * 3
    assert sorted(set(by[3:])) == sorted(workers)  # both workers, in turn


@pytest.mark.parametrize("in_flight", [0, 3])
def test_close_stops_every_worker(vault: Vault, settings: Settings, in_flight: int) -> None:
    planner = Planner(vault, settings, workers=2)
    planner.start_workers(wait=True)
    for i in range(in_flight):
        planner._submit(i, _echo, _echo, i)
    pids = [child.pid for child in multiprocessing.active_children() if child.name == "sendvault-bulk-worker"]
    assert len(pids) == 2
    planner.close()
    assert not [c for c in multiprocessing.active_children() if c.name == "sendvault-bulk-worker"]


def test_a_worker_ignores_ctrl_c_while_it_starts(vault: Vault, settings: Settings) -> None:
    # Ctrl-C reaches the whole process group. A worker ignored it only once its start-up had
    # imported everything (a second or so): before that, each one printed a KeyboardInterrupt
    # traceback and died. The SIGINT here reaches the worker while its interpreter starts.
    planner = Planner(vault, settings, workers=1)
    planner.start_workers()
    try:
        assert planner._pool is not None
        (worker,) = planner._pool
        assert worker.process.pid is not None
        os.kill(worker.process.pid, signal.SIGINT)
        planner.start_workers(wait=True)  # the call goes to the worker, not to this process
        planner._submit("echo", _echo, _echo, 7)
        assert _take(planner) == [("echo", 7)]
    finally:
        planner.close()
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())  # this thread's again


def _sleep(epoch: int, seconds: float) -> None:
    time.sleep(seconds)


def test_ctrl_c_while_waiting_for_an_answer_stops_the_workers_at_once(
    vault: Vault, settings: Settings
) -> None:
    # take() let go of the call it waited for before the answer came: a Ctrl-C there left
    # nothing in flight, so close() gave the busy worker its 5 s of grace.
    planner = Planner(vault, settings, workers=1)
    planner.start_workers(wait=True)
    planner._submit("slow", _sleep, _sleep, 30.0)
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            planner.take()
    finally:
        timer.cancel()
        started = time.monotonic()
        planner.close()
    assert time.monotonic() - started < 3


def test_ctrl_c_while_workers_start_is_raised_once_they_have_started() -> None:
    # SIGINT was blocked in the starting thread only: another thread of this process (the audit
    # writer's) took it, and Python raised KeyboardInterrupt between a child's start and the
    # start-up data it reads, which printed an EOFError traceback from the child.
    other = threading.Thread(target=time.sleep, args=(1.0,), daemon=True)
    other.start()
    done: list[str] = []

    def start() -> None:
        with _workers._ctrl_c_blocked():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.2)
            done.append("started")

    with pytest.raises(KeyboardInterrupt):
        start()
    assert done == ["started"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, set())


def test_ctrl_c_during_the_start_leaves_no_worker_behind(
    vault: Vault, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = _workers._Worker.__init__

    def start_then_ctrl_c(self: _workers._Worker, context: object, settings: Settings) -> None:
        real(self, context, settings)
        os.kill(os.getpid(), signal.SIGINT)  # after the first worker, before the second

    monkeypatch.setattr(_workers._Worker, "__init__", start_then_ctrl_c)
    planner = Planner(vault, settings, workers=2)
    with pytest.raises(KeyboardInterrupt):
        planner.start_workers()
    planner.close()
    assert not [c for c in multiprocessing.active_children() if c.name == "sendvault-bulk-worker"]


def test_workers_that_never_started_are_killed_at_once(vault: Vault, settings: Settings) -> None:
    # They were given no work: closing waited 5 s for each (in turn) before killing it.
    planner = Planner(vault, settings, workers=2)
    planner.start_workers()
    assert planner._pool is not None
    for worker in planner._pool:
        assert worker.process.pid is not None
        os.kill(worker.process.pid, signal.SIGSTOP)  # stopped: they never say they started
    started = time.monotonic()
    planner.close()
    assert time.monotonic() - started < 2
    assert not [c for c in multiprocessing.active_children() if c.name == "sendvault-bulk-worker"]
