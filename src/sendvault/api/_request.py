"""Reading a request: headers, Basic credentials, and the bodies of the Marketing Cloud routes.

Decoding is lenient where the contract is unconfirmed (see schemas.py): the strict msgspec
decoders run first for speed, and on a validation error the body is read again item by item, so
one malformed item fails only itself.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import parse_qsl

import msgspec

from ..errors import AuthError
from . import schemas as s

__all__ = [
    "HttpError",
    "basic_pair",
    "decode_any",
    "get_token_items",
    "has_body",
    "header",
    "oauth_form",
    "resolve_items",
]

Scope = MutableMapping[str, Any]


class HttpError(Exception):
    """An answer other than 200: status, a short code, a reason for humans, extra headers."""

    def __init__(
        self, status: int, error: str, reason: str, headers: list[tuple[bytes, bytes]] | None = None
    ):
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers or []


def header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope["headers"]:
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def has_body(scope: Scope) -> bool:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return bool(value.strip(b" 0"))
        if name == b"transfer-encoding":
            return True
    return False


def basic_pair(value: str) -> tuple[str, str]:
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise AuthError("malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise AuthError("malformed Basic credentials")
    return client_id, secret


def decode_any(body: bytes) -> object:
    try:
        return s.any_decoder.decode(body)
    except msgspec.DecodeError:
        raise HttpError(400, "bad-request", "body is not JSON") from None


def _rid(item: dict[str, Any]) -> str | int | None:
    rid = item.get("tokenRequestId")
    return rid if isinstance(rid, (str, int)) and not isinstance(rid, bool) else None


def resolve_items(body: bytes) -> tuple[list[tuple[str | int, str | None]], str | None]:
    """(request id, token or None when malformed) per item, and the sendKey if one came.

    Items without an id are dropped.
    """
    try:
        request = s.resolve_decoder.decode(body)
        return [(i.tokenRequestId, i.token) for i in request.tokens], request.sendKey
    except msgspec.ValidationError:
        pass  # some item is malformed: fall back to item-by-item reading below
    except msgspec.DecodeError:
        raise HttpError(400, "bad-request", "body is not JSON") from None
    doc = decode_any(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("tokens"), list):
        raise HttpError(400, "bad-request", "body needs a tokens array")
    out: list[tuple[str | int, str | None]] = []
    for item in doc["tokens"]:
        if isinstance(item, dict) and (rid := _rid(item)) is not None:
            token = item.get("token")
            out.append((rid, token if isinstance(token, str) else None))
    send_key = doc.get("sendKey")
    return out, send_key if isinstance(send_key, str) else None


def get_token_items(body: bytes) -> list[tuple[str | int, str | None, str | None]]:
    """(request id, value, type) per item; malformed fields become None; no id, dropped."""
    try:
        return [
            (i.tokenRequestId, i.tokenValue, i.tokenType)
            for i in s.get_token_decoder.decode(body).tokenValues
        ]
    except msgspec.ValidationError:
        pass
    except msgspec.DecodeError:
        raise HttpError(400, "bad-request", "body is not JSON") from None
    doc = decode_any(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("tokenValues"), list):
        raise HttpError(400, "bad-request", "body needs a tokenValues array")
    out: list[tuple[str | int, str | None, str | None]] = []
    for item in doc["tokenValues"]:
        if isinstance(item, dict) and (rid := _rid(item)) is not None:
            value, kind = item.get("tokenValue"), item.get("tokenType")
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                value = str(value)  # a mobile number sent as a JSON number: a STOP must not be lost
            out.append(
                (rid, value if isinstance(value, str) else None, kind if isinstance(kind, str) else None)
            )
    return out


def oauth_form(scope: Scope, body: bytes) -> dict[str, str]:
    content_type = (header(scope, b"content-type") or "").split(";")[0].strip().lower()
    # Lenient: a JSON object sent without (or with a wrong) Content-Type is read as JSON too.
    if content_type == "application/json" or (
        content_type != "application/x-www-form-urlencoded" and body.lstrip().startswith(b"{")
    ):
        doc = decode_any(body)
        if not isinstance(doc, dict):
            raise HttpError(400, "invalid_request", "body must be an object")
        return {k: v for k, v in doc.items() if isinstance(v, str)}
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=False, strict_parsing=False))
    except UnicodeDecodeError:
        raise HttpError(400, "invalid_request", "body is not UTF-8") from None
