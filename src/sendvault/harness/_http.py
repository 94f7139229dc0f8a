"""A small HTTP/1.1 client for the simulated platform: keep-alive connections on asyncio.

Marketing Cloud keeps connections open and sends one call at a time on each, so a connection
here is one asyncio protocol with one request in flight. Responses are parsed with httptools
(uvicorn's parser, already a dependency); TLS is the standard library's. Faults (a connection
dropped or stalled mid-call) are written by hand through :meth:`Connection.send_raw`.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlencode, urlsplit

import httptools
import msgspec

from ._pem import TlsFileError, check_client_pair, check_file, no_passphrase

__all__ = [
    "MAX_BODY",
    "MAX_FIELDS",
    "MAX_HEAD",
    "Authorizer",
    "Connection",
    "Credentials",
    "Endpoint",
    "HttpFailure",
    "Response",
    "TlsFileError",
    "TlsOptions",
    "decode_json",
]

# A server's answer is read up to these sizes and no further: a hostile or broken server must
# not make the harness hold gigabytes (the largest resolve answer, --batch 100000, is ~10 MB).
MAX_BODY = 32 * 1024 * 1024
MAX_HEAD = 64 * 1024
# A chunked answer's framing is bounded too: the trailer section after the last chunk, like the
# head, to MAX_HEAD bytes and MAX_FIELDS fields; a chunk-size line (with its extensions) to
# MAX_HEAD; the framing of all chunks together to MAX_BODY. httptools buffers a trailer field
# whole before handing it over, so an endless trailer would otherwise grow without limit.
MAX_FIELDS = 256
# Interim (1xx) answers read past before one call's answer: past this, a server is stalling.
MAX_INTERIM = 32
# What a path may hold as the harness writes it into a request line (printable ASCII, no space).
_PATH = re.compile(r"(/[\x21-\x7e]*)?")
# What an OAuth access token may hold to travel in an Authorization header (RFC 6750's b64token,
# widened to visible ASCII): anything else would break or inject into the request.
_BEARER = re.compile(r"[\x21-\x7e]{1,8192}")


def decode_json(body: bytes) -> Any:
    """A JSON document, or msgspec.DecodeError (also for nesting too deep to decode)."""
    try:
        return msgspec.json.decode(body)
    except RecursionError:
        raise msgspec.DecodeError("JSON nested too deeply") from None


class HttpFailure(Exception):
    """A call that got no answer: ``kind`` is ``timeout``, ``connection``, ``tls`` or ``protocol``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a server listens: scheme, host, port and a base path (no trailing slash)."""

    scheme: str
    host: str
    port: int
    base: str = ""

    @classmethod
    def parse(cls, url: str, *, want: str | None = None) -> Endpoint:
        """Parse ``https://host[:port][/base]``; ValueError says what is wrong, in one line."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
        if want is not None and parts.scheme != want:
            raise ValueError(f"{url!r} must start with {want}://")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise ValueError(f"{url!r} has a port that is not a number from 1 to 65535") from None
        base = parts.path.rstrip("/")
        if not _PATH.fullmatch(base) or parts.query or parts.fragment:
            raise ValueError(
                f"{url!r}: the path may hold printable ASCII only (percent-encode the rest), "
                "and no ?query or #fragment"
            )
        return cls(parts.scheme, parts.hostname, port, base)

    @property
    def tls(self) -> bool:
        """Whether the endpoint speaks HTTPS."""
        return self.scheme == "https"

    @property
    def authority(self) -> str:
        """``host[:port]`` as a Host header writes it (the port only when not the default)."""
        default = 443 if self.tls else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    def url(self, path: str = "") -> str:
        """The absolute URL of ``path`` under the base."""
        return f"{self.scheme}://{self.authority}{self.base}{path}"


