"""The lower reference for bench_api_resolve.py: the same resolve endpoint built the usual way.

FastAPI with pydantic models for request and answer, and one store query per token. It shares
sendvault's vault and authenticator (with its cache), so the comparison is about the endpoint.
Not part of the product; fastapi is installed only to run the benchmark.
"""

from __future__ import annotations

import base64

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel

from sendvault.api import Authenticator
from sendvault.config import load_settings
from sendvault.vault import open_vault


class Item(BaseModel):
    tokenRequestId: str | int  # noqa: N815 - Marketing Cloud's field names
    token: str


class ResolveRequest(BaseModel):
    tokens: list[Item]


class Attribute(BaseModel):
    name: str
    value: str


class Resolved(BaseModel):
    tokenRequestId: str | int  # noqa: N815
    tokenValue: str  # noqa: N815
    attributes: list[Attribute]


class Unresolved(BaseModel):
    tokenRequestId: str | int  # noqa: N815
    message: str


class ResolveAnswer(BaseModel):
    resolvedTokens: list[Resolved]  # noqa: N815
    unresolvedTokens: list[Unresolved]  # noqa: N815


def create_app() -> FastAPI:
    vault = open_vault(load_settings())
    auth = Authenticator(vault.store, vault.shared_key("jwt"))
    app = FastAPI()

    @app.post("/v1/mc/resolve")
    def resolve(body: ResolveRequest, authorization: str = Header("")) -> ResolveAnswer:
        try:
            client_id, _, secret = base64.b64decode(authorization.split(" ", 1)[1]).decode().partition(":")
            auth.basic(client_id, secret, "127.0.0.1")
        except Exception as exc:
            raise HTTPException(401) from exc
        resolved, unresolved = [], []
        for item in body.tokens:
            (outcome,) = vault.resolve_many([item.token])  # one query per token
            if outcome.value is None:
                unresolved.append(Unresolved(tokenRequestId=item.tokenRequestId, message="token not found"))
            else:
                attrs = [Attribute(name=k, value=v) for k, v in outcome.attributes.items()]
                resolved.append(
                    Resolved(tokenRequestId=item.tokenRequestId, tokenValue=outcome.value, attributes=attrs)
                )
        return ResolveAnswer(resolvedTokens=resolved, unresolvedTokens=unresolved)

    return app
