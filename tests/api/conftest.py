"""An in-process token API with clients of each kind, and a small ASGI caller.

Route logic is tested here against the ASGI app directly; transport (TLS, 308, workers) is
tested against real servers in tests/server/.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from sendvault.api import Authenticator, TokenApi, register_client
from sendvault.config import load_settings
from sendvault.vault import open_vault


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class ApiEnv:
    app: TokenApi
    secrets: dict[str, str] = field(default_factory=dict)

    def basic(self, client: str) -> dict[str, str]:
        raw = f"{client}:{self.secrets[client]}".encode()
        return {"authorization": "Basic " + base64.b64encode(raw).decode()}

    def call(
        self,
        method: str,
        path: str,
        body: bytes | str | dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
        client: str = "127.0.0.1",
    ) -> Answer:
        if isinstance(body, dict):
            body = json.dumps(body)
        raw = body.encode() if isinstance(body, str) else (body or b"")
        hdrs = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        scope = {
            "type": "http",
            "method": method,
            "path": path.split("?", maxsplit=1)[0],
            "query_string": b"",
            "headers": [(b"content-length", str(len(raw)).encode()), *hdrs],
            "client": (client, 50000),
        }
        sent: list[dict[str, Any]] = []
        messages = [{"type": "http.request", "body": raw, "more_body": False}]

        async def receive() -> dict[str, Any]:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(self.app(scope, receive, send))
        start = sent[0]
        return Answer(
            start["status"],
            {k.decode(): v.decode() for k, v in start["headers"]},
            b"".join(m.get("body", b"") for m in sent[1:]),
        )


@pytest.fixture
def api(tmp_path: Path) -> Iterator[ApiEnv]:
    settings = load_settings(
        env={"SENDVAULT_HOME": str(tmp_path / "home")},
        overrides={"trusted_proxies": "10.99.0.0/16", "max_batch": 500, "max_body_bytes": 200_000},
    )
    vault = open_vault(settings)
    env = ApiEnv(TokenApi(vault, Authenticator(vault.store, vault.shared_key("jwt")), settings))
    env.secrets["mc"] = register_client(vault.store, "mc")
    env.secrets["reader"] = register_client(vault.store, "reader", scopes="resolve")
    env.secrets["writer"] = register_client(vault.store, "writer", scopes="tokenize")
    env.secrets["office"] = register_client(vault.store, "office", allow="192.0.2.0/24")
    env.secrets["slow"] = register_client(vault.store, "slow", tokenize_rate=1.0)
    yield env
    vault.close()
