"""Reading a request: headers, Basic credentials, and the bodies of the Marketing Cloud routes.

Decoding is lenient where the contract is unconfirmed (see schemas.py): the strict msgspec
decoders run first for speed, and on a validation error the body is read again item by item, so
one malformed item fails only itself.
"""

from __future__ import annotations

import base64
import binascii
import json
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
    "text",
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


_NOT_JSON = "body is not JSON"
_TOO_DEEP = "body nests too deeply"


def decode_any(body: bytes) -> object:
    """The body as generic JSON; 400 when it is not, or nests deeper than the decoder goes.

    msgspec refuses a lone surrogate escape (``"\\ud800"``), which is valid JSON text; such a
    body is read again leniently so the string fails only its own item (see :func:`text`).
    """
    try:
        return s.any_decoder.decode(body)
    except RecursionError:
        # msgspec stops at the interpreter's recursion limit: a 400, never a 500.
        raise HttpError(400, "bad-request", _TOO_DEEP) from None
    except msgspec.DecodeError:
        return _lenient(body)


def _lenient(body: bytes) -> object:
    """Standard JSON with lone surrogates allowed: UTF-8 only, no NaN or Infinity."""
    try:
        return json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise HttpError(400, "bad-request", _TOO_DEEP) from None
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        raise HttpError(400, "bad-request", _NOT_JSON) from None


def _no_constant(name: str) -> object:
    raise ValueError(name)


def text(value: object) -> str | None:
    """``value`` if it is a string that can be stored and sent back (no lone surrogate), else None."""
    if not isinstance(value, str):
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value


def _rid(item: dict[str, Any]) -> str | int | None:
    rid = item.get("tokenRequestId")
    if isinstance(rid, bool):
        return None
    # An id that cannot be echoed (a lone surrogate) is no id: its item is dropped.
    return rid if isinstance(rid, int) else text(rid)


def _strict(decoder: msgspec.json.Decoder[Any], body: bytes) -> Any:
    """The hot path's typed decode; None when the body needs the item-by-item reading."""
    try:
        return decoder.decode(body)
    except RecursionError:
        raise HttpError(400, "bad-request", _TOO_DEEP) from None
    except msgspec.DecodeError:  # ValidationError included: some item is malformed
        return None


def resolve_items(body: bytes) -> tuple[list[tuple[str | int, str | None]], str | None]:
    """(request id, token or None when malformed) per item, and the sendKey if one came.

    Items without a usable id are dropped.
    """
    request = _strict(s.resolve_decoder, body)
    if request is not None:
        return [(i.tokenRequestId, i.token) for i in request.tokens], request.sendKey
    doc = decode_any(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("tokens"), list):
        raise HttpError(400, "bad-request", "body needs a tokens array")
    out: list[tuple[str | int, str | None]] = []
    for item in doc["tokens"]:
        if isinstance(item, dict) and (rid := _rid(item)) is not None:
            out.append((rid, text(item.get("token"))))
    return out, text(doc.get("sendKey"))


def get_token_items(body: bytes) -> list[tuple[str | int, str | None, str | None]]:
    """(request id, value, type) per item; malformed fields become None; no usable id, dropped."""
    request = _strict(s.get_token_decoder, body)
    if request is not None:
        return [(i.tokenRequestId, i.tokenValue, i.tokenType) for i in request.tokenValues]
    doc = decode_any(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("tokenValues"), list):
        raise HttpError(400, "bad-request", "body needs a tokenValues array")
    out: list[tuple[str | int, str | None, str | None]] = []
    for item in doc["tokenValues"]:
        if isinstance(item, dict) and (rid := _rid(item)) is not None:
            value = item.get("tokenValue")
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                value = str(value)  # a mobile number sent as a JSON number: a STOP must not be lost
            out.append((rid, text(value), text(item.get("tokenType"))))
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
        return {k: v for k, v in doc.items() if text(k) is not None and text(v) is not None}
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=False, strict_parsing=False))
    except UnicodeDecodeError:
        raise HttpError(400, "invalid_request", "body is not UTF-8") from None
