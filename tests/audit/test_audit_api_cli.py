"""Every API call and CLI state change lands in the log; the API answers 503 without the log."""

from __future__ import annotations

import base64
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
from sendvault.audit import Event, open_audit, verify_store
from sendvault.config import load_settings
from sendvault.vault import open_vault, parse_kind


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
    log = audited.app.audit
    assert log is not None
    # Both sides sealed whole (a careless caller may put an address in any field); readable:
    # the tokens the vault issued, and the sendKey's keyed fingerprint.
    assert (res["request_form"], res["response_form"]) == ("sealed", "sealed")
    assert json.loads(log.sealer.open_blob(res["_request"])) == resolve
    assert res["meta"] == {"tokens": [token], "send_key_fp": log.sealer.fingerprint("s1")}
    assert fail["status"] == 401
    assert fail["actor"] is None
    answer = json.loads(log.sealer.open_blob(res["_response"]))
    assert answer["resolvedTokens"][0]["tokenValue"] == "findme@example.com"
    assert answer["resolvedTokens"][0]["attributes"] == [{"name": "FirstName", "value": "Zebulon"}]
    assert (get["request_form"], get["response_form"]) == ("sealed", "sealed")
    assert json.loads(log.sealer.open_blob(get["_request"])) == body
    assert json.loads(log.sealer.open_blob(get["_response"]))["tokens"][0]["token"] == token
    assert get["meta"] == {"tokens": [token]}
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
        # Readiness says so too, so a load balancer stops sending calls that would get 503.
        health = audited.call("GET", "/healthz")
        assert health.status == 503
        assert health.json()["audit"] == "down"
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
    pub = str(home / "keys" / "audit-signing.pub")
    ok = _cli(home, "audit", "verify", "--json", "--public-key", pub)
    assert ok.returncode == 0
    assert json.loads(ok.stdout)["records"] == 4
    export = tmp_path / "export.jsonl"
    assert _cli(home, "audit", "export", "--output", str(export)).returncode == 0
    assert _cli(home, "audit", "verify", "--file", str(export), "--public-key", pub).returncode == 0
    export.write_text(export.read_text().replace("key:rotate", "key:rotatE"))
    broken = _cli(home, "audit", "verify", "--file", str(export), "--public-key", pub)
    assert broken.returncode == 1
    assert "BROKEN at record 4" in broken.stderr
    missing = _cli(home, "audit", "verify", "--file", str(tmp_path / "missing.jsonl"), "--public-key", pub)
    assert missing.returncode == 2
    assert "does not exist" in missing.stderr
    assert b"Audit.Me" not in (home / "audit.db").read_bytes()
    assert b"audit.me" not in (home / "audit.db").read_bytes()


def _disclosed(env: ApiEnv) -> tuple[Path, str]:
    """A Get Token and the resolve that disclosed the value (with an attribute) again."""
    body = {"tokenValues": [{"tokenRequestId": "g", "tokenValue": "seen@example.com", "tokenType": "Email"}]}
    token = env.call("POST", "/v1/mc/tokens", body, env.basic("mc")).json()["tokens"][0]["token"]
    env.app.vault.set_attributes(token, {"FirstName": "Zanzibarian"})
    resolve = {"tokens": [{"tokenRequestId": "r", "token": token}]}
    assert env.call("POST", "/v1/mc/resolve", resolve, env.basic("mc")).status == 200
    assert env.app.audit is not None
    env.app.audit.flush()
    return env.app.settings.home_path, token


def test_show_prints_the_tokens_of_a_resolve_and_keeps_both_sides_sealed(audited: ApiEnv) -> None:
    home, token = _disclosed(audited)
    out = _cli(home, "audit", "show", "--event", "mc:resolve", "--json").stdout
    (row,) = json.loads(out)
    assert row["meta"]["tokens"] == [token]
    assert set(row["request"]) == {"$sealed"}
    assert set(row["response"]) == {"$sealed"}
    assert "seen@" not in out
    assert "Zanzibarian" not in out


def test_show_reveal_opens_the_sealed_answer_of_a_resolve(audited: ApiEnv) -> None:
    home, _ = _disclosed(audited)
    (row,) = json.loads(_cli(home, "audit", "show", "--event", "mc:resolve", "--reveal", "--json").stdout)
    (resolved,) = row["revealed_response"]["resolvedTokens"]
    assert resolved["tokenValue"] == "seen@example.com"
    assert resolved["attributes"] == [{"name": "FirstName", "value": "Zanzibarian"}]


