"""Careless integrators put addresses and numbers everywhere; none reaches the disk in clear.

One real `sendvault serve --dev` takes hostile and careless calls on every route, with an email
address and a mobile number in every field (ids, tokens, sendKey, unknown fields, invalid JSON,
OAuth forms, the Basic user name, the URL query and path, headers), authenticated and not. Then
every file under SENDVAULT_HOME (the WAL files included, while the server runs and after it
stops) and the server's own output are searched for those values in clear, base64, hex and
UTF-16. The audit search features (by token, by value, by sendKey) still find the records.
"""

from __future__ import annotations

import base64
import json
import socket
import ssl
from typing import Any

import pytest
from tests.helpers import run_cli
from tests.server.conftest import DevServer, start_dev_server, stop_dev_server
from tests.server.helpers import auth_header, client_context, https_request

EMAIL = "careless.leak@example.net"
PHONE = "14155550188"
NATIONAL = PHONE[1:]
SEND_KEY_EMAIL = "send.key.leak@example.net"  # a sendKey that is an address, searched for below


def _forms(value: str) -> dict[str, bytes]:
    """``value`` as it could sit in a file: clear, hex, UTF-16, and base64 at each alignment."""
    raw = value.encode()
    forms = {
        "clear": raw,
        "hex": raw.hex().encode(),
        "HEX": raw.hex().upper().encode(),
        "utf-16-le": value.encode("utf-16-le"),
        "utf-16-be": value.encode("utf-16-be"),
    }
    for shift in range(3):
        # The value preceded by `shift` bytes: the base64 of its middle does not depend on them.
        encoded = base64.b64encode(b"\0" * shift + raw)
        inner = encoded[4 if shift else 0 : -4]
        forms[f"base64+{shift}"] = inner
        forms[f"base64url+{shift}"] = inner.replace(b"+", b"-").replace(b"/", b"_")
    return forms


SEARCHED = {name: _forms(name) for name in (EMAIL, PHONE, NATIONAL, SEND_KEY_EMAIL)}


def _leaks(data: bytes) -> list[str]:
    return [f"{v} ({form})" for v, forms in SEARCHED.items() for form, b in forms.items() if b in data]


