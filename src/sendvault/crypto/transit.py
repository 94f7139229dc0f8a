"""A small client for the transit engine of OpenBao or HashiCorp Vault, through ``hvac``.

Only what sendvault asks of a key manager: wrap and unwrap data keys (``encrypt``, ``decrypt``,
``rewrap`` to the newest key version), read a key's versions, and sign with an asymmetric key
(the audit log's heads). The key-encryption key never leaves the server. Every failure becomes
one :class:`~sendvault.errors.KeyProviderError` line that names the server and the key, never a
plaintext; :class:`~sendvault.errors.KeyProviderUnavailable` when the server cannot be reached or
is sealed, so callers can tell an outage from a refusal.

``hvac`` is the ``openbao`` extra (``pip install 'sendvault[openbao]'``): a vault on local keys
never needs it.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import KeyProviderError, KeyProviderUnavailable

__all__ = ["TransitClient", "TransitKey", "ciphertext_version"]

_PREFIX = "vault:v"


@dataclass(frozen=True, slots=True)
class TransitKey:
    """What sendvault needs to know about one transit key."""

    name: str
    type: str
    latest_version: int
    min_decryption_version: int
    # Version -> creation time (RFC 3339) as the server reports it.
    versions: dict[int, str]
    # Version -> public key (asymmetric keys only; PEM for RSA/ECDSA, base64 for ed25519).
    public_keys: dict[int, str]


def ciphertext_version(ciphertext: str) -> int:
    """The key version a transit ciphertext (``vault:vN:...``) was made with."""
    head, sep, _ = ciphertext.partition(":v")
    number, sep2, _ = ciphertext[len(_PREFIX) :].partition(":")
    if head != "vault" or not sep or not sep2 or not number.isdigit():
        raise KeyProviderError("a stored key is not a transit ciphertext")
    return int(number)


class TransitClient:
    """Transit calls against one server and mount; thread-safe (one HTTP session per call)."""

    def __init__(
        self,
        url: str,
        token: str,
        *,
        mount: str = "transit",
        ca_file: str | None = None,
        namespace: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        try:
            import hvac  # noqa: PLC0415 - optional extra, loaded only for this provider
        except ImportError:
            raise KeyProviderError(
                "the OpenBao/Vault transit provider needs the openbao extra: pip install 'sendvault[openbao]'"
            ) from None
        self.url = url.rstrip("/")
        self.mount = mount
        self._hvac = hvac
        self._client = hvac.Client(
            url=self.url,
            token=token,
            verify=ca_file if ca_file else True,
            timeout=timeout,
            namespace=namespace,
        )

    @property
    def _transit(self) -> Any:
        return self._client.secrets.transit

    @contextmanager
    def _call(self, what: str, key: str) -> Iterator[None]:
        import requests  # noqa: PLC0415 - hvac's transport; present whenever hvac is

        exceptions = self._hvac.exceptions
        where = f"transit key {key!r} at {self.url}"
        try:
            yield
        except (requests.ConnectionError, requests.Timeout):
            raise KeyProviderUnavailable(f"{what}: {self.url} is unreachable") from None
        except exceptions.VaultDown:
            raise KeyProviderUnavailable(f"{what}: {self.url} is sealed or in maintenance") from None
        except exceptions.Forbidden:
            raise KeyProviderError(f"{what}: permission denied for {where} (token or policy)") from None
        except exceptions.InvalidPath:
            raise KeyProviderError(f"{what}: {where} does not exist") from None
        except exceptions.InvalidRequest as exc:
            # Transit's messages name the key and the problem ("cipher: message authentication
            # failed"), never a plaintext: sendvault sends it only data keys, base64-encoded.
            detail = "; ".join(str(e) for e in (exc.errors or [])) or "invalid request"
            raise KeyProviderError(f"{what}: {where} refused: {detail}") from None
        except exceptions.VaultError as exc:
            raise KeyProviderError(f"{what}: {where} failed ({type(exc).__name__})") from None
        except requests.RequestException as exc:
            raise KeyProviderUnavailable(f"{what}: {self.url} failed ({type(exc).__name__})") from None

    # -- keys ------------------------------------------------------------------------------

    def read_key(self, name: str) -> TransitKey:
        """The key's type and versions; raises if it does not exist."""
        with self._call("read key", name):
            data = self._transit.read_key(name=name, mount_point=self.mount)["data"]
        versions: dict[int, str] = {}
        public: dict[int, str] = {}
        for version, info in (data.get("keys") or {}).items():
            if isinstance(info, dict):
                versions[int(version)] = str(info.get("creation_time", ""))
                if info.get("public_key"):
                    public[int(version)] = str(info["public_key"])
            else:  # symmetric keys report only a Unix time per version
                versions[int(version)] = str(info)
        return TransitKey(
            name=name,
            type=str(data.get("type", "")),
            latest_version=int(data.get("latest_version", max(versions, default=0))),
            min_decryption_version=int(data.get("min_decryption_version", 1)),
            versions=versions,
            public_keys=public,
        )

    def create_key(self, name: str, key_type: str = "aes256-gcm96") -> None:
        """Create a key (no-op if it exists with that name)."""
        with self._call("create key", name):
            self._transit.create_key(name=name, key_type=key_type, mount_point=self.mount)

    def rotate_key(self, name: str) -> int:
        """Add a new version to the key; returns the new latest version."""
        with self._call("rotate key", name):
            self._transit.rotate_key(name=name, mount_point=self.mount)
        return self.read_key(name).latest_version

    # -- wrapping --------------------------------------------------------------------------

    def encrypt(self, name: str, plaintext: bytes) -> str:
        """A ``vault:vN:`` ciphertext of ``plaintext`` under the key's newest version."""
        with self._call("encrypt", name):
            answer = self._transit.encrypt_data(
                name=name, plaintext=base64.b64encode(plaintext).decode(), mount_point=self.mount
            )
        return str(answer["data"]["ciphertext"])

    def decrypt(self, name: str, ciphertext: str) -> bytes:
        """The plaintext of a transit ciphertext."""
        with self._call("decrypt", name):
            answer = self._transit.decrypt_data(name=name, ciphertext=ciphertext, mount_point=self.mount)
        try:
            return base64.b64decode(answer["data"]["plaintext"], validate=True)
        except (binascii.Error, KeyError, TypeError):
            raise KeyProviderError(f"decrypt: transit key {name!r} gave a malformed answer") from None

    def rewrap(self, name: str, ciphertext: str) -> str:
        """The same plaintext under the key's newest version; the plaintext never leaves the server."""
        with self._call("rewrap", name):
            answer = self._transit.rewrap_data(name=name, ciphertext=ciphertext, mount_point=self.mount)
        return str(answer["data"]["ciphertext"])

    # -- signing ---------------------------------------------------------------------------

    def sign(self, name: str, data: bytes, *, key_version: int | None = None) -> str:
        """A ``vault:vN:`` signature of ``data`` (ed25519 keys sign the message itself)."""
        with self._call("sign", name):
            answer = self._transit.sign_data(
                name=name,
                hash_input=base64.b64encode(data).decode(),
                key_version=key_version,
                mount_point=self.mount,
            )
        return str(answer["data"]["signature"])

    def verify(self, name: str, data: bytes, signature: str) -> None:
        """Raise :class:`KeyProviderError` unless ``signature`` is the key's signature of ``data``."""
        with self._call("verify", name):
            answer = self._transit.verify_signed_data(
                name=name,
                hash_input=base64.b64encode(data).decode(),
                signature=signature,
                mount_point=self.mount,
            )
        if not answer["data"].get("valid"):
            raise KeyProviderError(f"verify: the signature does not match transit key {name!r}")

    def health(self) -> None:
        """Raise :class:`KeyProviderUnavailable` unless the server answers, initialized and unsealed."""
        with self._call("health", "-"):
            status = self._client.sys.read_health_status(method="GET")
        # hvac returns a Response for non-200 health codes (sealed: 503, standby: 429).
        code = getattr(status, "status_code", 200)
        if code not in (200, 429, 473):
            raise KeyProviderUnavailable(f"health: {self.url} is sealed or not initialized (HTTP {code})")