@dataclass(frozen=True, slots=True)
class TlsOptions:
    """How the simulated platform verifies the server and proves itself (mutual TLS)."""

    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None

    def context(self) -> ssl.SSLContext:
        """A verifying client context; TlsFileError (a ValueError with a hint) if a file cannot serve."""
        if self.ca_file:
            check_file(self.ca_file, "--ca")
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsFileError(f"the CA file {self.ca_file} cannot be loaded ({_why(exc)})") from None
        if self.client_cert:
            # Read first for a precise error; OpenSSL's own would be "PEM lib" for most mistakes.
            check_client_pair(self.client_cert, self.client_key)
            try:
                ctx.load_cert_chain(self.client_cert, self.client_key, password=no_passphrase)
            except (OSError, ssl.SSLError) as exc:
                raise TlsFileError(
                    f"the client certificate {self.client_cert} cannot be loaded ({_why(exc)})",
                    "give --client-cert a PEM certificate and --client-key its key, or a PEM that holds both",
                ) from None
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx


def check_path(path: str, option: str) -> None:
    """ValueError (one line) unless ``path`` can go into a request line as it is."""
    if not path.startswith("/") or not _PATH.fullmatch(path):
        raise ValueError(f"{option} {path!r} must start with / and hold printable ASCII only")


def _why(exc: OSError | ssl.SSLError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or "not PEM").replace("_", " ").lower()
    return exc.strerror or type(exc).__name__


class Response(NamedTuple):
    """One answer: status, headers (lowercase names), body."""

    status: int
    headers: dict[str, str]
    body: bytes


