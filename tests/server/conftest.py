"""A real `sendvault serve --dev` on free 127.0.0.1 ports, shared by the transport tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import free_port  # shared: never the same port twice


@dataclass
class DevServer:
    home: Path
    https_port: int
    http_port: int
    admin_port: int
    client: dict[str, Any]
    proc: subprocess.Popen[bytes]
    # The server's stdout and stderr go to this file, not a pipe: a pipe nobody reads would
    # block the server once its access log has filled the pipe's buffer.
    log_path: Path

    def output(self) -> str:
        """Everything the server has printed so far."""
        return self.log_path.read_text(errors="replace")


def start_dev_server(
    home: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    ports: tuple[int, int, int] | None = None,
    wait_healthy: bool = True,
) -> DevServer:
    """Start `sendvault serve --dev`; wait until /healthz answers 200, or with ``wait_healthy``
    False only until the HTTPS port takes connections (a server expected to refuse calls)."""
    https_port, http_port, admin_port = ports or (free_port(), free_port(), free_port())
    home.parent.mkdir(parents=True, exist_ok=True)
    log_path = home.parent / f"server-{https_port}.log"
    log_file = log_path.open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sendvault",
            "serve",
            "--dev",
            "--host",
            "127.0.0.1",
            "--https-port",
            str(https_port),
            "--http-port",
            str(http_port),
            "--admin-port",
            str(admin_port),
            *extra,
        ],
        env={**os.environ, "SENDVAULT_HOME": str(home), **(env or {})},
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    log_file.close()  # the child holds its own descriptor
    path = home / "dev-client.json"
    deadline = time.monotonic() + 60
    while not (path.exists() and path.stat().st_size):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            out = log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"server did not start: {out}")
        time.sleep(0.1)
    client = json.loads(path.read_text())
    server = DevServer(home, https_port, http_port, admin_port, client, proc, log_path)
    if not wait_healthy:
        _wait_listening(server)
    # With client certificates required, the caller waits with its own certificate.
    elif (env or {}).get("SENDVAULT_TLS_CLIENT_CERT") != "required":
        _wait_ready(server)
    return server


def _wait_listening(server: DevServer) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"server exited: {server.output()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", server.https_port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("server never listened")


def _wait_ready(server: DevServer) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", server.https_port), timeout=1) as sock:
                sock.sendall(b"")
            from tests.server.helpers import https_request

            if https_request(server, "GET", "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server never became healthy")


def stop_dev_server(server: DevServer) -> str:
    server.proc.send_signal(signal.SIGTERM)
    try:
        server.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.proc.kill()
        server.proc.wait()
    return server.output()


@pytest.fixture(scope="session")
def dev_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    server = start_dev_server(tmp_path_factory.mktemp("devserver") / "home")
    yield server
    stop_dev_server(server)
