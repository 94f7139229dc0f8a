"""Every API call and CLI state change lands in the log; the API answers 503 without the log."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.api.conftest import ApiEnv
from tests.helpers import run_cli as _cli

from sendvault.api import Authenticator, TokenApi, register_client
from sendvault.audit import open_audit, verify_store
from sendvault.config import load_settings
from sendvault.vault import open_vault


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[ApiEnv]:
    settings = load_settings(env={"SENDVAULT_HOME": str(tmp_path / "home")})
    vault = open_vault(settings)
    log = open_audit(settings)
    env = ApiEnv(TokenApi(vault, Authenticator(vault.store, vault.shared_key("jwt")), settings, audit=log))
    env.secrets["mc"] = register_client(vault.store, "mc")
    yield env
    log.close()
    vault.close()


def _records(env: ApiEnv) -> list[dict[str, Any]]:
    assert env.app.audit is not None
    env.app.audit.flush()  # the API queues records and answers; wait for the writer
    with env.app.audit.store.snapshot() as conn:
        return [
            {**json.loads(r.body), "_request": r.request, "_response": r.response}
            for r in env.app.audit.store.records(conn)
        ]


def test_each_call_is_recorded_with_its_metadata_and_no_clear_values(audited: ApiEnv, tmp_path: Path) -> None:
    body = {
        "tokenValues": [{"tokenRequestId": "g", "tokenValue": "findme@example.com", "tokenType": "Email"}]
    }
    token = audited.call("POST", "/v1/mc/tokens", body, audited.basic("mc")).json()["tokens"][0]["token"]
    audited.app.vault.set_attributes(token, {"FirstName": "Zebulon"})
    resolve = {"tokens": [{"tokenRequestId": "r", "token": token}], "sendKey": "s1"}
    assert audited.call("POST", "/v1/mc/resolve", resolve, audited.basic("mc")).status == 200
    assert audited.call("POST", "/v1/mc/resolve", resolve).status == 401
    records = _records(audited)
    assert [r["event"] for r in records] == ["mc:get-token", "mc:resolve", "auth:fail"]
    get, res, fail = records
    assert get["actor"] == "mc"
    assert get["source"] == "127.0.0.1"
    assert get["status"] == 200
    assert get["counts"] == {"items": 1, "tokens": 1, "created": 1}
    assert res["request_form"] == "json"
    assert json.loads(res["_request"]) == {
        "tokens": [{"tokenRequestId": "r", "token": token}],
        "sendKey": "s1",
    }
    assert res["response_form"] == "sealed"
    assert fail["status"] == 401
    assert fail["actor"] is None
    log = audited.app.audit
    assert log is not None
    answer = json.loads(log.sealer.open_blob(res["_response"]))
    assert answer["resolvedTokens"][0]["tokenValue"] == "findme@example.com"
    assert answer["resolvedTokens"][0]["attributes"] == [{"name": "FirstName", "value": "Zebulon"}]
    assert json.loads(log.sealer.open_blob(get["_request"])) == body
    assert json.loads(get["_response"])["tokens"][0]["token"] == token
    assert get["fingerprints"] == [log.sealer.fingerprint("findme@example.com")]
    verify_store(audited.app.audit.store)
    for path in (tmp_path / "home").rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"findme@" not in data
            assert b"Zebulon" not in data


def test_api_answers_503_while_the_log_cannot_be_written_and_keeps_queued_records(
    audited: ApiEnv, tmp_path: Path
) -> None:
    log = audited.app.audit
    assert log is not None
    log.store._busy_timeout_ms = 100
    log.store.close()
    log._retry_seconds = 0.2
    blocker = sqlite3.connect(tmp_path / "home" / "audit.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        # Answered and queued; its write fails behind the blocker and is retried.
        assert audited.call("POST", "/v1/mc/resolve", {"tokens": []}, audited.basic("mc")).status == 200
        deadline = time.monotonic() + 10
        while log._failure is None and time.monotonic() < deadline:
            time.sleep(0.01)
        refused = audited.call("POST", "/v1/mc/resolve", {"tokens": []}, audited.basic("mc"))
        assert refused.status == 503
        assert refused.json()["reason"] == "audit log unavailable"
        assert "retry-after" in refused.headers
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    deadline = time.monotonic() + 10
    while log._failure is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    assert audited.call("POST", "/v1/mc/resolve", {"tokens": []}, audited.basic("mc")).status == 200
    log.flush()
    assert [r["status"] for r in _records(audited)] == [200, 200]
    verify_store(log.store)


def test_cli_changes_are_recorded_searchable_exportable_and_verifiable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    token = _cli(home, "token", "get", "--type", "email", "Audit.Me@example.com").stdout.strip()
    assert _cli(home, "contact", "attrs", "set", token, "FirstName=Ann").returncode == 0
    assert _cli(home, "erase", "--token", token).returncode == 0
    assert _cli(home, "keys", "rotate").returncode == 0
    shown = json.loads(_cli(home, "audit", "show", "--json").stdout)
    assert [r["event"] for r in shown] == ["token:create", "contact:attrs", "contact:erase", "key:rotate"]
    found = json.loads(
        _cli(home, "audit", "search", "--value", "audit.me@example.com", "--type", "email", "--json").stdout
    )
    assert [r["event"] for r in found] == ["token:create"]
    assert (
        json.loads(_cli(home, "audit", "search", "--token", token, "--json").stdout)[0]["event"]
        == "token:create"
    )
    ok = _cli(home, "audit", "verify", "--json")
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["records"] == 4
    export = tmp_path / "export.jsonl"
    assert _cli(home, "audit", "export", "--output", str(export)).returncode == 0
    assert _cli(home, "audit", "verify", "--file", str(export)).returncode == 0
    export.write_text(export.read_text().replace("key:rotate", "key:rotatE"))
    broken = _cli(home, "audit", "verify", "--file", str(export))
    assert broken.returncode == 1
    assert "BROKEN at record 4" in broken.stderr
    assert _cli(home, "audit", "verify", "--file", str(tmp_path / "missing.jsonl")).returncode == 2
    assert b"Audit.Me" not in (home / "audit.db").read_bytes()
    assert b"audit.me" not in (home / "audit.db").read_bytes()
