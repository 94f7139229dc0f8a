"""The process around the API: workers die with their parent and a restart works, no WAL file is
left behind or grows without bound, and the 308 never names a host a caller made up."""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.server.conftest import DevServer, start_dev_server, stop_dev_server
from tests.server.helpers import auth_header, https_request

from sendvault.audit.store import AuditStore, Pending


def _workers(main_pid: int) -> list[int]:
    """The worker processes of a `sendvault serve` (multiprocessing's spawned children)."""
    children = Path(f"/proc/{main_pid}/task/{main_pid}/children").read_text().split()
    return [
        int(pid)
        for pid in children
        if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
        and b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting for a reaper."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status and "\nState:\tX" not in status


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc")
def test_workers_exit_within_a_second_of_their_parents_death_and_a_restart_works(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_dev_server(home, "--workers", "2")
    ports = (server.https_port, server.http_port, server.admin_port)
    workers = _workers(server.proc.pid)
    assert len(workers) == 2
    try:
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        killed = time.monotonic()
        while any(_running(pid) for pid in workers) and time.monotonic() - killed < 5:
            time.sleep(0.02)
        gone_after = time.monotonic() - killed
        assert not any(_running(pid) for pid in workers)
        assert gone_after < 1.0
    finally:
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
    # Nothing holds the ports: the same command starts again and serves.
    again = start_dev_server(home, "--workers", "2", ports=ports)
    try:
        headers = {"authorization": auth_header(again), "content-type": "application/json"}
        assert https_request(again, "POST", "/v1/mc/resolve", {"tokens": []}, headers)[0] == 200
    finally:
        output = stop_dev_server(again)
    assert "Address already in use" not in output


def _traffic(server: DevServer) -> None:
    headers = {"authorization": auth_header(server), "content-type": "application/json"}
    items = [
        {"tokenRequestId": str(i), "tokenValue": f"wal{i}@example.com", "tokenType": "Email"}
        for i in range(50)
    ]
    for _ in range(5):
        assert https_request(server, "POST", "/v1/mc/tokens", {"tokenValues": items}, headers)[0] == 200


def _wal_files(home: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in home.glob("*-wal")}


def test_a_stopped_server_leaves_no_wal_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_dev_server(home)
    _traffic(server)
    assert _wal_files(home)  # while serving, both databases write ahead
    stop_dev_server(server)
    assert _wal_files(home) == {}


def test_a_killed_worker_stops_the_server_and_leaves_no_wal_file(tmp_path: Path) -> None:
    home = tmp_path / "home"
    server = start_dev_server(home)
    _traffic(server)
    (worker,) = _workers(server.proc.pid)
    os.kill(worker, signal.SIGKILL)  # its connections stay open: nobody checkpoints for it
    assert server.proc.wait(timeout=30) == 1
    assert "a worker exited" in server.output()
    assert _wal_files(home) == {}


def test_the_audit_wal_stays_bounded_under_a_burst(tmp_path: Path) -> None:
    signer = Ed25519PrivateKey.generate()
    store = AuditStore(tmp_path / "audit.db", signer, signer.public_key())
    payload = os.urandom(100_000)  # the size of a sealed 500-token resolve answer
    largest = 0
    try:
        for n in range(48):  # 48 MB in groups of 10 records, as the writer groups them
            records = [
                Pending(1_000_000 + n, "mc:resolve", "mc", "/v1/mc/resolve", 200, b"{}", (), b"", payload)
                for _ in range(10)
            ]
            store.append(records)
            largest = max(largest, (tmp_path / "audit.db-wal").stat().st_size)
    finally:
        store.close()
    # One group over the 16 MiB checkpoint, never SQLite's default 64 MiB.
    assert largest < 16 * 1024 * 1024 + 2 * 1024 * 1024
    assert not (tmp_path / "audit.db-wal").exists()


def _redirect(server: DevServer, host: str) -> str:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(
            f"POST /v1/mc/resolve?x=1 HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n".encode()
        )
        answer = sock.recv(65536).decode("latin-1")
    assert answer.startswith("HTTP/1.1 308"), answer
    return next(
        line.split(": ", 1)[1] for line in answer.split("\r\n") if line.lower().startswith("location:")
    )


def test_the_308_names_only_the_servers_own_hosts(dev_server: DevServer) -> None:
    port = dev_server.https_port
    for host in ("evil.example.com", "evil.example.com:443", "localhost.evil.example", "[::2]", "10.0.0.1"):
        assert _redirect(dev_server, host) == f"https://127.0.0.1:{port}/v1/mc/resolve?x=1", host
    # The certificate's names (dev: localhost, 127.0.0.1, ::1), in any case, with any port.
    assert _redirect(dev_server, "LocalHost:8080") == f"https://LocalHost:{port}/v1/mc/resolve?x=1"
    assert _redirect(dev_server, "127.0.0.1") == f"https://127.0.0.1:{port}/v1/mc/resolve?x=1"
    assert _redirect(dev_server, "[::1]") == f"https://[::1]:{port}/v1/mc/resolve?x=1"
