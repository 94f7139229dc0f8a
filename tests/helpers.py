"""Helpers shared by test modules."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path


def run_cli(
    home: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m sendvault ARGS` as a script would, with SENDVAULT_HOME set."""
    return subprocess.run(
        [sys.executable, "-m", "sendvault", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "SENDVAULT_HOME": str(home), **(env or {})},
        timeout=120,
        check=False,
    )


_GIVEN: set[int] = set()


def free_port() -> int:
    """A free 127.0.0.1 port, never one given before in this process: a server's several ports
    are asked for one after the other, and the kernel may hand out a port just released again
    (an admin port equal to the HTTP port failed a server's start, 1 run in ~1,400)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
