"""Stdlib HTTPS and TLS clients for the transport tests."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
from typing import Any

from tests.server.conftest import DevServer


def client_context(server: DevServer) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=server.client["ca_file"])


def auth_header(server: DevServer) -> str:
    raw = f"{server.client['username']}:{server.client['password']}".encode()
    return "Basic " + base64.b64encode(raw).decode()


def https_request(
    server: DevServer,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    context: ssl.SSLContext | None = None,
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", server.https_port, context=context or client_context(server), timeout=30
    )
    try:
        payload = body if isinstance(body, (bytes, str)) or body is None else json.dumps(body)
        conn.request(method, path, payload, headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def handshake(port: int, context: ssl.SSLContext) -> tuple[str | None, tuple[str, str, int] | None]:
    """Protocol and cipher of a completed handshake; raises ssl.SSLError when refused."""
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.version(), tls.cipher()
