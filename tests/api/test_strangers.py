"""Strangers are answered from the headers: their bodies are never read, they take no request
slot, and their refusals are recorded small and bounded in number."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest
from tests.api.conftest import ApiEnv

from sendvault.api.limits import RefusalLedger


def _call_without_reading(api: ApiEnv, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str]]:
    """Call the app with a body that must never be read: receive() fails the test."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "query_string": b"",
        "headers": [(b"content-length", b"4000000")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("198.51.100.9", 50000),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body of an unauthenticated call was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(api.app(scope, receive, send))
    return sent[0]["status"], {k.decode(): v.decode() for k, v in sent[0]["headers"]}


@pytest.mark.parametrize("path", ["/v1/mc/resolve", "/v1/mc/tokens", "/v1/mc"])
@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer not.a.token", "Basic " + base64.b64encode(b"mc:wrong").decode(), "Basic !!", "Digest x"],
)
def test_a_call_without_working_credentials_is_answered_without_its_body(
    api: ApiEnv, path: str, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    status, answer_headers = _call_without_reading(api, path, headers)
    assert status in (401, 429)
    assert answer_headers["connection"] == "close"


def test_oauth_with_a_wrong_basic_header_is_answered_without_its_body(api: ApiEnv) -> None:
    header = "Basic " + base64.b64encode(b"mc:wrong").decode()
    status, headers = _call_without_reading(api, "/oauth/token", {"authorization": header})
    assert status == 401
    assert headers["connection"] == "close"


def test_an_oauth_form_over_16_kib_is_refused_unread(api: ApiEnv) -> None:
    status, headers = _call_without_reading(api, "/oauth/token", {})
    assert status == 413
    assert headers["connection"] == "close"


def test_strangers_take_no_request_slot(api: ApiEnv) -> None:
    api.app._inflight = api.app.settings.max_inflight  # every slot taken by slow real clients
    status, _ = _call_without_reading(api, "/v1/mc/resolve", {})
    assert status == 401  # not 503: it never needed a slot
    assert api.call("GET", "/healthz").json() == {"status": "saturated", "full": "requests"}
    api.app._inflight = 0
    assert api.call("GET", "/healthz").status == 200


def test_the_ledger_records_a_burst_per_address_then_sums_up_the_rest() -> None:
    ledger = RefusalLedger(burst=3, global_burst=5, period=60)
    assert [ledger.admit("a", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert [ledger.admit("b", 1.0) for _ in range(3)] == [True, True, False]  # the global burst
    assert ledger.summary(30.0) is None  # the period has not ended
    assert ledger.admit("a", 61.0)  # a new period; the old one is summed up
    assert ledger.summary(61.0) == {
        "unrecorded": 3,
        "addresses": 2,
        "busiest": [["a", 2], ["b", 1]],
        "seconds": 61.0,
    }
    assert ledger.summary(61.0) is None  # once
    assert ledger.admit("a", 62.0)
    assert ledger.admit("a", 62.0)
    assert not ledger.admit("a", 62.0)
    assert ledger.summary(70.0, final=True) == {
        "unrecorded": 1,
        "addresses": 1,
        "busiest": [["a", 1]],
        "seconds": 9.0,
    }


def test_the_ledger_counts_addresses_past_its_bound_together() -> None:
    ledger = RefusalLedger(burst=0, period=60, max_addresses=2)
    for address in ("a", "b", "c", "d"):
        assert not ledger.admit(address, 0.0)
    summary = ledger.summary(1.0, final=True)
    assert summary is not None
    assert summary["unrecorded"] == 4
    assert sorted(summary["busiest"]) == [["*", 2], ["a", 1], ["b", 1]]  # type: ignore[type-var]
