"""A worker never outlives the process that started it.

Killed with SIGKILL, the main process cannot stop its workers: `serve`'s would go on serving on
the inherited socket, unsupervised, and a restart would fail with "Address already in use"; a
bulk CSV job's would sit forever with the vault's keys in memory. Two
guards, either enough: on Linux the kernel sends the worker SIGTERM the moment its parent dies
(PR_SET_PDEATHSIG); everywhere, a thread waits on multiprocessing's parent sentinel (a pipe the
parent holds open) and, when it closes, sends SIGTERM too. In `serve`, SIGTERM starts
uvicorn's graceful stop (no new connections, the listening socket closed, open answers finished,
the audit log written); if that has not ended the process within ``grace`` seconds, it exits
regardless.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time

__all__ = ["watch_parent"]

_PR_SET_PDEATHSIG = 1
_EXIT_ORPHANED = 70  # EX_SOFTWARE: stopped because the main process was gone


def watch_parent(parent_pid: int, *, grace: float = 0.3) -> None:
    """Stop this process within about ``grace`` seconds of ``parent_pid`` dying."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    threading.Thread(
        target=_watch, args=(parent_pid, sentinel, grace), name="sendvault-parent-watch", daemon=True
    ).start()


def _watch(parent_pid: int, sentinel: int | None, grace: float) -> None:
    # The parent may already be gone (it died before prctl took effect): then at once.
    while os.getppid() == parent_pid:
        if sentinel is not None:
            if multiprocessing.connection.wait([sentinel], timeout=1.0):
                break
        else:
            time.sleep(0.1)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace)
    os._exit(_EXIT_ORPHANED)
