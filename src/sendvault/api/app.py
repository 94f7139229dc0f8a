"""The token API as one raw ASGI application: Marketing Cloud routes, OAuth, health, OpenAPI.

Raw ASGI rather than a framework: six routes, and on the hot path every microsecond of routing
and header handling is paid 1,000 times a second. Bodies are decoded with msgspec into the wire
structs of :mod:`sendvault.api.schemas` and answers encoded once.

Status codes (PRODUCT.md): 200 whenever the request was understood, even if nothing resolved;
400 for a body that is not JSON or lacks the expected array; 401 bad or missing credentials;
403 address or scope not allowed; 413 body or batch too large; 429 too many failed logins or
Get Token over the client's rate; 503 with Retry-After when the store or audit log is unavailable
or the worker is saturated; 500 only for bugs. Answers carry HSTS and ``Cache-Control: no-store``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import msgspec

from ..audit import AuditLog, Event
from ..config import Settings
from ..errors import AuditUnavailable, AuthError, InvalidValue, StoreError, StoreUnavailable
from ..vault import Vault, parse_kind
from . import schemas as s
from ._request import (
    HttpError,
    basic_pair,
    decode_any,
    get_token_items,
    has_body,
    header,
    oauth_form,
    resolve_items,
)
from .access import AccessLog
from .auth import Authenticator, Principal, address_key, parse_networks
from .limits import RateLimiter, RefusalLedger
from .metrics import METRICS

__all__ = ["TokenApi"]

log = logging.getLogger("sendvault.api")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_ROUTE_EVENTS = {
    "/v1/mc/resolve": Event.MC_RESOLVE,
    "/v1/mc/tokens": Event.MC_GET_TOKEN,
    "/oauth/token": Event.OAUTH_TOKEN,
}
_SECRET_FIELDS = frozenset({"client_secret", "password"})
# An OAuth form holds a few short fields; its body is read before authentication, so kept small.
_MAX_OAUTH_BODY = 16 * 1024
_MAX_CLAIMED_ID = 128  # client ids are at most 128 characters; a longer claim is cut there
# Reasons the vault gives for tokens it issued: they are ours, not a caller's free text.
_OUR_TOKEN_REASONS = frozenset({"erased", "unreadable"})
_UNRESOLVED_MESSAGE = {
    "unknown-token": "token not found",
    "erased": "token not found",
    "unreadable": "token could not be resolved",
    "invalid-token": "invalid token",
}


@dataclass(slots=True)
class _Call:
    """What one request carried, for handlers and the audit hook."""

    scope: Scope
    address: str
    principal: Principal | None = None
    event: Event = Event.API_REQUEST
    request_doc: object = None
    response_doc: object = None
    # Marketing Cloud payloads go to the log as the exact bytes exchanged, sealed whole: a careless
    # caller puts addresses in any field (ids, sendKey, unknown fields, a token's place). What
    # stays readable is reduced to fields we produced or recognised (see _resolve, _get_token).
    request_raw: bytes | None = None
    response_raw: bytes | None = None
    sealed_side: str | None = None
    fingerprint_values: list[str] | None = None
    counts: dict[str, int] | None = None
    # For the record of a refused call: the request as read, and the client id it claimed.
    # A caller that has not authenticated has no body read, so none kept.
    body: bytes | None = None
    body_complete: bool = False
    claimed_client: str | None = None
    meta: dict[str, Any] | None = None


class TokenApi:
    """The ASGI app. One instance per worker process."""

    def __init__(
        self,
        vault: Vault,
        auth: Authenticator,
        settings: Settings,
        *,
        audit: AuditLog | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.vault = vault
        self.auth = auth
        self.settings = settings
        self.audit = audit
        self._clock = clock
        self._allow = parse_networks(settings.allow_cidrs)
        self._proxies = parse_networks(settings.trusted_proxies)
        self._inflight = 0
        self._tokenize_limits = RateLimiter()
        self._access = AccessLog(settings.access_log)
        self._refusals = RefusalLedger()
        # Access lines of callers that did not authenticate: as bounded as their audit records
        # (a stranger could otherwise fill the log at the rate it sends requests).
        self._stranger_lines = RefusalLedger()
        # Set by the server: why this worker's connection table is full, or None.
        self.connection_pressure: Callable[[], str | None] | None = None
        hsts = f"max-age={settings.hsts_max_age}; includeSubDomains".encode()
        self._base_headers = [
            (b"strict-transport-security", hsts),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
        ]
        self._openapi = msgspec.json.encode(s.openapi_document())
        self._routes: dict[str, tuple[str, Callable[[_Call, bytes], Awaitable[bytes]] | None, str | None]] = {
            "/v1/mc/resolve": ("POST", self._resolve, "resolve"),
            "/v1/mc/tokens": ("POST", self._get_token, "tokenize"),
            "/v1/mc": ("POST", self._dispatch, None),
            "/oauth/token": ("POST", self._no_handler, None),  # see _serve: it reads its own body
            "/healthz": ("GET", None, None),
            "/openapi.json": ("GET", None, None),
        }

    # -- ASGI entry ------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection scope."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        started = self._clock()
        path = scope["path"]
        route = self._routes.get(path)
        label = path if route is not None else "other"
        call = _Call(scope, self._address(scope), event=_ROUTE_EVENTS.get(path, Event.API_REQUEST))
        status = 500
        try:
            status, body, extra = await self._serve(call, route, receive)
        except HttpError as exc:
            status, body, extra = exc.status, _error_body(path, exc), exc.headers
        except StoreUnavailable:
            # Anywhere in the request (credentials, lookups, inserts): Marketing Cloud retries later.
            error = self._unavailable("store unavailable")
            status, body, extra = error.status, _error_body(path, error), error.headers
        except Exception as exc:  # noqa: BLE001 - any bug is a 500, logged without its message
            _log_bug(label, exc)
            error = HttpError(500, "internal", "unexpected error; it has been logged")
            status, body, extra = 500, _error_body(path, error), []
        elapsed = self._clock() - started
        if self.audit is not None and route is not None and path not in ("/healthz", "/openapi.json"):
            try:
                self._record(call, label, status, elapsed, body)
            except AuditUnavailable:
                # The log is mandatory: an answer that cannot be queued for it is not given.
                error = self._unavailable("audit log unavailable")
                status, body, extra = error.status, _error_body(path, error), error.headers
        # A body left unread stays unread: the connection closes after the answer (uvicorn would
        # otherwise read and drop it, for as long as the caller cares to send it). A stranger's
        # connection closes in any case.
        close = (not call.body_complete and has_body(scope)) or (call.principal is None and status >= 400)
        await self._send(send, status, body, extra, close=close)
        METRICS.observe(label, status, elapsed)
        self._access_line(call, label, status, elapsed)

    async def _serve(
        self,
        call: _Call,
        route: tuple[str, Callable[[_Call, bytes], Awaitable[bytes]] | None, str | None] | None,
        receive: Receive,
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        if route is None:
            raise HttpError(404, "not-found", "no such route")
        method, handler, scope_needed = route
        if call.scope["method"] != method:
            raise HttpError(405, "method-not-allowed", f"use {method}", [(b"allow", method.encode())])
        if call.scope["path"] == "/healthz":
            return self._health()
        if call.scope["path"] == "/openapi.json":
            return 200, self._openapi, []
        assert handler is not None
        if self.audit is not None:
            try:
                self.audit.check()
            except AuditUnavailable as exc:
                raise self._unavailable("audit log unavailable") from exc
        self._check_address(call.address, self._allow)
        if call.scope["path"] == "/oauth/token":
            # Its credentials may be in the body: the one body read before authentication, a
            # small one (a form of a few fields), and it takes no max_inflight slot.
            return 200, await self._oauth(call, receive), []
        # Credentials come from the headers, and are checked before a byte of the body is read:
        # a stranger is answered (and the connection closed) without sending its body, without
        # a max_inflight slot, and is recorded without one.
        call.principal = await self._authenticate(call, scope_needed)
        self._check_length(call.scope, self.settings.max_body_bytes)
        if self._inflight >= self.settings.max_inflight:
            raise self._unavailable("server saturated")
        self._inflight += 1
        try:
            body = await self._read_body(call, receive, self.settings.max_body_bytes)
            call.body = body
            return 200, await handler(call, body), []
        finally:
            self._inflight -= 1

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._record_refusal_summary(final=True)
                self._log_stranger_lines(final=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _send(
        self, send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]], *, close: bool = False
    ) -> None:
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            *self._base_headers,
            *extra,
        ]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _unavailable(self, reason: str) -> HttpError:
        return HttpError(
            503, "unavailable", reason, [(b"retry-after", str(self.settings.retry_after_seconds).encode())]
        )

    # -- request plumbing ------------------------------------------------------------------

    def _address(self, scope: Scope) -> str:
        client = scope.get("client")
        peer = client[0] if client else "0.0.0.0"  # noqa: S104 - a missing peer, not a bind address
        if not self._proxies or not _in(peer, self._proxies):
            return str(peer)
        # Walk X-Forwarded-For from the right: the first hop not run by us is the caller.
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                for raw_hop in reversed(value.decode("latin-1").split(",")):
                    hop = raw_hop.strip()
                    if hop and not _in(hop, self._proxies):
                        return str(hop)
        return str(peer)

    def _check_address(self, address: str, networks: tuple[Any, ...]) -> None:
        if networks and not _in(address, networks):
            raise HttpError(403, "forbidden", "address not allowed")

    @staticmethod
    def _check_length(scope: Scope, limit: int) -> None:
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                raise HttpError(413, "too-large", f"body over {limit} bytes")

    @staticmethod
    async def _read_body(call: _Call, receive: Receive, limit: int) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                # The caller left, or the server closed a body that came too slowly: nothing to
                # answer, and a partial body is never taken for the whole.
                raise HttpError(408, "timeout", "request body incomplete")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise HttpError(413, "too-large", f"body over {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                call.body_complete = True
                return b"".join(chunks)

    async def _authenticate(self, call: _Call, scope_needed: str | None) -> Principal:
        try:
            principal = await self._credentials(call)
        except AuthError as exc:
            headers = [(b"www-authenticate", b'Basic realm="sendvault", Bearer')] if exc.status == 401 else []
            if exc.retry_after:
                headers.append((b"retry-after", str(exc.retry_after).encode()))
            error = "unauthorized" if exc.status == 401 else "too-many"
            raise HttpError(exc.status, error, str(exc), headers) from None
        # Proven from here on: a refusal below (address, scope) is recorded under this client.
        call.principal = principal
        self._check_address(call.address, parse_networks(principal.record.allow_cidrs))
        if scope_needed is not None and scope_needed not in principal.scopes:
            raise HttpError(403, "forbidden", f"credential lacks the {scope_needed} scope")
        return principal

    async def _credentials(self, call: _Call) -> Principal:
        authorization = header(call.scope, b"authorization")
        if authorization is None:
            raise AuthError("credentials required")
        kind, _, value = authorization.partition(" ")
        if kind.lower() == "basic":
            client_id, secret = basic_pair(value)
            call.claimed_client = client_id
            # An uncached secret's scrypt runs off the event loop (see Authenticator.basic_async).
            return await self.auth.basic_async(client_id, secret, call.address, _park(call.scope))
        if kind.lower() == "bearer":
            return await self.auth.bearer_async(value.strip(), call.address, _park(call.scope))
        raise AuthError("unsupported authorization scheme")

    def _health(self) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        # Ready only when calls can be answered: the worker has room, the store answers and,
        # when auditing, the log takes records (every call would get 503 otherwise).
        pressure = self.connection_pressure() if self.connection_pressure is not None else None
        if self._inflight >= self.settings.max_inflight or pressure is not None:
            full = b"connections" if pressure is not None else b"requests"
            retry = str(self.settings.retry_after_seconds).encode()
            return 503, b'{"status":"saturated","full":"' + full + b'"}', [(b"retry-after", retry)]
        try:
            self.vault.store.ping()
        except StoreError:
            return 503, b'{"status":"unavailable","store":"down"}', [(b"retry-after", b"5")]
        if self.audit is not None:
            try:
                self.audit.check()
            except AuditUnavailable:
                # "stopped": the log failed its integrity check (an ALERT was logged); it stays
                # stopped until it verifies again. "down": an outage (disk, lock, signer, witness).
                state = b"stopped" if self.audit.stopped else b"down"
                body = b'{"status":"unavailable","store":"up","audit":"' + state + b'"}'
                return 503, body, [(b"retry-after", b"5")]
        return 200, b'{"status":"ok","store":"up"}', []

    # -- Marketing Cloud routes ------------------------------------------------------------

    async def _dispatch(self, call: _Call, body: bytes) -> bytes:
        doc = decode_any(body)
        if isinstance(doc, dict) and isinstance(doc.get("tokens"), list):
            self._require(call, "resolve")
            return await self._resolve(call, body)
        if isinstance(doc, dict) and isinstance(doc.get("tokenValues"), list):
            self._require(call, "tokenize")
            return await self._get_token(call, body)
        raise HttpError(400, "bad-request", "body needs a tokens or tokenValues array")

    def _require(self, call: _Call, needed: str) -> None:
        if call.principal is None or needed not in call.principal.scopes:
            raise HttpError(403, "forbidden", f"credential lacks the {needed} scope")

    async def _resolve(self, call: _Call, body: bytes) -> bytes:
        items, send_key = resolve_items(body)
        self._check_batch(len(items))
        METRICS.batch("/v1/mc/resolve", len(items))
        unique: dict[str | int, str | None] = {}
        for request_id, token in items:
            unique.setdefault(request_id, token)
        wanted = [t for t in unique.values() if t is not None]
        outcomes = iter(self.vault.resolve_many(wanted))
        echo = self.settings.compat_echo_token
        resolved: list[s.ResolvedToken] = []
        unresolved: list[s.UnresolvedToken] = []
        # Tokens the vault knows (issued by it) carry no information and stay searchable in the
        # record; an unknown "token" may be an address sent in a token's place and stays sealed.
        ours: list[str] = []
        for request_id, token in unique.items():
            if token is None:
                unresolved.append(s.UnresolvedToken(request_id, _UNRESOLVED_MESSAGE["invalid-token"]))
                continue
            r = next(outcomes)
            if r.value is None:
                unresolved.append(
                    s.UnresolvedToken(request_id, _UNRESOLVED_MESSAGE.get(r.reason or "", "token not found"))
                )
                if r.reason in _OUR_TOKEN_REASONS:
                    ours.append(token)
            else:
                ours.append(token)
                attrs = [s.Attribute(k, v) for k, v in r.attributes.items()]
                resolved.append(s.ResolvedToken(request_id, r.value, attrs, token if echo else None))
        METRICS.tokens("resolved", len(resolved))
        METRICS.tokens("unresolved", len(unresolved))
        answer = s.ResolveAnswer(resolved, unresolved)
        if self.settings.compat_status_code:
            answer.statusCode, answer.resolvedCount, answer.unresolvedCount = (
                200,
                len(resolved),
                len(unresolved),
            )
        encoded = s.encoder.encode(answer)
        call.event, call.request_raw, call.response_raw, call.sealed_side = (
            Event.MC_RESOLVE,
            body,
            encoded,
            "both",
        )
        call.meta = {"tokens": ours}
        if send_key is not None and self.audit is not None:
            # Marketing Cloud's id of the send, searchable by its keyed fingerprint (it is free
            # text: an integrator may well put an address there).
            call.meta["send_key_fp"] = self.audit.sealer.fingerprint(send_key)
        call.counts = {"items": len(items), "resolved": len(resolved), "unresolved": len(unresolved)}
        return encoded

    async def _get_token(self, call: _Call, body: bytes) -> bytes:
        items = get_token_items(body)
        self._check_batch(len(items))
        METRICS.batch("/v1/mc/tokens", len(items))
        assert call.principal is not None
        rate = call.principal.record.tokenize_rate
        if rate > 0:
            wait = self._tokenize_limits.take(call.principal.client_id, len(items), rate, self._clock())
            if wait:
                raise HttpError(
                    429, "rate-limited", "Get Token rate exceeded", [(b"retry-after", str(wait).encode())]
                )
        unique: dict[str | int, tuple[str | None, str | None]] = {}
        for request_id, value, kind_name in items:
            unique.setdefault(request_id, (value, kind_name))
        ids: list[str | int] = []
        pairs = []
        for request_id, (value, kind_name) in unique.items():
            if value is None or kind_name is None:
                continue
            try:
                pairs.append((parse_kind(kind_name), value))
            except InvalidValue:
                continue  # an unknown tokenType is left out, like an invalid value
            ids.append(request_id)
        outcomes = await self.vault.tokenize_many_async(pairs)
        tokens = [s.TokenAnswerItem(rid, o.token) for rid, o in zip(ids, outcomes, strict=True) if o.token]
        METRICS.tokens("created", sum(1 for o in outcomes if o.created))
        METRICS.tokens("invalid", len(unique) - len(tokens))
        answer = s.GetTokenAnswer(tokens, 200 if self.settings.compat_status_code else None)
        encoded = s.encoder.encode(answer)
        call.event, call.request_raw, call.response_raw, call.sealed_side = (
            Event.MC_GET_TOKEN,
            body,
            encoded,
            "both",  # the answer echoes request ids, which may be anything
        )
        call.meta = {"tokens": [t.token for t in tokens]}
        call.fingerprint_values = [value for _, value in pairs]
        call.counts = {
            "items": len(items),
            "tokens": len(tokens),
            "created": sum(1 for o in outcomes if o.created),
        }
        return encoded

    def _check_batch(self, size: int) -> None:
        if size > self.settings.max_batch:
            raise HttpError(413, "too-large", f"batch over {self.settings.max_batch} items")

    # -- OAuth -----------------------------------------------------------------------------

    async def _oauth(self, call: _Call, receive: Receive) -> bytes:
        call.event = Event.OAUTH_TOKEN
        challenge = [(b"www-authenticate", b'Basic realm="sendvault"')]  # RFC 6749 section 5.2
        authorization = header(call.scope, b"authorization")
        principal: Principal | None = None
        if authorization and authorization.lower().startswith("basic "):
            # Credentials in the header: checked before the body is read, like the other routes.
            try:
                client_id, secret = basic_pair(authorization[6:])
            except AuthError as exc:
                raise HttpError(401, "invalid_client", str(exc), challenge) from None
            call.claimed_client = client_id
            principal = await self._oauth_login(call, client_id, secret, challenge)
        self._check_length(call.scope, _MAX_OAUTH_BODY)
        # Credentials in the body: until they are checked this may be a stranger, who must not
        # hold a busy connection (at a connection cap, one that is only waiting makes room).
        park = _park(call.scope) if principal is None else None
        if park is not None:
            park(True)
        try:
            raw_form = await self._read_body(call, receive, _MAX_OAUTH_BODY)
        finally:
            if park is not None:
                park(False)
        form = oauth_form(call.scope, raw_form)
        # An authenticated caller's refused request is kept (sealed), but never a secret; a
        # stranger's is not kept at all (see _record).
        call.body = msgspec.json.encode({k: v for k, v in form.items() if k not in _SECRET_FIELDS})
        if form.get("grant_type") != "client_credentials":
            raise HttpError(400, "unsupported_grant_type", "only client_credentials is supported")
        if principal is None:
            client_id = form.get("client_id") or form.get("username") or ""
            secret = form.get("client_secret") or form.get("password") or ""
            call.claimed_client = client_id or None
            if not client_id or not secret:
                raise HttpError(401, "invalid_client", "client credentials required", challenge)
            principal = await self._oauth_login(call, client_id, secret, challenge)
        try:
            token, expires_in, scope = self.auth.issue(principal, form.get("scope"))
        except AuthError as exc:
            raise HttpError(exc.status, "invalid_scope", str(exc)) from None
        call.response_doc = {"token_type": "Bearer", "expires_in": expires_in, "scope": scope}
        return s.encoder.encode(s.OAuthToken(token, "Bearer", expires_in, scope))

    async def _oauth_login(
        self, call: _Call, client_id: str, secret: str, challenge: list[tuple[bytes, bytes]]
    ) -> Principal:
        try:
            principal = await self.auth.basic_async(client_id, secret, call.address, _park(call.scope))
        except AuthError as exc:
            headers = challenge if exc.status == 401 else []
            if exc.retry_after:
                headers = [(b"retry-after", str(exc.retry_after).encode())]
            raise HttpError(exc.status, "invalid_client", str(exc), headers) from None
        self._check_address(call.address, parse_networks(principal.record.allow_cidrs))
        call.principal = principal
        return principal

    # -- audit -----------------------------------------------------------------------------

    @staticmethod
    async def _no_handler(call: _Call, body: bytes) -> bytes:
        raise AssertionError("served by _serve itself")

    def _record_refusal_summary(self, *, final: bool = False) -> None:
        """Record the summary of strangers' refusals left out of the log, when a period ended."""
        if self.audit is None:
            return
        summary = self._refusals.summary(self._clock(), final=final)
        if summary is not None:
            unrecorded = summary.pop("unrecorded")
            addresses = summary.pop("addresses")
            counts = {"unrecorded": unrecorded, "addresses": addresses}
            with contextlib.suppress(AuditUnavailable):
                self.audit.record(Event.AUTH_FAIL, counts=counts, meta={"summary": True, **summary})

    def _record(self, call: _Call, route: str, status: int, elapsed: float, answer: bytes) -> None:
        assert self.audit is not None
        if call.principal is None and status >= 400:
            # A stranger's refusal: a small record without a body, bounded in number.
            call.body = None
            admitted = self._refusals.admit(address_key(call.address), self._clock())
            self._record_refusal_summary()
            if not admitted:
                METRICS.unrecorded_call()
                return
        event = Event.AUTH_FAIL if status in (401, 429) else call.event
        payload: dict[str, Any]
        if status == 200:
            payload = {
                "request": call.request_doc,
                "response": call.response_doc,
                "request_raw": call.request_raw,
                "response_raw": call.response_raw,
                "sealed_side": call.sealed_side,
                "fingerprint_values": call.fingerprint_values,
                "meta": call.meta,
            }
        else:
            # A refused or failed call: the answer is our own problem document (no personal
            # data); the request as read is sealed whole (it may hold anything).
            payload = {"request_raw": call.body, "response_raw": answer, "sealed_side": "request"}
            claimed = call.claimed_client or _claimed_id(call.scope)
            if call.principal is None and claimed is not None:
                # Who the caller said it was: unproven, so never the actor (nor, ever, the secret).
                payload["meta"] = self._claimed(claimed[:_MAX_CLAIMED_ID])
        self.audit.record(
            event,
            actor=call.principal.client_id if call.principal else None,
            source=call.address,
            route=route,
            status=status,
            latency_ms=round(elapsed * 1000, 3),
            tls=call.scope.get("extensions", {}).get("tls"),
            counts=call.counts,
            **payload,
        )

    def _claimed(self, client_id: str) -> dict[str, str]:
        """The client id a refused caller claimed: as is when it names a client, else keyed.

        A name we registered is ours to show; anything else is free text from a stranger (an
        integrator's own address as the user name is common) and is kept only as its keyed
        fingerprint, which an investigator holding the audit key can match against a suspect.
        """
        assert self.audit is not None
        if self._known_client(client_id):
            return {"claimed_client_id": client_id}
        return {"claimed_client_fp": self.audit.sealer.fingerprint(client_id)}

    def _access_line(self, call: _Call, route: str, status: int, elapsed: float) -> None:
        if not self._access.enabled:
            return
        if call.principal is None:
            admitted = self._stranger_lines.admit(address_key(call.address), self._clock())
            self._log_stranger_lines()
            if not admitted:
                return
        client, verified = (call.principal.client_id, True) if call.principal is not None else (None, False)
        claimed = call.claimed_client
        if client is None and claimed and len(claimed) <= _MAX_CLAIMED_ID and self._known_client(claimed):
            # A real client id with a failed check: worth an operator's eye. (A stranger's made-up
            # id is not logged: it may be anything, even a secret typed in the wrong field.)
            client = claimed
        items = call.counts.get("items") if call.counts else None
        self._access.emit(
            method=str(call.scope.get("method", "")),
            route=route,
            status=status,
            seconds=elapsed,
            items=items,
            client=client,
            verified=verified,
            source=call.address,
        )

    def _log_stranger_lines(self, *, final: bool = False) -> None:
        """One line for the access lines of unauthenticated calls left out in a period."""
        summary = self._stranger_lines.summary(self._clock(), final=final)
        if summary is not None and self._access.enabled:
            log.info(
                "%d access lines of unauthenticated calls not written in %.0f s (from %d addresses; "
                "busiest %s)",
                summary["unrecorded"],
                summary["seconds"],
                summary["addresses"],
                summary["busiest"][:3],  # type: ignore[index]
            )

    def _known_client(self, client_id: str) -> bool:
        # The failed check has just looked the id up, so this is the authenticator's cache; a
        # store that has gone away meanwhile only costs the access line its client id.
        try:
            return self.auth.client(client_id) is not None
        except StoreError:
            return False


