"""Real SSH servers for `scan ssh` tests: Debian's OpenSSH sshd and asyncssh, on free 127.0.0.1 ports.

sshd runs as a non-daemon (``-D``) with its own host keys and configuration in a temporary
directory. The legacy configuration re-enables what this OpenSSH build (9.2p1) still has:
diffie-hellman-group1-sha1, group14-sha1 and group-exchange-sha1 key exchange, ssh-rsa and
ssh-dss host-key signatures (with a 2048-bit RSA and a 1024-bit DSA key), the CBC and 3DES
ciphers and the hmac-sha1/hmac-md5 MACs with their -96 forms. It cannot offer RSA key exchange
(OpenSSH never implemented RFC 4432) nor arcfour, blowfish or cast128 (removed in OpenSSH 7.6):
the asyncssh servers offer those.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import free_port  # shared: never the same port twice

SSHD = "/usr/sbin/sshd"

MODERN = "\n".join(
    [
        (
            "KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,"
            "diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,diffie-hellman-group-exchange-sha256"
        ),
        "HostKeyAlgorithms ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256",
        (
            "Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,"
            "aes256-ctr,aes192-ctr,aes128-ctr"
        ),
        "MACs hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,umac-128-etm@openssh.com",
        "",
    ]
)
LEGACY = """
KexAlgorithms +diffie-hellman-group1-sha1,diffie-hellman-group14-sha1,diffie-hellman-group-exchange-sha1
HostKeyAlgorithms +ssh-rsa,ssh-dss
PubkeyAcceptedAlgorithms +ssh-rsa,ssh-dss
Ciphers +aes128-cbc,aes192-cbc,aes256-cbc,3des-cbc
MACs +hmac-sha1,hmac-sha1-96,hmac-md5,hmac-md5-96
"""
# (ssh-keygen type, bits) per configuration.
_KEYS = {
    "modern": [("ed25519", None), ("ecdsa", 256), ("rsa", 3072)],
    "legacy": [("ed25519", None), ("ecdsa", 256), ("rsa", 2048), ("dsa", 1024)],
}


def wait_for_banner(port: int, timeout: float = 15.0) -> None:
    """Until the server on ``port`` sends its identification."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no SSH server on port {port}")
        time.sleep(0.05)


@dataclass
class Sshd:
    port: int
    process: subprocess.Popen[bytes]
    directory: Path


@contextmanager
def sshd(config: str, extra: str = "") -> Iterator[Sshd]:
    """Debian's sshd with ``config`` ("modern" or "legacy") and ``extra`` configuration lines,
    stopped at the end."""
    if not Path(SSHD).exists():
        raise RuntimeError("sshd is missing: apt-get install openssh-server (.ci/run does)")
    # sshd refuses to start without its privilege separation directory.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix=f"sendvault-sshd-{config}-"))
    lines = []
    for kind, bits in _KEYS[config]:
        key = directory / f"host_{kind}"
        size = ["-b", str(bits)] if bits else []
        subprocess.run(["ssh-keygen", "-q", "-t", kind, *size, "-N", "", "-f", str(key)], check=True,
                       timeout=60, capture_output=True)  # fmt: skip
        lines.append(f"HostKey {key}")
    process: subprocess.Popen[bytes] | None = None
    try:
        for _ in range(5):  # a free port can be taken between the check and sshd's bind
            port = free_port()
            conf = directory / "sshd_config"
            conf.write_text(
                f"ListenAddress 127.0.0.1:{port}\n" + "\n".join(lines) + "\n"
                "PidFile none\nUsePAM no\nStrictModes no\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nAuthorizedKeysFile none\nLogLevel ERROR\n"
                + (MODERN if config == "modern" else LEGACY)
                + extra
            )
            process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(conf)], stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE)  # fmt: skip
            try:
                wait_for_banner(port, timeout=10)
                break
            except RuntimeError:
                process.kill()
                process.wait(timeout=10)
                process = None
        if process is None:
            raise RuntimeError("sshd did not start")
        yield Sshd(port, process, directory)
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
            if process.stderr is not None:
                process.stderr.close()
        shutil.rmtree(directory, ignore_errors=True)


class AsyncsshServers:
    """asyncssh servers on one event loop in a thread; ``start`` returns a port."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._servers: list[Any] = []

    def start(self, connections: list[object] | None = None, **options: Any) -> int:
        """A server with ``options``; each connection it takes is appended to ``connections``."""
        from sendvault.exchange._asyncssh import asyncssh

        def factory() -> Any:
            if connections is not None:
                connections.append(object())
            return asyncssh.SSHServer()

        async def start() -> int:
            server = await asyncssh.create_server(factory, "127.0.0.1", 0, **options)
            self._servers.append(server)
            return int(server.sockets[0].getsockname()[1])

        return asyncio.run_coroutine_threadsafe(start(), self.loop).result(timeout=60)

    def close(self) -> None:
        async def stop() -> None:
            for server in self._servers:
                server.close()
                await server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def small_rsa_key(bits: int = 1024) -> Any:
    from sendvault.exchange._asyncssh import asyncssh

    return asyncssh.generate_private_key("ssh-rsa", key_size=bits)
