"""A real asyncssh SFTP server on 127.0.0.1 for tests: key and password auth, chrooted folder.

Runs its own event loop in a thread; ``host_keys`` can be swapped to play a server whose key
changed. Keys are generated per server, nothing is fixed.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from sendvault.exchange._asyncssh import asyncssh

USER = "mc"
PASSWORD = "correct horse battery staple"


class _Server(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == USER and password == PASSWORD


class SftpServer:
    """An SFTP server whose root is ``root``; ``port``, ``known_hosts``, ``client_key`` for clients."""

    def __init__(self, root: Path, keys: Path, sftp_class: type[asyncssh.SFTPServer] | None = None) -> None:
        self.root = root
        self._sftp_class = sftp_class or asyncssh.SFTPServer
        root.mkdir(parents=True, exist_ok=True)
        keys.mkdir(parents=True, exist_ok=True)
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        client = asyncssh.generate_private_key("ssh-ed25519")
        self.client_key = keys / "id_ed25519"
        client.write_private_key(self.client_key)
        self.client_key.chmod(0o600)
        self._authorized = keys / "authorized_keys"
        client.write_public_key(self._authorized)
        self.known_hosts = keys / "known_hosts"
        self._loop = asyncio.new_event_loop()
        self._server: Any = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.port = self._call(self._listen())
        self.known_hosts.write_text(self.known_hosts_line(self.host_key))

    @property
    def fingerprint(self) -> str:
        """SHA-256 fingerprint of the host key, as ssh-keygen -lf prints it."""
        return str(self.host_key.get_fingerprint("sha256"))

    def known_hosts_line(self, key: asyncssh.SSHKey) -> str:
        """A known_hosts line for this server and ``key``."""
        public = key.export_public_key("openssh").decode().strip()
        return f"[127.0.0.1]:{self.port} {public}\n"

    def url(self, path: str = "/") -> str:
        """The sftp:// URL of ``path`` on this server."""
        return f"sftp://{USER}@127.0.0.1:{self.port}{path}"

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _listen(self) -> int:
        self._server = await asyncssh.listen(
            "127.0.0.1",
            0,
            server_host_keys=[self.host_key],
            authorized_client_keys=str(self._authorized),
            server_factory=_Server,
            sftp_factory=lambda chan: self._sftp_class(chan, chroot=str(self.root)),
            allow_scp=False,
        )
        return int(self._server.sockets[0].getsockname()[1])

    def change_host_key(self) -> None:
        """Restart on the same port with a new host key (a reinstalled or impostor server)."""
        self._call(self._close())
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        port = self.port

        async def relisten() -> None:
            self._server = await asyncssh.listen(
                "127.0.0.1",
                port,
                server_host_keys=[self.host_key],
                authorized_client_keys=str(self._authorized),
                server_factory=_Server,
                sftp_factory=lambda chan: self._sftp_class(chan, chroot=str(self.root)),
                allow_scp=False,
                reuse_address=True,
            )

        self._call(relisten())

    async def _close(self) -> None:
        self._server.close()
        await self._server.wait_closed()

    def stop(self) -> None:
        """Close the listener and end the loop."""
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