class Connection(asyncio.Protocol):
    """One keep-alive connection with at most one call in flight."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._headers: dict[str, str] = {}
        self._body: list[bytes] = []
        self._size = 0  # bytes of the current answer's head (before its body) or body
        self._fields = 0  # header fields of the current answer (then trailer fields)
        # Chunked framing (size lines, extensions, trailers) read since the head: in all, and since
        # the last chunk began or gave body bytes. Counted per read, so a little over, never under.
        self._framing = 0
        self._gap = 0
        self._trailing = False  # a chunk began and gave no body: the last chunk, its trailers follow
        self._in_body = False
        self._over: str | None = None
        self._interim = 0  # interim (1xx) answers read since the call's request went out
        self._lost: Exception | None = None
        self._gone: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.reusable = False

    @classmethod
    async def open(cls, endpoint: Endpoint, ssl_context: ssl.SSLContext | None, timeout: float) -> Connection:
        """Connect (and shake hands); HttpFailure on refusal, TLS failure or timeout."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                _, protocol = await loop.create_connection(
                    cls,
                    endpoint.host,
                    endpoint.port,
                    ssl=ssl_context if endpoint.tls else None,
                    server_hostname=endpoint.host if endpoint.tls else None,
                )
        except TimeoutError:
            raise HttpFailure(
                "connection", f"no connection to {endpoint.authority} within {timeout:g} s"
            ) from None
        except ssl.SSLCertVerificationError as exc:
            raise HttpFailure("tls", f"certificate not trusted ({exc.verify_message})") from None
        except ssl.SSLError as exc:
            raise HttpFailure("tls", f"TLS handshake failed ({exc.reason or type(exc).__name__})") from None
        except OSError as exc:
            raise HttpFailure(
                "connection", f"{endpoint.authority}: {exc.strerror or type(exc).__name__}"
            ) from None
        protocol.reusable = True
        return protocol

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TLS transport is a transport without being an asyncio.Transport subclass.
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        in_body, body_before = self._in_body, self._size
        if not in_body:
            self._size += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A 101 Switching Protocols that nothing asked for: it was the call's answer (judged
            # as such); what follows is not HTTP, so the connection is dropped.
            self.close()
            return
        except httptools.HttpParserError as exc:
            self._fail(HttpFailure("protocol", f"unparsable answer ({type(exc).__name__})"))
            self.close()
            return
        if in_body and self._in_body:
            # What this read held beyond body bytes is framing: a chunk-size line, its extensions,
            # the trailer section. (A read that ends the answer has reset the counts already.)
            framing = max(0, len(data) - (self._size - body_before))
            self._framing += framing
            self._gap += framing
        if self._over is None and not self._in_body and self._size > MAX_HEAD:
            self._over = (
                f"the answer's status line and headers run past {MAX_HEAD // 1024} KiB: not read further"
            )
        elif self._over is None and self._gap > MAX_HEAD:
            where = "trailer section" if self._trailing else "chunk-size line (with its extensions)"
            self._over = f"the answer's {where} runs past {MAX_HEAD // 1024} KiB: not read further"
        elif self._over is None and self._framing > MAX_BODY:
            self._over = (
                f"the answer's chunk framing runs past {MAX_BODY // (1024 * 1024)} MiB: not read further"
            )
        if self._over is not None:
            self._fail(HttpFailure("protocol", self._over))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.reusable = False
        self._lost = exc
        if not self._gone.done():
            self._gone.set_result(None)
        self._fail(HttpFailure("connection", "the server closed the connection mid-call"))

    # -- httptools callbacks -------------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._fields += 1
        if self._fields > MAX_FIELDS:
            where = "trailer section" if self._in_body else "head"
            self._over = f"the answer's {where} holds more than {MAX_FIELDS} fields: not read further"
        elif not self._in_body:
            # Trailer fields are counted and dropped: a trailer must not stand in for a header
            # (an HSTS header the head lacked, say), and the harness reads none.
            self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        self._in_body, self._size, self._fields = True, 0, 0

    def on_chunk_header(self) -> None:
        self._gap, self._trailing = 0, True

    def on_chunk_complete(self) -> None:
        self._trailing = False

    def on_body(self, body: bytes) -> None:
        self._gap, self._trailing = 0, False
        self._size += len(body)
        if self._size > MAX_BODY:
            self._over = f"the answer's body runs past {MAX_BODY // (1024 * 1024)} MiB: not read further"
        elif self._over is None:
            self._body.append(body)

    def on_message_complete(self) -> None:
        if self._over is not None:
            return
        response = Response(self._parser.get_status_code(), self._headers, b"".join(self._body))
        self._headers, self._body = {}, []
        self._in_body, self._size, self._fields = False, 0, 0
        self._framing = self._gap = 0
        self._trailing = False
        if 100 <= response.status < 200 and response.status != 101:
            # 100 Continue, 103 Early Hints: HTTP clients read past an interim answer to the final
            # one (RFC 9110 §15.2), as the platform's does; it is never the call's answer.
            self._interim += 1
            if self._interim > MAX_INTERIM:
                why = f"more than {MAX_INTERIM} interim (1xx) answers to one call"
                self._fail(HttpFailure("protocol", why))
                self.close()
            return
        if not self._parser.should_keep_alive():
            self.reusable = False
            self.close()
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(response)

    # -- calls -----------------------------------------------------------------------------------

    def _fail(self, exc: HttpFailure) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(exc)

    async def request(self, head: bytes, body: bytes, timeout: float) -> Response:
        """Send a prepared request head and body; the answer, or HttpFailure."""
        if self._transport is None or self._transport.is_closing():
            raise HttpFailure("connection", "the connection is closed")
        self._waiter = asyncio.get_running_loop().create_future()
        self._interim = 0
        self._transport.write(head + body if len(body) < 16384 else head)
        if len(body) >= 16384:
            self._transport.write(body)
        try:
            async with asyncio.timeout(timeout):
                return await self._waiter
        except TimeoutError:
            self.close()
            raise HttpFailure("timeout", f"no answer within {timeout:g} s") from None
        finally:
            self._waiter = None

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (a fault: part of a request)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        """Drop the connection at once (no TLS close_notify), as a broken link or a timeout would."""
        self.reusable = False
        if self._transport is not None:
            self._transport.abort()

    async def aclose(self, timeout: float = 1.0) -> None:
        """Close politely (TLS close_notify), waiting at most ``timeout`` before dropping it."""
        self.reusable = False
        if self._transport is None:
            return
        if not self._transport.is_closing():
            self._transport.close()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(self._gone)
        except TimeoutError:
            self._transport.abort()


