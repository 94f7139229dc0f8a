"""Access lines (one per call, no tokens, values or secrets) and refused calls naming their client."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.api.conftest import ApiEnv

from sendvault.api import Authenticator, TokenApi, register_client
from sendvault.audit import open_audit
from sendvault.config import load_settings
from sendvault.server.logs import JsonFormatter, TextFormatter
from sendvault.vault import open_vault

EMAIL = "access-log-probe@example.com"


@pytest.fixture
def env(tmp_path: Path) -> Iterator[ApiEnv]:
    settings = load_settings(
        env={"SENDVAULT_HOME": str(tmp_path / "home")},
        # The server-wide allowlist lets loopback and 198.51.100.0/24 in; 203.0.113.9 is refused.
        overrides={"allow_cidrs": "127.0.0.0/8 198.51.100.0/24"},
    )
    vault = open_vault(settings)
    log = open_audit(settings)
    app = TokenApi(vault, Authenticator(vault.store, vault.shared_key("jwt")), settings, audit=log)
    api = ApiEnv(app)
    api.secrets["mc"] = register_client(vault.store, "mc")
    api.secrets["reader"] = register_client(vault.store, "reader", scopes="resolve")
    api.secrets["office"] = register_client(vault.store, "office", allow="198.51.100.0/24")
    yield api
    log.close()
    vault.close()


def _records(api: ApiEnv) -> list[dict[str, Any]]:
    assert api.app.audit is not None
    api.app.audit.flush()
    with api.app.audit.store.snapshot() as conn:
        return [json.loads(r.body) for r in api.app.audit.store.records(conn)]


def _basic(client: str, secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{client}:{secret}".encode()).decode()}


def test_refused_calls_record_who_called(env: ApiEnv) -> None:
    tokens = {"tokenValues": [{"tokenRequestId": "1", "tokenValue": EMAIL, "tokenType": "Email"}]}
    # Authenticated, but from an address the client may not use: the client is the actor.
    assert env.call("POST", "/v1/mc/tokens", tokens, env.basic("office")).status == 403
    # Authenticated, but without the scope.
    assert env.call("POST", "/v1/mc/tokens", tokens, env.basic("reader")).status == 403
    # Refused by the server-wide allowlist before any credential is checked: the id it claimed.
    assert env.call("POST", "/v1/mc/tokens", tokens, env.basic("mc"), client="203.0.113.9").status == 403
    office, reader, stranger = _records(env)
    assert (office["status"], office["actor"]) == (403, "office")
    assert (reader["status"], reader["actor"]) == (403, "reader")
    assert (stranger["status"], stranger["actor"]) == (403, None)
    assert stranger["meta"] == {"claimed_client_id": "mc"}
    assert stranger["source"] == "203.0.113.9"


def test_one_access_line_per_call_with_no_token_value_or_secret(
    env: ApiEnv, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sendvault.access")
    tokens = {"tokenValues": [{"tokenRequestId": "1", "tokenValue": EMAIL, "tokenType": "Email"}]}
    answer = env.call("POST", "/v1/mc/tokens", tokens, env.basic("mc")).json()
    token = answer["tokens"][0]["token"]
    resolve = {"tokens": [{"tokenRequestId": "r", "token": token}, {"tokenRequestId": "u", "token": "x@y.z"}]}
    assert env.call("POST", "/v1/mc/resolve", resolve, env.basic("mc")).status == 200
    wrong = _basic("mc", "not-" + env.secrets["mc"])
    assert env.call("POST", "/v1/mc/resolve", resolve, wrong).status == 401
    # A stranger whose "client id" is someone's address, and whose secret is a real one.
    assert env.call("POST", "/v1/mc/resolve", resolve, _basic(EMAIL, env.secrets["mc"])).status == 401
    assert env.call("GET", f"/v1/mc/resolve/{EMAIL}").status == 404
    assert env.call("POST", "/v1/mc/tokens", tokens, env.basic("office")).status == 403

    records = [r for r in caplog.records if r.name == "sendvault.access"]
    fields = [r.fields for r in records]  # type: ignore[attr-defined]
    assert [(f["method"], f["route"], f["status"]) for f in fields] == [
        ("POST", "/v1/mc/tokens", 200),
        ("POST", "/v1/mc/resolve", 200),
        ("POST", "/v1/mc/resolve", 401),
        ("POST", "/v1/mc/resolve", 401),
        ("GET", "other", 404),  # the path a caller sent is never written
        ("POST", "/v1/mc/tokens", 403),
    ]
    assert [f["items"] for f in fields] == [1, 2, None, None, None, None]
    assert [(f["client"], f["client_verified"]) for f in fields] == [
        ("mc", True),
        ("mc", True),
        ("mc", False),  # a real client with a wrong secret: worth seeing
        (None, None),  # a made-up id is not written: it may be anything
        (None, None),
        ("office", True),
    ]
    assert all(f["source"] == "127.0.0.1" and f["latency_ms"] >= 0 for f in fields)
    text = "\n".join(JsonFormatter().format(r) + "\n" + TextFormatter().format(r) for r in records)
    for secret in (EMAIL, token, env.secrets["mc"], env.secrets["office"], "access-log-probe"):
        assert secret not in text
    line = json.loads(JsonFormatter().format(records[0]))
    assert line["event"] == "access"
    assert line["level"] == "info"
    assert line["route"] == "/v1/mc/tokens"
    assert (
        TextFormatter()
        .format(records[1])
        .split(" ", 1)[1]
        .startswith("INFO sendvault.access: POST /v1/mc/resolve status=200 items=2 latency_ms=")
    )


def test_access_log_off(env: ApiEnv, caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    settings = load_settings(env={"SENDVAULT_HOME": str(tmp_path / "home"), "SENDVAULT_ACCESS_LOG": "off"})
    quiet = TokenApi(env.app.vault, env.app.auth, settings)
    caplog.set_level(logging.INFO, logger="sendvault.access")
    assert ApiEnv(quiet).call("GET", "/healthz").status == 200
    assert not [r for r in caplog.records if r.name == "sendvault.access"]
