"""OAuth 2.0 client credentials: form and JSON bodies, Basic or body credentials, scopes, JWTs."""

from __future__ import annotations

import base64
import json

import pytest
from tests.api.conftest import ApiEnv

FORM = {"content-type": "application/x-www-form-urlencoded"}


def _token(api: ApiEnv, body: str, headers: dict[str, str]) -> dict[str, object]:
    answer = api.call("POST", "/oauth/token", body, headers)
    assert answer.status == 200, answer.body
    return dict(answer.json())


def test_form_with_basic_header(api: ApiEnv) -> None:
    doc = _token(api, "grant_type=client_credentials", {**FORM, **api.basic("mc")})
    assert doc["token_type"] == "Bearer"
    assert doc["expires_in"] == 3600
    assert doc["scope"] == "resolve tokenize"


def test_form_with_body_credentials_and_username_password(api: ApiEnv) -> None:
    secret = api.secrets["mc"]
    _token(api, f"grant_type=client_credentials&client_id=mc&client_secret={secret}", FORM)
    _token(api, f"grant_type=client_credentials&username=mc&password={secret}", FORM)


def test_json_body(api: ApiEnv) -> None:
    body = json.dumps(
        {"grant_type": "client_credentials", "client_id": "mc", "client_secret": api.secrets["mc"]}
    )
    _token(api, body, {"content-type": "application/json"})


def test_bearer_token_works_and_carries_scope(api: ApiEnv) -> None:
    doc = _token(api, "grant_type=client_credentials&scope=resolve", {**FORM, **api.basic("mc")})
    bearer = {"authorization": f"Bearer {doc['access_token']}"}
    assert api.call("POST", "/v1/mc/resolve", {"tokens": []}, bearer).status == 200
    assert api.call("POST", "/v1/mc/tokens", {"tokenValues": []}, bearer).status == 403


def test_scope_beyond_the_client_is_invalid_scope(api: ApiEnv) -> None:
    answer = api.call(
        "POST",
        "/oauth/token",
        "grant_type=client_credentials&scope=tokenize",
        {**FORM, **api.basic("reader")},
    )
    assert answer.status == 400
    assert answer.json()["error"] == "invalid_scope"


def test_wrong_grant_and_bad_client(api: ApiEnv) -> None:
    wrong = api.call("POST", "/oauth/token", "grant_type=password", {**FORM, **api.basic("mc")})
    assert wrong.status == 400
    assert wrong.json()["error"] == "unsupported_grant_type"
    bad = api.call("POST", "/oauth/token", "grant_type=client_credentials&client_id=mc&client_secret=x", FORM)
    assert bad.status == 401
    assert bad.json()["error"] == "invalid_client"


def test_tampered_or_foreign_tokens_are_refused(api: ApiEnv) -> None:
    token = str(_token(api, "grant_type=client_credentials", {**FORM, **api.basic("mc")})["access_token"])
    header, claims, sig = token.split(".")
    forged_claims = (
        base64.urlsafe_b64encode(
            json.dumps(
                {"iss": "sendvault", "sub": "mc", "scope": "resolve tokenize", "iat": 0, "exp": 2**40}
            ).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    none_alg = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    # Every byte of the signature flipped in turn: each is a different signature, whatever the
    # token happened to be (replacing its last characters by fixed ones sometimes changed nothing).
    raw_sig = _unb64(sig)
    flipped = [_b64(raw_sig[:i] + bytes([raw_sig[i] ^ 0x01]) + raw_sig[i + 1 :]) for i in range(len(raw_sig))]
    assert all(_unb64(f) != raw_sig for f in flipped)
    for bad in (
        f"{header}.{forged_claims}.{sig}",
        f"{none_alg}.{claims}.",
        *(f"{header}.{claims}.{f}" for f in flipped),
    ):
        assert (
            api.call("POST", "/v1/mc/resolve", {"tokens": []}, {"authorization": f"Bearer {bad}"}).status
            == 401
        )


def test_a_token_has_one_spelling(api: ApiEnv) -> None:
    # Python's base64 decoder ignores characters outside the alphabet, padding, and the unused low
    # bits of the last character: each spelling below decodes to the same signature, and is refused.
    token = str(_token(api, "grant_type=client_credentials", {**FORM, **api.basic("mc")})["access_token"])
    header, claims, sig = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    assert len(_unb64(sig)) == 32  # 43 characters: the last one carries 4 bits and 2 unused ones
    low_bits = alphabet[alphabet.index(sig[-1]) ^ 0x01]
    spellings = [
        f"{header}.{claims}.{sig[:-1]}{low_bits}",
        f"{header}.{claims}.{sig}=",
        f"{header}.{claims}.{sig[:10]}!{sig[10:]}",
        f"{header}.{claims}=.{sig}",
        f"{header}.{claims[:5]}*{claims[5:]}.{sig}",
    ]
    assert all(_unb64(s.split(".")[2].replace("!", "")) == _unb64(sig) for s in spellings[:3])
    bearer = {"authorization": f"Bearer {token}"}
    assert api.call("POST", "/v1/mc/resolve", {"tokens": []}, bearer).status == 200
    for bad in spellings:
        assert (
            api.call("POST", "/v1/mc/resolve", {"tokens": []}, {"authorization": f"Bearer {bad}"}).status
            == 401
        ), bad


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_rotating_the_secret_revokes_earlier_tokens(api: ApiEnv) -> None:
    from sendvault.api import rotate_secret

    token = _token(api, "grant_type=client_credentials", {**FORM, **api.basic("mc")})["access_token"]
    api.app.auth._client_cache.clear()
    rotate_secret(api.app.vault.store, "mc", clock=lambda: 2**40 - 10)
    api.app.auth._client_cache.clear()
    assert (
        api.call("POST", "/v1/mc/resolve", {"tokens": []}, {"authorization": f"Bearer {token}"}).status == 401
    )


def test_unknown_scope_is_invalid_scope_not_a_server_error(api: ApiEnv) -> None:
    # Found by schemathesis: an unknown scope name used to raise out of the handler (500).
    answer = api.call(
        "POST", "/oauth/token", "grant_type=client_credentials&scope=admin", {**FORM, **api.basic("mc")}
    )
    assert answer.status == 400
    assert answer.json()["error"] == "invalid_scope"


@pytest.mark.parametrize("header", ["Basic !!!!", "Basic " + base64.b64encode(b"no-colon").decode()])
def test_a_malformed_basic_header_is_invalid_client_not_a_server_error(api: ApiEnv, header: str) -> None:
    answer = api.call(
        "POST", "/oauth/token", "grant_type=client_credentials", {**FORM, "Authorization": header}
    )
    assert answer.status == 401
    assert answer.json()["error"] == "invalid_client"
    assert answer.headers["www-authenticate"].startswith("Basic")


def test_a_wrong_secret_is_invalid_client_with_a_challenge(api: ApiEnv) -> None:
    body = "grant_type=client_credentials&client_id=mc&client_secret=wrong"
    answer = api.call("POST", "/oauth/token", body, FORM)
    assert answer.status == 401
    assert answer.headers["www-authenticate"].startswith("Basic")


def test_a_json_body_without_its_content_type_is_read_as_json(api: ApiEnv) -> None:
    body = json.dumps(
        {"grant_type": "client_credentials", "client_id": "mc", "client_secret": api.secrets["mc"]}
    )
    for headers in ({}, {"Content-Type": "text/plain"}):
        answer = api.call("POST", "/oauth/token", body, headers)
        assert answer.status == 200, headers
        assert answer.json()["token_type"] == "Bearer"
