"""PostgreSQL links, shared by the store and the audit witness: whether a kept connection is
still alive.

Nothing here imports psycopg (an optional extra).
"""

from __future__ import annotations

import select
from typing import Any

__all__ = ["alive"]


def alive(conn: Any) -> bool:
    """Whether a kept, idle psycopg connection can still be used.

    A server that restarts or shuts down ends every session with a FATAL message and closes the
    socket, so a cut connection's socket is readable while a usable idle one has nothing to read.
    One poll that does not wait tells them apart without a round trip; a connection cut without
    a word (a network failure) passes, and fails at its next query instead.
    """
    if conn.closed:
        return False
    try:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
        return not poller.poll(0)
    except (OSError, ValueError, AttributeError):
        return False
