"""The Marketing Cloud routes, driven by tests/vectors/api/resolve.json, and every status code."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from tests.api.conftest import ApiEnv
from tests.conftest import VECTORS

from sendvault.vault import parse_kind

_DOC = json.loads((VECTORS / "api" / "resolve.json").read_text())


def _setup(api: ApiEnv) -> dict[str, str]:
    tokens = {}
    for kind, value, attrs in _DOC["setup"]:
        (result,) = api.app.vault.tokenize_many([(parse_kind(kind), value)])
        assert result.token is not None
        if attrs:
            api.app.vault.set_attributes(result.token, attrs)
        tokens[value] = result.token
    return tokens


def _fill(node: Any, tokens: dict[str, str]) -> Any:
    if isinstance(node, str):
        return re.sub(r"\{\{token:([^}]+)\}\}", lambda m: tokens[m.group(1)], node)
    if isinstance(node, list):
        return [_fill(n, tokens) for n in node]
    if isinstance(node, dict):
        return {k: _fill(v, tokens) for k, v in node.items()}
    return node


@pytest.mark.parametrize("case", _DOC["cases"], ids=lambda c: c["name"])
def test_vector(api: ApiEnv, case: dict[str, Any]) -> None:
    tokens = _setup(api)
    body = case["raw"] if "raw" in case else json.dumps(_fill(case["body"], tokens))
    answer = api.call("POST", case["path"], body, api.basic("mc"))
    assert answer.status == case["status"]
    assert answer.json() == _fill(case["answer"], tokens)


def test_get_token_creates_new_tokens_and_retries_get_the_same(api: ApiEnv) -> None:
    body = {"tokenValues": [{"tokenRequestId": "n1", "tokenValue": "new@example.com", "tokenType": "Email"}]}
    first = api.call("POST", "/v1/mc/tokens", body, api.basic("mc")).json()
    again = api.call("POST", "/v1/mc/tokens", body, api.basic("mc")).json()
    assert first == again
    token = first["tokens"][0]["token"]
    resolved = api.call(
        "POST", "/v1/mc/resolve", {"tokens": [{"tokenRequestId": "x", "token": token}]}, api.basic("mc")
    )
    assert resolved.json()["resolvedTokens"][0]["tokenValue"] == "new@example.com"


def test_every_answer_has_hsts_and_no_store(api: ApiEnv) -> None:
    for answer in (
        api.call("POST", "/v1/mc/resolve", {"tokens": []}, api.basic("mc")),
        api.call("POST", "/v1/mc/resolve", {"tokens": []}),
        api.call("GET", "/nowhere"),
        api.call("GET", "/healthz"),
    ):
        assert answer.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"
        assert answer.headers["cache-control"] == "no-store"


def test_missing_and_bad_credentials_are_401(api: ApiEnv) -> None:
    body = {"tokens": []}
    assert api.call("POST", "/v1/mc/resolve", body).status == 401
    bad = {"authorization": "Basic " + "bWM6d3Jvbmc="}  # mc:wrong
    answer = api.call("POST", "/v1/mc/resolve", body, bad)
    assert answer.status == 401
    assert "www-authenticate" in answer.headers
    assert api.call("POST", "/v1/mc/resolve", body, {"authorization": "Bearer not.a.jwt"}).status == 401
    assert api.call("POST", "/v1/mc/resolve", body, {"authorization": "Digest x"}).status == 401


def test_repeated_failures_never_lock_the_right_credential_out_of_their_address(api: ApiEnv) -> None:
    bad = {"authorization": "Basic " + "bWM6d3Jvbmc="}
    for _ in range(12):
        assert api.call("POST", "/v1/mc/resolve", {"tokens": []}, bad, client="198.51.100.7").status == 401
    assert api.app.auth.failures.failing("198.51.100.7")  # slowed from now on, not refused
    right = api.call("POST", "/v1/mc/resolve", {"tokens": []}, api.basic("mc"), client="198.51.100.7")
    assert right.status == 200


def test_scopes_separate_resolving_from_tokenizing(api: ApiEnv) -> None:
    resolve = {"tokens": []}
    get = {"tokenValues": []}
    assert api.call("POST", "/v1/mc/resolve", resolve, api.basic("writer")).status == 403
    assert api.call("POST", "/v1/mc/tokens", get, api.basic("writer")).status == 200
    assert api.call("POST", "/v1/mc/tokens", get, api.basic("reader")).status == 403
    assert api.call("POST", "/v1/mc", resolve, api.basic("writer")).status == 403
    assert api.call("POST", "/v1/mc", get, api.basic("writer")).status == 200


def test_client_allowlist_and_trusted_proxy(api: ApiEnv) -> None:
    body = {"tokens": []}
    assert api.call("POST", "/v1/mc/resolve", body, api.basic("office"), client="203.0.113.9").status == 403
    assert api.call("POST", "/v1/mc/resolve", body, api.basic("office"), client="192.0.2.10").status == 200
    via_proxy = {**api.basic("office"), "x-forwarded-for": "192.0.2.10, 10.99.0.5"}
    assert api.call("POST", "/v1/mc/resolve", body, via_proxy, client="10.99.0.1").status == 200
    # An untrusted peer's X-Forwarded-For is ignored.
    assert api.call("POST", "/v1/mc/resolve", body, via_proxy, client="203.0.113.9").status == 403


def test_batch_over_the_limit_is_413(api: ApiEnv) -> None:
    body = {"tokens": [{"tokenRequestId": str(i), "token": "t"} for i in range(501)]}
    answer = api.call("POST", "/v1/mc/resolve", body, api.basic("mc"))
    assert answer.status == 413
    assert answer.json()["error"] == "too-large"


def test_body_over_the_limit_is_413(api: ApiEnv) -> None:
    answer = api.call("POST", "/v1/mc/resolve", b"x" * 200_001, api.basic("mc"))
    assert answer.status == 413


def test_get_token_rate_limit(api: ApiEnv) -> None:
    values = [
        {"tokenRequestId": str(i), "tokenValue": f"u{i}@example.com", "tokenType": "Email"} for i in range(60)
    ]
    assert api.call("POST", "/v1/mc/tokens", {"tokenValues": values}, api.basic("slow")).status == 200
    limited = api.call("POST", "/v1/mc/tokens", {"tokenValues": values[:5]}, api.basic("slow"))
    assert limited.status == 429
    assert int(limited.headers["retry-after"]) >= 1


def test_store_unavailable_is_503_with_retry_after(api: ApiEnv) -> None:
    api.app.vault.store.close()
    answer = api.call(
        "POST", "/v1/mc/resolve", {"tokens": [{"tokenRequestId": "1", "token": "t"}]}, api.basic("mc")
    )
    assert answer.status == 503
    assert answer.headers["retry-after"] == "5"
    assert api.call("GET", "/healthz").status == 503


def test_saturated_worker_is_503(api: ApiEnv) -> None:
    api.app._inflight = api.app.settings.max_inflight
    answer = api.call("POST", "/v1/mc/resolve", {"tokens": []}, api.basic("mc"))
    assert answer.status == 503
    assert "retry-after" in answer.headers


def test_unknown_route_and_wrong_method(api: ApiEnv) -> None:
    assert api.call("GET", "/v1/other").status == 404
    answer = api.call("GET", "/v1/mc/resolve")
    assert answer.status == 405
    assert answer.headers["allow"] == "POST"


def test_health_and_openapi(api: ApiEnv) -> None:
    assert api.call("GET", "/healthz").json() == {"status": "ok", "store": "up"}
    doc = api.call("GET", "/openapi.json").json()
    assert doc["openapi"] == "3.1.0"
    assert set(doc["paths"]) >= {"/v1/mc/resolve", "/v1/mc/tokens", "/v1/mc", "/oauth/token", "/healthz"}


def test_compat_switches(api: ApiEnv) -> None:
    api.app.settings = api.app.settings.__class__(
        **{
            **{f: getattr(api.app.settings, f) for f in api.app.settings.__struct_fields__},
            "compat_echo_token": True,
            "compat_status_code": True,
        }
    )
    (tok,) = api.app.vault.tokenize_many([(parse_kind("email"), "c@example.com")])
    doc = api.call(
        "POST", "/v1/mc/resolve", {"tokens": [{"tokenRequestId": "1", "token": tok.token}]}, api.basic("mc")
    ).json()
    assert doc["statusCode"] == 200
    assert doc["resolvedCount"] == 1
    assert doc["resolvedTokens"][0]["token"] == tok.token


def test_errors_never_echo_values(api: ApiEnv) -> None:
    secret_value = "very.private.person@example.com"
    body = {"tokenValues": [{"tokenRequestId": 1, "tokenValue": secret_value, "tokenType": "Nope"}]}
    answer = api.call("POST", "/v1/mc/tokens", json.dumps(body)[:-3], api.basic("mc"))
    assert answer.status == 400
    assert b"private" not in answer.body


def test_openapi_document_in_docs_is_current() -> None:
    from sendvault.api import openapi_document

    docs = VECTORS.parent.parent / "docs" / "openapi.json"
    assert json.loads(docs.read_text()) == openapi_document(), (
        "regenerate: python -m sendvault.api > docs/openapi.json"
    )


def test_a_mobile_number_sent_as_a_json_number_still_gets_its_token(api: ApiEnv) -> None:
    body = '{"tokenValues":[{"tokenRequestId":"stop","tokenValue":12125550123,"tokenType":"MobileNumber"}]}'
    answer = api.call("POST", "/v1/mc/tokens", body, api.basic("mc"))
    assert answer.status == 200
    (item,) = answer.json()["tokens"]
    assert item["tokenRequestId"] == "stop"
    as_text = '{"tokenValues":[{"tokenRequestId":"s","tokenValue":"12125550123","tokenType":"MobileNumber"}]}'
    assert (
        api.call("POST", "/v1/mc/tokens", as_text, api.basic("mc")).json()["tokens"][0]["token"]
        == item["token"]
    )


def test_an_ipv4_caller_on_a_dual_stack_listener_matches_ipv4_allowlists(api: ApiEnv) -> None:
    body = {"tokens": []}
    assert (
        api.call("POST", "/v1/mc/resolve", body, api.basic("office"), client="::ffff:192.0.2.10").status
        == 200
    )
    assert (
        api.call("POST", "/v1/mc/resolve", body, api.basic("office"), client="::ffff:203.0.113.9").status
        == 403
    )
