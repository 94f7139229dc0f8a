"""Wire schemas of the Marketing Cloud token API: the one place request and answer shapes live.

The same structs decode requests on the hot path (msgspec), encode answers, and generate the
OpenAPI 3.1 document (``openapi_document``), so the document cannot drift from the code.

Parsing is lenient where the contract is unconfirmed (see shared/PRODUCT.md): unknown fields are
ignored, request ids may be strings or numbers and are echoed as given, ``sendKey`` is accepted.
A malformed *item* never fails its batch: the strict decoder is tried first for speed, and on a
validation error the batch is decoded again item by item.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

__all__ = [
    "Attribute",
    "GetTokenAnswer",
    "GetTokenItem",
    "GetTokenRequest",
    "OAuthError",
    "OAuthToken",
    "Problem",
    "ResolveAnswer",
    "ResolveItem",
    "ResolveRequest",
    "ResolvedToken",
    "TokenAnswerItem",
    "UnresolvedToken",
    "openapi_document",
]

RequestId = Annotated[
    str | int, msgspec.Meta(description="Marketing Cloud's id for the item, echoed as given.")
]


class ResolveItem(msgspec.Struct):
    """One token to resolve."""

    tokenRequestId: RequestId
    token: Annotated[str, msgspec.Meta(description="A token this server issued.")]


class ResolveRequest(msgspec.Struct):
    """Resolve call: Marketing Cloud asks for the clear values of up to 500 tokens at send time."""

    tokens: list[ResolveItem]
    sendKey: str | None = None


class Attribute(msgspec.Struct):
    """A contact attribute returned with a resolved token; overrides the profile at send time."""

    name: str
    value: str


class ResolvedToken(msgspec.Struct, omit_defaults=True):
    """A resolved token: the clear value and the contact's attributes."""

    tokenRequestId: RequestId
    tokenValue: str
    attributes: list[Attribute]
    token: str | None = None


class UnresolvedToken(msgspec.Struct):
    """A token that could not be resolved, with a reason that reveals nothing about contacts."""

    tokenRequestId: RequestId
    message: str


class ResolveAnswer(msgspec.Struct, omit_defaults=True):
    """Every request id of the call appears exactly once, in one of the two arrays."""

    resolvedTokens: list[ResolvedToken]
    unresolvedTokens: list[UnresolvedToken]
    statusCode: int | None = None
    resolvedCount: int | None = None
    unresolvedCount: int | None = None


class GetTokenItem(msgspec.Struct):
    """One clear value Marketing Cloud needs a token for (inbound SMS, STOP)."""

    tokenRequestId: RequestId
    tokenValue: Annotated[
        str, msgspec.Meta(description="An email address or a mobile number (E.164 digits).")
    ]
    tokenType: Annotated[str, msgspec.Meta(description="`Email` or `MobileNumber`.")]
    privateCode: str | None = None


class GetTokenRequest(msgspec.Struct):
    """Get Token call: tokens for clear values; new values get new tokens."""

    tokenValues: list[GetTokenItem]


class TokenAnswerItem(msgspec.Struct):
    """The token of one requested value."""

    tokenRequestId: RequestId
    token: str


class GetTokenAnswer(msgspec.Struct, omit_defaults=True):
    """Values that got no token (invalid, unknown type) are left out."""

    tokens: list[TokenAnswerItem]
    statusCode: int | None = None


class Problem(msgspec.Struct):
    """An error answer: a short machine-readable code and a reason for humans."""

    error: str
    reason: str


class OAuthToken(msgspec.Struct):
    """RFC 6749 section 5.1 access token answer."""

    access_token: str
    token_type: str
    expires_in: int
    scope: str


class OAuthError(msgspec.Struct, omit_defaults=True):
    """RFC 6749 section 5.2 error answer."""

    error: str
    error_description: str | None = None


# Decoders for the hot path (strict structs) and for the lenient fallback (generic JSON).
resolve_decoder = msgspec.json.Decoder(ResolveRequest)
get_token_decoder = msgspec.json.Decoder(GetTokenRequest)
any_decoder = msgspec.json.Decoder(Any)
encoder = msgspec.json.Encoder()