def test_show_reveal_opens_the_sealed_request_of_a_get_token(audited: ApiEnv) -> None:
    home, _ = _disclosed(audited)
    (row,) = json.loads(_cli(home, "audit", "show", "--event", "mc:get-token", "--reveal", "--json").stdout)
    assert row["revealed_request"]["tokenValues"][0]["tokenValue"] == "seen@example.com"


def test_search_by_value_and_type_finds_the_resolve_that_disclosed_it(audited: ApiEnv) -> None:
    home, _ = _disclosed(audited)
    found = _cli(home, "audit", "search", "--value", "Seen@Example.com", "--type", "email", "--json")
    assert [r["event"] for r in json.loads(found.stdout)] == ["mc:get-token", "mc:resolve"]


def test_search_by_value_does_not_create_a_token(audited: ApiEnv) -> None:
    home, _ = _disclosed(audited)
    found = _cli(home, "audit", "search", "--value", "never@example.com", "--type", "email", "--json")
    assert json.loads(found.stdout) == []
    (outcome,) = audited.app.vault.tokenize_many([(parse_kind("email"), "never@example.com")], create=False)
    assert outcome.token is None


def test_clients_add_is_recorded_without_the_secret(tmp_path: Path) -> None:
    home = tmp_path / "home"
    added = _cli(home, "clients", "add", "mcx", "--scopes", "resolve", "--allow", "192.0.2.0/24", "--json")
    secret = json.loads(added.stdout)["client_secret"]
    (row,) = json.loads(_cli(home, "audit", "show", "--event", "client:add", "--json").stdout)
    assert row["meta"] == {
        "client": "mcx",
        "scopes": "resolve",
        "allow": "192.0.2.0/24",
        "tokenize_rate": 0.0,
    }
    assert row["actor"].startswith("cli:")
    assert secret.encode() not in (home / "audit.db").read_bytes()


def test_the_dev_client_creation_is_recorded_once(tmp_path: Path) -> None:
    from sendvault.server.dev import prepare_dev, write_dev_client

    settings = load_settings(env={"SENDVAULT_HOME": str(tmp_path / "home")})
    write_dev_client(settings, prepare_dev(settings))
    write_dev_client(settings, prepare_dev(settings))  # a restart keeps the client and its secret
    log = open_audit(settings)
    with log.store.snapshot() as conn:
        records = [json.loads(r.body) for r in log.store.records(conn)]
    log.close()
    assert [(r["event"], r["meta"]["client"]) for r in records] == [("client:add", "dev")]


