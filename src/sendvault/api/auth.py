"""Who is calling: API clients, their secrets, Basic and Bearer (JWT) checks, failure limits.

Secrets are stored as scrypt hashes. A successful Basic check is cached briefly (keyed by a
SHA-256 of the presented secret, never the secret) so the hot path does not pay scrypt per
request. Bearer tokens are HS256 JWTs signed with a key every replica shares through the store
(wrapped by the key-encryption key), so any replica can check them without a session store.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import ipaddress
import os
import secrets
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import msgspec
from cryptography.exceptions import InvalidKey, InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import AuthError, InvalidValue, NotFound
from ..store.base import ClientRecord, Store
from ._throttle import FailureLedger, KdfGate, Park

__all__ = [
    "SCOPES",
    "Authenticator",
    "Principal",
    "address_key",
    "hash_secret",
    "new_secret",
    "verify_secret",
]

SCOPES = ("resolve", "tokenize")
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**14, 8, 1
_JWT_HEADER = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
_claims_decoder = msgspec.json.Decoder(dict[str, object])


def new_secret() -> str:
    """A fresh client secret: 32 random bytes, URL-safe."""
    return secrets.token_urlsafe(32)


def hash_secret(secret: str, *, salt: bytes | None = None) -> str:
    """``scrypt$N$r$p$salt$hash`` of a client secret."""
    salt = salt or os.urandom(16)
    digest = Scrypt(salt=salt, length=32, n=_SCRYPT_N, r=_SCRYPT_R, p=_SCRYPT_P).derive(secret.encode())
    return "$".join(
        ["scrypt", str(_SCRYPT_N), str(_SCRYPT_R), str(_SCRYPT_P), _b64(salt).decode(), _b64(digest).decode()]
    )


def verify_secret(secret: str, stored: str) -> None:
    """Raise :class:`AuthError` unless ``secret`` matches the stored hash (constant time)."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise AuthError("invalid credentials")
    _, n, r, p, salt, digest = parts
    try:
        Scrypt(salt=_unb64(salt), length=32, n=int(n), r=int(r), p=int(p)).verify(
            secret.encode(), _unb64(digest)
        )
    except (InvalidKey, ValueError) as exc:
        raise AuthError("invalid credentials") from exc


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _unb64(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return base64.urlsafe_b64decode(raw + b"=" * (-len(raw) % 4))


def _unb64_exact(text: bytes) -> bytes:
    """Decode unpadded base64url that must be spelled exactly as :func:`_b64` spells it.

    Python's decoder drops characters outside the alphabet and ignores the unused low bits of
    the last character, so one token could be written many ways; a token has one spelling.
    """
    data = _unb64(text)
    if _b64(data) != text:
        raise ValueError("not canonical base64url")
    return data


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller."""

    client_id: str
    scopes: frozenset[str]
    record: ClientRecord


def parse_scopes(text: str) -> frozenset[str]:
    """Space- or comma-separated scope names; unknown names are refused."""
    names = frozenset(text.replace(",", " ").split())
    unknown = names - set(SCOPES)
    if unknown:
        raise InvalidValue("unknown-scope")
    return names


def parse_networks(text: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """Space- or comma-separated CIDRs (a bare address is a /32 or /128)."""
    try:
        return tuple(ipaddress.ip_network(n, strict=False) for n in text.replace(",", " ").split())
    except ValueError:
        raise InvalidValue("invalid-network") from None


def address_key(address: str) -> str:
    """The unit failures are counted by: an IPv4 address, or an IPv6 /64 (one subscriber's LAN)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class Authenticator:
    """Checks credentials against the client store; one per worker process.

    A correct secret or a valid bearer token is always accepted: nothing here refuses a caller
    for what others did from its address. A secret that passed scrypt once is recognised after
    that by its SHA-256 (until the client's secret changes), and a bearer token costs one HMAC,
    so the right credential never waits. Failures slow their source down instead (see
    :mod:`sendvault.api._throttle`): past ``max_failures`` within ``failure_window`` seconds, an
    address's checks that need work run one at a time, ``spacing`` seconds apart, and scrypt
    runs one at a time per worker with failure-free addresses first.
    """

    def __init__(
        self,
        store: Store,
        jwt_key: bytes,
        *,
        cache_seconds: float = 0.5,
        token_seconds: int = 3600,
        max_failures: int = 10,
        failure_window: float = 300.0,
        spacing: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._jwt_key = jwt_key
        self._cache_seconds = cache_seconds
        self.token_seconds = token_seconds
        self._clock = clock
        # client id -> the secret that last passed scrypt (SHA-256), with the record it passed
        # against and the principal it gave. Secrets are 256-bit random (`new_secret`), so a
        # SHA-256 kept in this process's memory is as hard to reverse as the scrypt hash.
        self._known: dict[str, tuple[ClientRecord, bytes, Principal]] = {}
        self._client_cache: dict[str, tuple[float, ClientRecord | None]] = {}
        self.failures = FailureLedger(
            max_failures=max_failures, window=failure_window, spacing=spacing, clock=clock
        )
        self._gate = KdfGate()
        # scrypt releases the GIL: on the API's event loop it runs here, not on the loop.
        self._kdf_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sendvault-scrypt")

    # -- clients -------------------------------------------------------------------------------

    def client(self, client_id: str) -> ClientRecord | None:
        """A client record, cached ``cache_seconds``: changes reach a running worker within that."""
        now = self._clock()
        hit = self._client_cache.get(client_id)
        if hit is not None and hit[0] > now:
            return hit[1]
        record = self._store.get_client(client_id)
        if len(self._client_cache) > 10_000:
            self._client_cache.clear()
        self._client_cache[client_id] = (now + self._cache_seconds, record)
        return record

    def _principal(self, record: ClientRecord, scopes: frozenset[str] | None = None) -> Principal:
        allowed = parse_scopes(record.scopes)
        return Principal(record.client_id, allowed if scopes is None else scopes & allowed, record)

    # -- Basic -----------------------------------------------------------------------------

    def basic(self, client_id: str, secret: str, address: str) -> Principal:
        """Check a client id and secret now (no queue); raise :class:`AuthError` (401)."""
        record = self.client(client_id)
        known = self._recognised(client_id, secret, record)
        if known is not None:
            return known
        return self._settle(client_id, secret, address, record, _secret_matches(secret, record))

    async def basic_async(self, client_id: str, secret: str, address: str, park: Park = None) -> Principal:
        """:meth:`basic` for the event loop: a failing address waits its turn, scrypt runs off the loop."""
        record = self.client(client_id)
        known = self._recognised(client_id, secret, record)
        if known is not None:
            return known
        source = address_key(address)
        loop = asyncio.get_running_loop()
        async with self.failures.turn(source, park), self._gate.slot(self.failures.recent(source)):
            matches = await loop.run_in_executor(self._kdf_pool, _secret_matches, secret, record)
        return self._settle(client_id, secret, address, record, matches)

    def _recognised(self, client_id: str, secret: str, record: ClientRecord | None) -> Principal | None:
        """The principal of a secret that passed scrypt before, if the client's secret is unchanged."""
        known = self._known.get(client_id)
        if known is None or record is None:
            return None
        seen, digest, principal = known
        if seen.secret_hash != record.secret_hash or not hmac.compare_digest(digest, _fingerprint(secret)):
            return None
        if seen is not record:
            # The record was read again (scopes or networks may have changed); same secret.
            principal = self._principal(record)
            self._known[client_id] = (record, digest, principal)
        return principal

    def _settle(
        self, client_id: str, secret: str, address: str, record: ClientRecord | None, matches: bool
    ) -> Principal:
        if record is None or not matches:
            self.failures.fail(address_key(address))
            raise AuthError("invalid credentials")
        principal = self._principal(record)
        if len(self._known) > 10_000:
            self._known.clear()
        self._known[client_id] = (record, _fingerprint(secret), principal)
        return principal

    def close(self) -> None:
        """Stop the scrypt thread."""
        self._kdf_pool.shutdown(wait=False, cancel_futures=True)

    # -- Bearer (JWT) ----------------------------------------------------------------------

    def issue(self, principal: Principal, requested: str | None) -> tuple[str, int, str]:
        """A signed access token for ``principal``: (token, expires_in, scope).

        Without ``requested`` scopes the token carries all of the client's scopes; asking for a
        scope the client lacks is refused (RFC 6749 ``invalid_scope``).
        """
        try:
            scopes = principal.scopes if requested is None else parse_scopes(requested)
        except InvalidValue:
            raise AuthError("invalid_scope", status=400) from None
        if not scopes <= principal.scopes or not scopes:
            raise AuthError("invalid_scope", status=400)
        now = int(self._clock())
        claims = {
            "iss": "sendvault",
            "sub": principal.client_id,
            "scope": " ".join(sorted(scopes)),
            "iat": now,
            "exp": now + self.token_seconds,
            "jti": secrets.token_hex(8),
        }
        body = _JWT_HEADER + b"." + _b64(msgspec.json.encode(claims))
        return (body + b"." + _b64(self._sign(body))).decode(), self.token_seconds, claims["scope"]  # type: ignore[return-value]

    def bearer(self, token: str, address: str) -> Principal:
        """Check an access token; raise :class:`AuthError` (401)."""
        try:
            return self._from_claims(self._open(token))
        except (AuthError, InvalidValue, ValueError, TypeError):
            self.failures.fail(address_key(address))
            raise AuthError("invalid token") from None

    async def bearer_async(self, token: str, address: str, park: Park = None) -> Principal:
        """:meth:`bearer` for the event loop: a valid token at once, a bad one in its address's turn."""
        try:
            return self._from_claims(self._open(token))
        except (AuthError, InvalidValue, ValueError, TypeError):
            source = address_key(address)
            async with self.failures.turn(source, park):
                self.failures.fail(source)
            raise AuthError("invalid token") from None

    def _from_claims(self, claims: dict[str, object]) -> Principal:
        record = self.client(str(claims.get("sub")))
        issued = claims.get("iat")
        # A secret rotation revokes every token issued before it.
        if record is None or not isinstance(issued, int) or issued < record.rotated_at:
            raise AuthError("invalid token")
        return self._principal(record, parse_scopes(str(claims.get("scope", ""))))

    def _sign(self, body: bytes) -> bytes:
        mac = crypto_hmac.HMAC(self._jwt_key, hashes.SHA256())
        mac.update(body)
        return mac.finalize()

    def _open(self, token: str) -> dict[str, object]:
        raw = token.encode()
        if raw.count(b".") != 2:
            raise AuthError("invalid token")
        body, _, signature = raw.rpartition(b".")
        if not body.startswith(_JWT_HEADER + b"."):
            raise AuthError("invalid token")  # only HS256 tokens we made; never alg=none
        mac = crypto_hmac.HMAC(self._jwt_key, hashes.SHA256())
        mac.update(body)
        try:
            mac.verify(_unb64_exact(signature))
            encoded_claims = _unb64_exact(body.split(b".")[1])
        except (InvalidSignature, ValueError):
            raise AuthError("invalid token") from None
        claims = _claims_decoder.decode(encoded_claims)
        exp = claims.get("exp")
        if claims.get("iss") != "sendvault" or not isinstance(exp, int) or exp <= self._clock():
            raise AuthError("invalid token")
        return claims


def register_client(
    store: Store,
    client_id: str,
    *,
    scopes: str = "resolve tokenize",
    allow: str = "",
    tokenize_rate: float = 0.0,
    secret: str | None = None,
    clock: Callable[[], float] = time.time,
) -> str:
    """Create or replace a client; returns its secret (the only time it is visible)."""
    if not client_id or len(client_id) > 128 or any(c in client_id for c in ":\r\n\t "):
        raise InvalidValue("invalid-client-id")
    parse_scopes(scopes)
    parse_networks(allow)
    secret = secret or new_secret()
    now = int(clock())
    existing = store.get_client(client_id)
    created = existing.created_at if existing else now
    store.put_client(
        ClientRecord(
            client_id,
            hash_secret(secret),
            " ".join(sorted(parse_scopes(scopes))),
            allow,
            tokenize_rate,
            created,
            now,
        )
    )
    return secret


def rotate_secret(store: Store, client_id: str, *, clock: Callable[[], float] = time.time) -> str:
    """A new secret for an existing client; tokens issued before now stop working."""
    record = store.get_client(client_id)
    if record is None:
        raise NotFound("no such client")
    secret = new_secret()
    store.put_client(record._replace(secret_hash=hash_secret(secret), rotated_at=int(clock())))
    return secret


def _fingerprint(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def _secret_matches(secret: str, record: ClientRecord | None) -> bool:
    """scrypt of ``secret`` against the client's hash; an unknown client costs the same."""
    try:
        verify_secret(secret, record.secret_hash if record is not None else _dummy_hash())
    except AuthError:
        return False
    return record is not None


@functools.cache
def _dummy_hash() -> str:
    # Computed on first use, not at import: scrypt costs ~50 ms and every CLI command imports us.
    return hash_secret("not-a-real-secret", salt=b"\0" * 16)