def _raw_exchange(server: DevServer, request: bytes) -> bytes:
    """Send bytes over TLS as they are (no client library tidies them) and read the answer."""
    with (
        socket.create_connection(("127.0.0.1", server.https_port), timeout=10) as raw,
        client_context(server).wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(request)
        chunks = []
        try:
            while chunk := tls.recv(65536):
                chunks.append(chunk)
        except (TimeoutError, ssl.SSLError, ConnectionError):
            pass
        return b"".join(chunks)


def _careless_calls(server: DevServer) -> dict[str, Any]:
    """Every route, every field, with the values; returns what later checks need."""
    basic = {"authorization": auth_header(server), "content-type": "application/json"}
    anonymous = {"content-type": "application/json"}
    stranger = {"authorization": "Basic " + base64.b64encode(f"{EMAIL}:{PHONE}".encode()).decode()}
    bearer = {"authorization": f"Bearer {EMAIL}"}
    answered: list[int] = []

    def call(path: str, body: Any, headers: dict[str, str]) -> tuple[int, bytes]:
        status, _, payload = https_request(server, "POST", path, body, headers)
        answered.append(status)
        return status, payload

    # A real token, to be resolved beside the careless items.
    kept = {"tokenValue": "kept.apart@example.com", "tokenType": "Email"}
    status, payload = call("/v1/mc/tokens", {"tokenValues": [{"tokenRequestId": "t", **kept}]}, basic)
    assert status == 200
    (token,) = [t["token"] for t in json.loads(payload)["tokens"]]

    careless_resolve = {
        "tokens": [
            {"tokenRequestId": "1", "token": EMAIL},
            {"tokenRequestId": "2", "token": PHONE},
            {"tokenRequestId": EMAIL, "token": token},
            {"tokenRequestId": PHONE, "token": NATIONAL},
            {"tokenRequestId": "5", "token": token, "email": EMAIL, "mobile": PHONE},
        ],
        "sendKey": SEND_KEY_EMAIL,
        "subscriber": {"email": EMAIL, "phones": [PHONE, NATIONAL]},
    }
    careless_get = {
        "tokenValues": [
            {"tokenRequestId": EMAIL, **kept},
            {"tokenRequestId": PHONE, "tokenValue": "x", "tokenType": EMAIL, "privateCode": PHONE},
            {"tokenRequestId": "3", **kept, "note": EMAIL},
        ],
        "sendKey": EMAIL,
        "contact": {"mobile": PHONE},
    }
    for path in ("/v1/mc/resolve", "/v1/mc"):
        assert call(path, careless_resolve, basic)[0] == 200
    for path in ("/v1/mc/tokens", "/v1/mc"):
        assert call(path, careless_get, basic)[0] == 200
    # Bodies on the wrong route, invalid JSON, items of the wrong shape.
    assert call("/v1/mc/resolve", careless_get, basic)[0] == 400
    assert call("/v1/mc/tokens", careless_resolve, basic)[0] == 400
    assert call("/v1/mc", {"email": EMAIL, "phone": PHONE}, basic)[0] == 400
    broken = f'{{"tokens": [{{"tokenRequestId": "{PHONE}", "token": "{EMAIL}"'
    for path in ("/v1/mc/resolve", "/v1/mc/tokens", "/v1/mc", "/oauth/token"):
        assert call(path, broken, basic)[0] == 400
    assert call("/v1/mc/resolve", {"tokens": [EMAIL, PHONE, [EMAIL]]}, basic)[0] == 200
    # Strangers: no credentials, a user name that is an address, a bearer that is one.
    for headers in (anonymous, stranger, bearer):
        for path in ("/v1/mc/resolve", "/v1/mc/tokens", "/v1/mc"):
            assert call(path, careless_resolve, headers)[0] == 401
    # OAuth: every field of the form and of a JSON body.
    form = f"grant_type=client_credentials&client_id={EMAIL}&client_secret={PHONE}&scope={EMAIL}&x={PHONE}"
    urlencoded = {"content-type": "application/x-www-form-urlencoded"}
    assert call("/oauth/token", form, urlencoded)[0] == 401
    assert call("/oauth/token", f"grant_type={EMAIL}&client_id={PHONE}", urlencoded)[0] == 400
    as_json = {"grant_type": "client_credentials", "client_id": EMAIL, "y": PHONE}
    assert call("/oauth/token", as_json, {})[0] == 401
    good = f"grant_type=client_credentials&scope={EMAIL}"
    assert call("/oauth/token", good, {**urlencoded, "authorization": auth_header(server)})[0] == 400
    strange_form = f"grant_type=client_credentials&z={EMAIL}"
    assert call("/oauth/token", strange_form, {**urlencoded, **stranger})[0] == 401
    # The URL: query strings on real routes, addresses as paths, and headers that carry them.
    for target in (f"/v1/mc/resolve?email={EMAIL}", f"/v1/mc/{EMAIL}", f"/{PHONE}?q={EMAIL}"):
        call(target, careless_resolve, {**basic, "x-subscriber": EMAIL, "user-agent": PHONE})
    answer = _raw_exchange(
        server,
        f"POST /v1/mc/resolve?to={EMAIL} HTTP/1.1\r\nHost: {EMAIL}\r\nAuthorization: Basic !!{PHONE}\r\n"
        f'X-Forwarded-For: {EMAIL}\r\nContent-Length: 5\r\n\r\n{{"a":'.encode(),
    )
    assert answer.startswith(b"HTTP/1.1 401")
    # A sendKey that is an address, on a good call: searchable below by its value.
    good_resolve = {"tokens": [{"tokenRequestId": "g", "token": token}], "sendKey": SEND_KEY_EMAIL}
    assert call("/v1/mc/resolve", good_resolve, basic)[0] == 200
    assert 500 not in answered
    return {"token": token}


@pytest.fixture(scope="module")
def careless(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    home = tmp_path_factory.mktemp("careless") / "home"
    server = start_dev_server(home)
    try:
        facts = _careless_calls(server)
        # While the server runs: the WAL files still hold the newest records.
        (home / "audit.db").stat()
        running = {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}
    finally:
        output = stop_dev_server(server)
    stopped = {str(p.relative_to(home)): p.read_bytes() for p in home.rglob("*") if p.is_file()}
    return {**facts, "home": home, "running": running, "stopped": stopped, "output": output}


def test_no_value_in_any_file_under_home_while_running_or_after(careless: dict[str, Any]) -> None:
    assert any(name.endswith("-wal") for name in careless["running"]), "the WAL files were searched"
    found = {
        f"{phase}:{name}": leaks
        for phase in ("running", "stopped")
        for name, data in careless[phase].items()
        if (leaks := _leaks(data))
    }
    assert found == {}


def test_no_value_in_the_server_output(careless: dict[str, Any]) -> None:
    output = careless["output"]
    assert _leaks(output.encode()) == []
    assert "Traceback" not in output


def test_audit_search_still_finds_records_by_token_value_and_send_key(careless: dict[str, Any]) -> None:
    home = careless["home"]

    def search(*args: str) -> list[dict[str, Any]]:
        result = run_cli(home, "audit", "search", *args, "--json")
        assert result.returncode == 0, result.stderr
        assert _leaks(result.stdout.encode()) == []
        return list(json.loads(result.stdout))

    by_token = search("--token", careless["token"])
    assert {r["event"] for r in by_token} >= {"mc:get-token", "mc:resolve"}
    by_key = search("--send-key", SEND_KEY_EMAIL)
    assert by_key
    assert {r["event"] for r in by_key} == {"mc:resolve"}
    by_value = search("--value", "kept.apart@example.com", "--type", "email")
    assert {r["event"] for r in by_value} >= {"mc:get-token", "mc:resolve"}
    # verify trusts only a key it is given (issue 15): here, explicitly, the one beside the log.
    verified = run_cli(home, "audit", "verify", "--public-key", str(home / "keys" / "audit-signing.pub"))
    assert verified.returncode == 0, verified.stderr