def test_purge_after_the_newest_record_removes_all_but_the_newest(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for _ in range(3):
        assert _cli(home, "keys", "rotate").returncode == 0
    purged = _cli(home, "audit", "purge", "--before", "2099-01-01")
    assert "2 record(s) removed through record 2" in purged.stderr
    pub = str(home / "keys" / "audit-signing.pub")
    verdict = json.loads(_cli(home, "audit", "verify", "--json", "--public-key", pub).stdout)
    assert (verdict["first"], verdict["last"]) == (3, 4)  # the newest rotation, then the purge


def test_api_refuses_every_call_until_a_write_succeeds(audited: ApiEnv, tmp_path: Path) -> None:
    log = audited.app.audit
    assert log is not None
    assert audited.call("POST", "/v1/mc/resolve", {"tokens": []}, audited.basic("mc")).status == 200
    log.flush()  # the log exists: each try below waits for the lock
    # Each try waits longer for the lock than the pause between tries, as with the default
    # 5 s busy timeout and 1 s pause: calls made while a retry waits must be refused too.
    log.store._busy_timeout_ms = 300
    log.store.close()
    log._retry_seconds = 0.2
    blocker = sqlite3.connect(tmp_path / "home" / "audit.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        assert audited.call("POST", "/v1/mc/resolve", {"tokens": []}, audited.basic("mc")).status == 200
        deadline = time.monotonic() + 10
        while log._failure is None and time.monotonic() < deadline:
            time.sleep(0.01)
        statuses = []
        until = time.monotonic() + 1.5  # three tries, each failing behind the blocker
        while time.monotonic() < until:
            statuses.append(
                audited.call("POST", "/v1/mc/resolve", {"tokens": []}, audited.basic("mc")).status
            )
            time.sleep(0.05)
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert set(statuses) == {503}
    deadline = time.monotonic() + 10
    while log._failure is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert audited.call("POST", "/v1/mc/resolve", {"tokens": []}, audited.basic("mc")).status == 200


def test_a_record_that_cannot_be_encoded_does_not_hold_the_log(audited: ApiEnv) -> None:
    log = audited.app.audit
    assert log is not None
    log.record(Event.API_REQUEST, meta={"unencodable": object()})
    log.flush()
    log.check()
    assert audited.call("POST", "/v1/mc/resolve", {"tokens": []}, audited.basic("mc")).status == 200
    records = _records(audited)
    assert records[0]["meta"] == {"unencodable": "TypeError"}
    assert records[1]["event"] == "mc:resolve"


def test_a_refused_call_keeps_its_error_answer_and_its_request_sealed(audited: ApiEnv) -> None:
    raw = b'{"tokenValues": [{"tokenRequestId": "1", "tokenValue": "bad.json@example.com"'
    answer = audited.call("POST", "/v1/mc/tokens", raw, audited.basic("mc"))
    assert answer.status == 400
    (record,) = _records(audited)
    assert (record["request_form"], record["response_form"]) == ("sealed", "json")
    assert json.loads(record["_response"]) == answer.json()
    log = audited.app.audit
    assert log is not None
    assert log.sealer.open_blob(record["_request"]) == raw
    assert b"bad.json" not in (audited.app.settings.home_path / "audit.db").read_bytes()


def test_a_failed_login_records_the_claimed_client_but_not_as_actor(audited: ApiEnv) -> None:
    header = {"authorization": "Basic " + base64.b64encode(b"mc:guess-Secret-123").decode()}
    assert audited.call("POST", "/v1/mc/resolve", {"tokens": []}, header).status == 401
    (record,) = _records(audited)
    assert record["event"] == "auth:fail"
    assert record["actor"] is None
    assert record["meta"] == {"claimed_client_id": "mc"}
    assert b"guess-Secret-123" not in (audited.app.settings.home_path / "audit.db").read_bytes()


def test_a_claimed_client_that_does_not_exist_is_kept_only_as_a_fingerprint(audited: ApiEnv) -> None:
    header = {"authorization": "Basic " + base64.b64encode(b"Some.One@example.com:pw").decode()}
    assert audited.call("POST", "/v1/mc/resolve", {"tokens": []}, header).status == 401
    (record,) = _records(audited)
    assert audited.app.audit is not None
    fingerprint = audited.app.audit.sealer.fingerprint("Some.One@example.com")
    assert record["meta"] == {"claimed_client_fp": fingerprint}
    assert b"Some.One" not in (audited.app.settings.home_path / "audit.db").read_bytes()


def test_a_failed_oauth_login_records_the_claimed_client_and_no_body(audited: ApiEnv) -> None:
    form = "grant_type=client_credentials&client_id=mc&client_secret=guess-Secret-123"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert audited.call("POST", "/oauth/token", form, headers).status == 401
    (record,) = _records(audited)
    assert record["meta"] == {"claimed_client_id": "mc"}
    assert "request_form" not in record  # a stranger's body is not kept, sealed or not
    assert record["_request"] == b""


def test_an_authenticated_oauth_refusal_keeps_the_form_sealed_without_its_secret(audited: ApiEnv) -> None:
    form = f"grant_type=client_credentials&client_id=mc&client_secret={audited.secrets['mc']}&scope=admin"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    assert audited.call("POST", "/oauth/token", form, headers).status == 400
    (record,) = _records(audited)
    assert record["actor"] == "mc"
    log = audited.app.audit
    assert log is not None
    sealed = json.loads(log.sealer.open_blob(record["_request"]))
    assert sealed == {"grant_type": "client_credentials", "client_id": "mc", "scope": "admin"}


def test_search_by_send_key_finds_the_resolves_of_that_send(audited: ApiEnv) -> None:
    home, token = _disclosed(audited)
    for key in ("send-1", "send-2"):
        resolve = {"tokens": [{"tokenRequestId": "r", "token": token}], "sendKey": key}
        assert audited.call("POST", "/v1/mc/resolve", resolve, audited.basic("mc")).status == 200
    assert audited.app.audit is not None
    audited.app.audit.flush()
    found = json.loads(_cli(home, "audit", "search", "--send-key", "send-2", "--json").stdout)
    assert audited.app.audit is not None
    fingerprint = audited.app.audit.sealer.fingerprint("send-2")
    assert [(r["event"], r["meta"]) for r in found] == [
        ("mc:resolve", {"tokens": [token], "send_key_fp": fingerprint})
    ]
