"""Loopback TLS and HTTP servers with chosen weaknesses, on free 127.0.0.1 ports."""

from __future__ import annotations

import http.server
import socket
import ssl
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import trustme


class TlsServer:
    """Accepts connections and completes handshakes until stopped."""

    def __init__(self, ctx: ssl.SSLContext) -> None:
        self.ctx = ctx
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.sock.settimeout(0.1)  # so the accept loop notices stop() promptly
        self.port = int(self.sock.getsockname()[1])
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(5)
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (ssl.SSLError, OSError):
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        self._stop = True
        self._thread.join(timeout=5)
        self.sock.close()


@contextmanager
def tls_server(configure: Callable[[ssl.SSLContext], None], cert: trustme.LeafCert) -> Iterator[TlsServer]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(ctx)
    configure(ctx)
    server = TlsServer(ctx)
    try:
        yield server
    finally:
        server.stop()


def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(path)
    return str(path)


@contextmanager
def http_server(
    handler: Callable[[http.server.BaseHTTPRequestHandler], None], ctx: ssl.SSLContext | None = None
) -> Iterator[int]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            handler(self)

        def do_POST(self) -> None:
            handler(self)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if ctx is not None:
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# -- SSH servers: one per configuration for the whole session (tests/scan/ssh_servers.py) ------

import pytest  # noqa: E402
from tests.scan.ssh_servers import AsyncsshServers, Sshd, small_rsa_key, sshd  # noqa: E402


@pytest.fixture(scope="session")
def sshd_modern() -> Iterator[Sshd]:
    with sshd("modern") as server:
        yield server


@pytest.fixture(scope="session")
def sshd_legacy() -> Iterator[Sshd]:
    with sshd("legacy") as server:
        yield server


@pytest.fixture(scope="session")
def asyncssh_servers() -> Iterator[AsyncsshServers]:
    servers = AsyncsshServers()
    try:
        yield servers
    finally:
        servers.close()


@pytest.fixture(scope="session")
def asyncssh_legacy(asyncssh_servers: AsyncsshServers) -> int:
    """asyncssh with a 1024-bit RSA host key, RSA key exchange, arcfour, blowfish and MD5."""
    return asyncssh_servers.start(
        server_host_keys=[small_rsa_key(1024)],
        kex_algs=["curve25519-sha256", "rsa2048-sha256", "rsa1024-sha1", "diffie-hellman-group1-sha1"],
        encryption_algs=["aes128-ctr", "arcfour256", "blowfish-cbc", "cast128-cbc", "3des-cbc"],
        mac_algs=["hmac-sha2-256-etm@openssh.com", "hmac-md5", "umac-64@openssh.com"],
        signature_algs=["rsa-sha2-256", "ssh-rsa"],
    )


@pytest.fixture(scope="session")
def asyncssh_rsa_kex_only(asyncssh_servers: AsyncsshServers) -> int:
    """asyncssh offering only rsa2048-sha256 key exchange, calling itself OpenSSH 7.2p2."""
    return asyncssh_servers.start(
        server_host_keys=[small_rsa_key(2048)],
        kex_algs=["rsa2048-sha256"],
        signature_algs=["rsa-sha2-256"],
        server_version="OpenSSH_7.2p2 Ubuntu-4ubuntu2.10",
    )


@pytest.fixture(scope="session")
def asyncssh_gex_1024(asyncssh_servers: AsyncsshServers) -> int:
    """asyncssh offering SHA-256 group exchange: asked for a small group, it hands out 1024 bits
    (RFC 2409's Oakley group 2), which ssh-audit fails as "using small 1024-bit modulus"."""
    from sendvault.exchange._asyncssh import asyncssh

    return asyncssh_servers.start(
        server_host_keys=[asyncssh.generate_private_key("ssh-ed25519")],
        kex_algs=["curve25519-sha256", "diffie-hellman-group-exchange-sha256"],
        mac_algs=["hmac-sha2-256-etm@openssh.com"],
    )
