"""Real `sendvault serve` replicas on one database, as a deployment runs them.

Each replica is its own process with its own home (audit log, signing key), sharing what a
deployment shares: the database, the key-encryption key and the HTTPS certificate.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import free_port  # shared: never the same port twice

from sendvault.server.certs import CertAuthority


@dataclass
class Deployment:
    """What every replica of one deployment shares."""

    root: Path
    env: dict[str, str]
    ca_file: Path

    @classmethod
    def create(cls, root: Path, database_url: str, **settings: str) -> Deployment:
        certs = root / "certs"
        certs.mkdir(parents=True)
        ca = CertAuthority.load_or_create(certs)
        ca.issue(certs / "server.pem", certs / "server.key", ["localhost", "127.0.0.1"])
        env = {
            "SENDVAULT_DATABASE_URL": database_url,
            "SENDVAULT_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
            "SENDVAULT_TLS_CERT_FILE": str(certs / "server.pem"),
            "SENDVAULT_TLS_KEY_FILE": str(certs / "server.key"),
            "SENDVAULT_HTTP_PORT": "0",
            "SENDVAULT_ADMIN_PORT": "0",
            **{f"SENDVAULT_{k.upper()}": v for k, v in settings.items()},
        }
        return cls(root, env, ca.cert_path)

    def home(self, name: str) -> Path:
        return self.root / name

    def env_for(self, home: Path) -> dict[str, str]:
        return {**os.environ, **self.env, "SENDVAULT_HOME": str(home)}

    def cli(self, home: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """`sendvault ARGS` as an operator on the host of the replica at ``home`` runs it."""
        return subprocess.run(
            [sys.executable, "-m", "sendvault", *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env_for(home),
            timeout=120,
            check=False,
        )

    def start_with_client(
        self, name: str, *, workers: int = 1, client: str = "mc", **settings: str
    ) -> Replica:
        """Register API client ``client`` on the shared database, then start replica ``name``
        with the client's HTTP Basic credentials as its default headers."""
        from sendvault.api.auth import register_client
        from sendvault.config import load_settings
        from sendvault.vault import open_store

        store = open_store(load_settings(env={**self.env, "SENDVAULT_HOME": str(self.home(name))}))
        try:
            secret = register_client(store, client)
        finally:
            store.close()
        replica = self.start(name, workers=workers, **settings)
        replica.headers = basic(client, secret)
        return replica

    def start(self, name: str, *, workers: int = 1, **settings: str) -> Replica:
        home = self.home(name)
        port = free_port()
        env = {
            **self.env_for(home),
            "SENDVAULT_HTTPS_PORT": str(port),
            "SENDVAULT_WORKERS": str(workers),
            **{f"SENDVAULT_{k.upper()}": v for k, v in settings.items()},
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "sendvault", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        replica = Replica(name, home, port, proc, ssl.create_default_context(cafile=str(self.ca_file)))
        replica.wait_ready()
        return replica


@dataclass
class Replica:
    name: str
    home: Path
    port: int
    proc: subprocess.Popen[bytes]
    context: ssl.SSLContext
    headers: dict[str, str] = field(default_factory=dict)
    output: str = field(default="")

    def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.communicate()[0].decode()[-3000:]
                raise RuntimeError(f"replica {self.name} exited: {out}")
            try:
                if self.request("GET", "/healthz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"replica {self.name} never became healthy: {self.output[-3000:]}")

    def connection(self, timeout: float = 60) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context, timeout=timeout)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        conn: http.client.HTTPSConnection | None = None,
    ) -> tuple[int, bytes]:
        own = conn is None
        conn = conn or self.connection()
        try:
            payload = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
            conn.request(method, path, payload, {"Content-Type": "application/json", **(headers or {})})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            if own:
                conn.close()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out = self.proc.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out = self.proc.communicate()[0]
        self.output = out.decode()
        return self.output


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()}


def pg_schema(admin_url: str) -> Iterator[str]:
    """A URL whose search_path is a fresh schema on the test PostgreSQL, dropped afterwards."""
    import psycopg

    schema = f"sv_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in admin_url else "?"
    try:
        yield f"{admin_url}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA {schema} CASCADE")
