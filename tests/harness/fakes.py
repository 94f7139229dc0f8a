"""Small token servers written for the harness tests: one sound, the others broken on purpose.

Each serves the Marketing Cloud contract from memory over real TLS (trustme certificates) on
127.0.0.1, with a plain-HTTP listener that redirects, through uvicorn. A flaw breaks exactly
one behaviour, so the harness must fail exactly the check that covers it:

- ``drop-id``: a resolve answer of two or more items leaves the last request id out
- ``unknown-500``: a resolve batch holding an unknown token is answered 500
- ``tls10``: TLS 1.0 and 1.1 accepted (ECDHE suites only, so nothing else changes)
- ``rsa-kex``: RSA key exchange accepted (TLS 1.2)
- ``redirect-302``: plain HTTP answered 302 instead of 308
- ``address-in-token``: an email token carries the address's local part
- ``slow``: resolve takes 5 ms per token, so 500 tokens miss a short deadline
- ``stop-503``: Get Token calls holding only mobile numbers (inbound SMS) are answered 503
- ``wrong-value``: every 97th resolved item comes back with another value
- ``dedupe-values``: a value sent twice in one Get Token batch is answered for its first id only
- ``omit-empty``: not a flaw: empty arrays are left out of answers, which the harness accepts
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import socket
import ssl
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trustme
import uvicorn

USER, PASSWORD = "mc", "fake-secret-1"
_AUTH = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
_MODERN = "ECDHE+AESGCM:ECDHE+CHACHA20"


@dataclass
class FakeServer:
    """One fake token server: its ports and everything it was sent."""

    flaws: frozenset[str]
    https_port: int = 0
    http_port: int = 0
    by_value: dict[tuple[str, str], str] = field(default_factory=dict)
    by_token: dict[str, str] = field(default_factory=dict)
    received_values: set[str] = field(default_factory=set)
    resolve_calls: int = 0

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.https_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    # -- the contract, from memory -------------------------------------------------------------

    def _token_for(self, kind: str, value: str) -> str | None:
        if kind == "Email":
            local, at, domain = value.rpartition("@")
            if not at or not local or "." not in domain or " " in value:
                return None
        elif kind == "MobileNumber":
            if not (value.isdigit() and 8 <= len(value) <= 15 and not value.startswith("0")):
                return None
        else:
            return None
        key = (kind, value)
        if key not in self.by_value:
            if kind == "Email":
                prefix = value.rpartition("@")[0] + "." if "address-in-token" in self.flaws else ""
                token = f"{prefix}{secrets.token_hex(12)}@tokens.fake.test"
            else:
                token = "999" + "".join(secrets.choice("0123456789") for _ in range(12))
            self.by_value[key] = token
            self.by_token[token] = value
        return self.by_value[key]

    def get_token(self, doc: Any) -> tuple[int, Any]:
        if not isinstance(doc, dict) or not isinstance(doc.get("tokenValues"), list):
            return 400, {"error": "tokenValues array needed"}
        items = [i for i in doc["tokenValues"] if isinstance(i, dict)]
        if "stop-503" in self.flaws and items and all(i.get("tokenType") == "MobileNumber" for i in items):
            return 503, {"error": "unavailable"}
        tokens = []
        seen: set[object] = set()
        for item in items:
            value = item.get("tokenValue")
            if "dedupe-values" in self.flaws:
                if value in seen:
                    continue
                seen.add(value)
            if isinstance(value, str):
                self.received_values.add(value)
                token = self._token_for(str(item.get("tokenType")), value)
                if token is not None:
                    tokens.append({"tokenRequestId": item.get("tokenRequestId"), "token": token})
        return 200, {"tokens": tokens}

    async def resolve(self, doc: Any) -> tuple[int, Any]:
        if not isinstance(doc, dict) or not isinstance(doc.get("tokens"), list):
            return 400, {"error": "tokens array needed"}
        items = [i for i in doc["tokens"] if isinstance(i, dict)]
        self.resolve_calls += 1
        if "slow" in self.flaws:
            await asyncio.sleep(0.005 * len(items))
        if "unknown-500" in self.flaws and any(i.get("token") not in self.by_token for i in items):
            return 500, {"error": "token not found"}
        resolved, unresolved = [], []
        for n, item in enumerate(items):
            value = self.by_token.get(str(item.get("token")))
            rid = item.get("tokenRequestId")
            if value is None:
                unresolved.append({"tokenRequestId": rid, "message": "not found"})
            else:
                if "wrong-value" in self.flaws and n % 97 == 96:
                    value = "someone.else@example.com"
                resolved.append({"tokenRequestId": rid, "tokenValue": value, "attributes": []})
        if "drop-id" in self.flaws and len(items) >= 2:
            (unresolved or resolved).pop()
        answer = {"resolvedTokens": resolved, "unresolvedTokens": unresolved}
        if "omit-empty" in self.flaws:
            answer = {k: v for k, v in answer.items() if v}
        return 200, answer

    # -- ASGI --------------------------------------------------------------------------------------

    async def https_app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = dict(scope["headers"])
        status: int
        answer: Any
        if headers.get(b"authorization", b"").decode() != _AUTH:
            status, answer = 401, {"error": "unauthorized"}
        elif scope["method"] != "POST" or scope["path"] not in ("/v1/mc/tokens", "/v1/mc/resolve"):
            status, answer = 404, {"error": "not found"}
        else:
            try:
                doc = json.loads(body)
            except ValueError:
                doc = None
            if scope["path"] == "/v1/mc/tokens":
                status, answer = self.get_token(doc)
            else:
                status, answer = await self.resolve(doc)
        payload = json.dumps(answer).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                    (b"strict-transport-security", b"max-age=31536000"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})

    async def http_app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        status = 302 if "redirect-302" in self.flaws else 308
        location = f"https://127.0.0.1:{self.https_port}{scope['path']}".encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"location", location), (b"content-length", b"0")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    def ssl_context(self, pem: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pem)
        if "tls10" in self.flaws:
            # Python deprecates the legacy versions; serving one on purpose is this fake's flaw.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.set_ciphers(_MODERN + ":ECDHE+AES:@SECLEVEL=0")
        elif "rsa-kex" in self.flaws:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(_MODERN + ":AES128-GCM-SHA256")
        else:
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.set_ciphers(_MODERN)
        return ctx


def _socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


class FakeFarm:
    """Every fake server, served by uvicorn on one event loop in a background thread."""

    def __init__(self, workdir: Path, flaw_sets: dict[str, frozenset[str]]) -> None:
        ca = trustme.CA()
        rsa_ca = trustme.CA(key_type=trustme.KeyType.RSA)
        self.ca_file = workdir / "fake-ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        self.rsa_ca_file = workdir / "fake-rsa-ca.pem"
        rsa_ca.cert_pem.write_to_path(str(self.rsa_ca_file))
        pem = workdir / "fake-server.pem"
        rsa_pem = workdir / "fake-server-rsa.pem"
        for issuer, path, kind in ((ca, pem, trustme.KeyType.ECDSA), (rsa_ca, rsa_pem, trustme.KeyType.RSA)):
            cert = issuer.issue_cert("127.0.0.1", "localhost", key_type=kind)
            path.write_bytes(b"".join(b.bytes() for b in [*cert.cert_chain_pems, cert.private_key_pem]))
        self.servers = {name: FakeServer(flaws) for name, flaws in flaw_sets.items()}
        self._pems = {name: str(rsa_pem if "rsa-kex" in s.flaws else pem) for name, s in self.servers.items()}
        self._loop = asyncio.new_event_loop()
        self._uvicorns: list[uvicorn.Server] = []
        self._ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fake-token-servers", daemon=True)

    def ca_for(self, name: str) -> Path:
        return self.rsa_ca_file if "rsa-kex" in self.servers[name].flaws else self.ca_file

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        tasks = []
        for name, server in self.servers.items():
            for app, tls in ((server.https_app, True), (server.http_app, False)):
                sock = _socket()
                port = sock.getsockname()[1]
                if tls:
                    server.https_port = port
                else:
                    server.http_port = port
                config = uvicorn.Config(
                    app,
                    log_level="error",
                    lifespan="off",
                    access_log=False,
                    loop="asyncio",
                    interface="asgi3",
                )
                if tls:
                    pem = self._pems[name]
                    config.ssl_context_factory = lambda _c, _d, s=server, p=pem: s.ssl_context(p)
                uv = uvicorn.Server(config)
                self._uvicorns.append(uv)
                tasks.append(asyncio.ensure_future(uv.serve(sockets=[sock])))
        while not all(uv.started for uv in self._uvicorns):
            broken = next((t for t in tasks if t.done()), None)
            if broken is not None:
                self.error = broken.exception() or RuntimeError("a fake server stopped")
                self._ready.set()
                break
            await asyncio.sleep(0.02)
        self._ready.set()
        await asyncio.gather(*tasks, return_exceptions=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(timeout=30):
            raise RuntimeError("the fake servers did not start")
        if self.error is not None:
            self.stop()
            raise RuntimeError(f"a fake server did not start: {self.error!r}")

    def stop(self) -> None:
        for uv in self._uvicorns:
            uv.should_exit = True
        self._thread.join(timeout=30)
        self._loop.close()


def farm(workdir: Path, flaw_sets: dict[str, frozenset[str]]) -> Iterator[FakeFarm]:
    """Start the fakes, yield them, stop them."""
    fakes = FakeFarm(workdir, flaw_sets)
    fakes.start()
    try:
        yield fakes
    finally:
        fakes.stop()