# -- helpers -------------------------------------------------------------------------------


def _log_bug(label: str, exc: BaseException) -> None:
    """Log a bug by route, exception class and code location, never its message.

    An exception's message can quote the input that caused it (a codec error, a bad literal),
    and a traceback's frames are enough to find the bug: so frames, without the message.
    """
    frames = "".join(traceback.format_tb(exc.__traceback__))
    log.error("unexpected %s on %s (message withheld); at:\n%s", type(exc).__name__, label, frames)


def _park(scope: Scope) -> Callable[[bool], None] | None:
    """The server's hook that marks this request's connection as only waiting (see protocol.py)."""
    park = scope.get("extensions", {}).get("sendvault.park")
    return park if callable(park) else None


def _claimed_id(scope: Scope) -> str | None:
    """The client id in a Basic header, unchecked (for the record of a call refused before it)."""
    authorization = header(scope, b"authorization")
    if authorization is None or not authorization.lower().startswith("basic "):
        return None
    try:
        return basic_pair(authorization[6:])[0] or None
    except AuthError:
        return None


def _error_body(path: str, error: HttpError) -> bytes:
    """An error answer: RFC 6749's shape on the OAuth route, ours on every other."""
    if path == "/oauth/token":
        return s.encoder.encode(s.OAuthError(error.error, error.reason))
    return s.encoder.encode(s.Problem(error.error, error.reason))


def _in(address: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    # A dual-stack listener (host "::") sees IPv4 callers as ::ffff:a.b.c.d.
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in n for n in networks)