def request_head(method: str, endpoint: Endpoint, path: str, headers: dict[str, str], length: int) -> bytes:
    """The bytes of a request line and headers for ``path`` under the endpoint's base."""
    lines = [f"{method} {endpoint.base}{path} HTTP/1.1", f"Host: {endpoint.authority}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True, slots=True)
class Credentials:
    """How the simulated platform authenticates: HTTP Basic, or OAuth 2.0 client credentials."""

    user: str | None = None
    password: str | None = None
    token_url: str | None = None
    client_id: str | None = None
    client_secret: str | None = None

    @property
    def mode(self) -> str:
        """``basic``, ``oauth`` or ``none``."""
        if self.token_url:
            return "oauth"
        return "basic" if self.user is not None else "none"


def basic_header(user: str, password: str) -> str:
    """An HTTP Basic Authorization value."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@dataclass
class Authorizer:
    """Authorization headers for calls; fetches and renews OAuth access tokens as needed."""

    credentials: Credentials
    tls: TlsOptions = field(default_factory=TlsOptions)
    _bearer: str | None = field(default=None, init=False)
    _expires: float = field(default=0.0, init=False)
    _renewal: asyncio.Task[None] | None = field(default=None, init=False)

    async def header(self, *, timeout: float = 30.0) -> str | None:
        """The Authorization value to send now (None without credentials).

        Calls in flight when the access token is due share one token request (and its failure):
        a platform renews once, not once per call, or a load run at expiry would be a burst of
        token requests against the server under test.
        """
        creds = self.credentials
        if creds.mode == "basic":
            return basic_header(creds.user or "", creds.password or "")
        if creds.mode == "none":
            return None
        loop = asyncio.get_running_loop()
        if self._bearer is None or loop.time() >= self._expires:
            renewal = self._renewal
            if renewal is None or renewal.get_loop() is not loop:
                renewal = self._renewal = loop.create_task(self._renew(timeout))
                renewal.add_done_callback(self._settled)
            # Shielded: a caller that gives up does not cancel the renewal the others wait for.
            await asyncio.shield(renewal)
        return self._bearer

    async def _renew(self, timeout: float) -> None:
        token, lifetime = await self.fetch_token(timeout=timeout)
        # Renew a little before expiry, as a careful platform would.
        expires = asyncio.get_running_loop().time() + max(lifetime - 30, lifetime / 2)
        self._bearer, self._expires = f"Bearer {token}", expires

    def _settled(self, renewal: asyncio.Task[None]) -> None:
        if self._renewal is renewal:
            self._renewal = None
        if not renewal.cancelled():
            renewal.exception()  # raised to every waiter; retrieved here if all had given up

    async def token_request(self, *, secret: str | None = None, timeout: float = 30.0) -> Response:
        """POST the client-credentials grant (with ``secret`` instead of the real one, if given)."""
        creds = self.credentials
        assert creds.token_url is not None
        endpoint = Endpoint.parse(creds.token_url)
        ctx = self.tls.context() if endpoint.tls else None
        body = urlencode({"grant_type": "client_credentials"}).encode()
        head = request_head(
            "POST",
            Endpoint(endpoint.scheme, endpoint.host, endpoint.port),
            endpoint.base or "/",
            {
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": basic_header(
                    creds.client_id or "", creds.client_secret or "" if secret is None else secret
                ),
            },
            len(body),
        )
        conn = await Connection.open(endpoint, ctx, timeout)
        try:
            return await conn.request(head, body, timeout)
        finally:
            await conn.aclose()

    async def fetch_token(self, *, timeout: float = 30.0) -> tuple[str, float]:
        """Run the client-credentials grant; (access token, lifetime in seconds) or HttpFailure."""
        try:
            answer = await self.token_request(timeout=timeout)
        except ValueError as exc:
            raise HttpFailure("usage", f"--token-url: {exc}") from None
        except HttpFailure as exc:
            raise HttpFailure(exc.kind, f"OAuth token endpoint: {exc.detail}") from None
        if answer.status != 200:
            raise HttpFailure("auth", f"OAuth token endpoint: answered {answer.status}")
        try:
            doc = decode_json(answer.body)
            token = doc["access_token"]
            lifetime = float(doc.get("expires_in", 3600))
        except (msgspec.DecodeError, KeyError, TypeError, ValueError, AttributeError):
            raise HttpFailure(
                "auth", "OAuth token endpoint: the answer is not JSON with an access_token and expires_in"
            ) from None
        if not isinstance(token, str) or not token:
            raise HttpFailure("auth", "OAuth token endpoint: the answer has no access_token")
        if not _BEARER.fullmatch(token):
            raise HttpFailure(
                "auth", "OAuth token endpoint: the access_token holds characters a header cannot carry"
            )
        if not 0 < lifetime < float("inf"):
            raise HttpFailure("auth", "OAuth token endpoint: expires_in is not a positive number of seconds")
        return token, lifetime