def _operation(summary: str, request: str | None, answers: dict[str, str], *, tag: str) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": {}}
    if request:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{request}"}}},
        }
    for code, schema in answers.items():
        entry: dict[str, Any] = {"description": _DESCRIPTIONS[code]}
        if schema:
            entry["content"] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}}
        op["responses"][code] = entry
    return op


_DESCRIPTIONS = {
    "200": "Processed; per-item outcomes in the body.",
    "400": "Body is not JSON or lacks the expected array.",
    "401": "Missing or bad credentials.",
    "403": "Address not allowed, or the credential lacks the scope.",
    "413": "Body or batch too large.",
    "429": "Too many failed authentication attempts; retry later.",
    "503": "Store or audit log unavailable, or server saturated; retry after Retry-After.",
}


def openapi_document(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API, built from the structs above."""
    structs = [
        ResolveRequest,
        ResolveAnswer,
        GetTokenRequest,
        GetTokenAnswer,
        Problem,
        OAuthToken,
        OAuthError,
    ]
    _, components = msgspec.json.schema_components(structs, ref_template="#/components/schemas/{name}")
    components["McRequest"] = {
        "oneOf": [
            {"$ref": "#/components/schemas/ResolveRequest"},
            {"$ref": "#/components/schemas/GetTokenRequest"},
        ]
    }
    components["McAnswer"] = {
        "oneOf": [
            {"$ref": "#/components/schemas/ResolveAnswer"},
            {"$ref": "#/components/schemas/GetTokenAnswer"},
        ]
    }
    components["OAuthTokenRequest"] = {
        "type": "object",
        "properties": {
            "grant_type": {"type": "string", "enum": ["client_credentials"]},
            "client_id": {"type": "string"},
            "client_secret": {"type": "string"},
            "username": {"type": "string", "description": "Same as client_id."},
            "password": {"type": "string", "description": "Same as client_secret."},
            "scope": {"type": "string"},
        },
        "required": ["grant_type"],
    }
    errors = {
        "400": "Problem",
        "401": "Problem",
        "403": "Problem",
        "413": "Problem",
        "429": "Problem",
        "503": "Problem",
    }
    paths = {
        "/v1/mc/resolve": {
            "post": _operation(
                "Resolve tokens to clear values",
                "ResolveRequest",
                {"200": "ResolveAnswer", **errors},
                tag="mc",
            )
        },
        "/v1/mc/tokens": {
            "post": _operation(
                "Get tokens for clear values",
                "GetTokenRequest",
                {"200": "GetTokenAnswer", **errors},
                tag="mc",
            )
        },
        "/v1/mc": {
            "post": _operation(
                "Resolve or Get Token, chosen by the body",
                "McRequest",
                {"200": "McAnswer", **errors},
                tag="mc",
            )
        },
        "/oauth/token": {
            "post": {
                "summary": "OAuth 2.0 client credentials grant",
                "tags": ["oauth"],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {"$ref": "#/components/schemas/OAuthTokenRequest"}
                        },
                        "application/json": {"schema": {"$ref": "#/components/schemas/OAuthTokenRequest"}},
                    },
                },
                "responses": {
                    "200": {
                        "description": "Access token.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/OAuthToken"}}
                        },
                    },
                    "400": {
                        "description": "Bad request (RFC 6749 5.2).",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}
                        },
                    },
                    "401": {
                        "description": "Bad client credentials.",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}
                        },
                    },
                    **{
                        code: {
                            "description": what,
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/OAuthError"}}
                            },
                        }
                        for code, what in (
                            ("403", "Caller address not allowed for this client."),
                            ("413", "Form over 16 KiB (it is read before authentication)."),
                            ("429", "Too many failed attempts (Retry-After)."),
                            ("503", "Store or audit log unavailable (Retry-After)."),
                        )
                    },
                },
            }
        },
        "/healthz": {
            "get": {
                "summary": "Liveness and readiness, including the store",
                "tags": ["ops"],
                "security": [],
                "responses": {
                    "200": {"description": "Ready."},
                    "503": {
                        "description": "Not ready: the store or the audit log is down, or this worker is "
                        "saturated (requests or connections); Retry-After."
                    },
                },
            }
        },
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "sendvault token API",
            "version": "1",
            "description": "Salesforce Marketing Cloud Tokenized Sending: resolve and Get Token.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
        "security": [{"basic": []}, {"bearer": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
