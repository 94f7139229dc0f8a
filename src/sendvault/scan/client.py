"""`scan client`: will this host's clients still connect once TLS 1.2+ with ECDHE is required?

Starts a loopback server with sendvault's own policy (TLS 1.2+, ECDHE and AEAD only) and
checks that the local Python, ``curl`` and ``openssl`` complete a handshake with it, and what
each negotiated. A client that cannot is what the notices (001, 002) will break.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from ..server.certs import CertAuthority
from ..server.tls import server_context
from .findings import CheckResult

__all__ = ["scan_client"]


class _Server:
    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.seen: list[str] = []
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            try:
                conn.settimeout(5)
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    cipher = tls.cipher()
                    self.seen.append(f"{tls.version()} {cipher[0] if cipher else ''}")
                    tls.recv(1024)
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

    def stop(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        self.sock.close()


def _python(port: int, ca: Path) -> str:
    ctx = ssl.create_default_context(cafile=str(ca))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        cipher = tls.cipher()
        return f"{tls.version()} {cipher[0] if cipher else ''}"


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=30, check=False, input="")  # noqa: S603 - fixed local tools


def scan_client() -> CheckResult:
    """Check Python, curl and openssl against a strict loopback server."""
    result = CheckResult("client", "this host")
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        ca = CertAuthority.load_or_create(base)
        ca.issue(base / "server.pem", base / "server.key", ["localhost", "127.0.0.1"])
        server = _Server(server_context(base / "server.pem", base / "server.key"))
        try:
            checks: dict[str, Callable[[], str]] = {"python": lambda: _python(server.port, ca.cert_path)}
            curl, openssl = shutil.which("curl"), shutil.which("openssl")
            if curl:
                checks["curl"] = lambda: _tool(
                    [curl, "-sS", "--cacert", str(ca.cert_path), f"https://localhost:{server.port}/"], server
                )
            else:
                result.cannot("curl is not installed")
            if openssl:
                checks["openssl"] = lambda: _tool(
                    [openssl, "s_client", "-connect", f"127.0.0.1:{server.port}", "-servername", "localhost",
                     "-CAfile", str(ca.cert_path), "-brief"], server,
                )  # fmt: skip
            else:
                result.cannot("openssl is not installed")
            for name, check in checks.items():
                try:
                    result.facts[name] = check()
                    result.ok()
                except (OSError, ssl.SSLError, RuntimeError) as exc:
                    result.fail("client.cannot-connect", f"{name}: {exc}")
        finally:
            server.stop()
    return result


def _tool(args: list[str], server: _Server) -> str:
    before = len(server.seen)
    done = _run(args)
    if len(server.seen) == before:
        raise RuntimeError(f"no handshake (exit {done.returncode}: {done.stderr.strip()[:120]})")
    return server.seen[-1]
