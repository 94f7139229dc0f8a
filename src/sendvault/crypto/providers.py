"""The providers of the key-encryption key (KEK), as ``key_provider`` chooses them.

``local``
    A KEK in ``master_key`` (``SENDVAULT_MASTER_KEY``) or in ``$SENDVAULT_HOME/keys/master.key``
    (mode 0600, created on first use).
``sealed``
    A KEK in ``$SENDVAULT_HOME/keys/master.sealed``, encrypted under a key derived from a
    passphrase with scrypt; the passphrase comes from ``master_passphrase`` or a prompt.
``transit``
    OpenBao or HashiCorp Vault's transit engine: the KEK never leaves the server; sendvault asks
    it to wrap and unwrap data keys, and to rewrap them under its newest key version.

A KEK rotation of a file provider writes the new KEK beside the old one (``*.next``), rewraps
the data keys in one transaction, then renames the new file over the old. A crash in between
leaves both files; :func:`pending_provider` finds the new one, and the vault finishes the rename
once it sees that the new KEK is the one that opens the stored keys.
"""

from __future__ import annotations

import getpass
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from ..errors import ConfigError, KeyProviderError
from ._aead import KEY_BYTES, NONCE_BYTES, InvalidTag, new_aead, new_key, new_nonce
from .keys import KeyProvider, LocalKeyProvider, _wrap_aad, load_key, private_file

if TYPE_CHECKING:
    from ..config import Settings
    from .transit import TransitClient

__all__ = [
    "SealedKeyProvider",
    "TransitKeyProvider",
    "build_provider",
    "kek_files",
    "pending_provider",
    "read_provider",
    "seal_kek",
]

_SEALED_MAGIC = b"SVSEAL1"
# scrypt cost: 2^15 x 8 x 128 bytes = 32 MiB and about 0.1 s here; once per process start.
_SCRYPT = struct.Struct(">BBB")
_SCRYPT_DEFAULT = (15, 8, 1)
_SALT_BYTES = 16


class SealedKeyProvider(LocalKeyProvider):
    """:class:`LocalKeyProvider` whose KEK came out of a passphrase-sealed file."""

    name = "sealed"


class TransitKeyProvider:
    """Data keys wrapped and unwrapped by an OpenBao/Vault transit key; the KEK stays there.

    The purpose and id of each data key are sealed with it (as a prefix of the plaintext), so a
    wrapped key copied onto another key's row fails to open, as with the local providers.
    """

    name = "transit"

    def __init__(self, client: TransitClient, key: str) -> None:
        self.client = client
        self.key = key

    def wrap(self, purpose: str, key_id: int, key: bytes) -> bytes:
        """A ``vault:vN:`` ciphertext of the key under the transit key's newest version."""
        return self.client.encrypt(self.key, _wrap_aad(purpose, key_id) + key).encode()

    def unwrap(self, purpose: str, key_id: int, wrapped: bytes) -> bytes:
        """The data key; :class:`KeyProviderError` when it does not open or is bound elsewhere."""
        try:
            text = wrapped.decode("ascii")
        except UnicodeDecodeError:
            raise KeyProviderError("a stored data key is not a transit ciphertext") from None
        plain = self.client.decrypt(self.key, text)
        bound = _wrap_aad(purpose, key_id)
        if not plain.startswith(bound) or len(plain) != len(bound) + KEY_BYTES:
            raise KeyProviderError(f"data key {key_id} is bound to another key or purpose")
        return plain[len(bound) :]

    def rewrap(self, wrapped: bytes) -> bytes:
        """The same data key under the transit key's newest version; it never leaves the server."""
        return self.client.rewrap(self.key, wrapped.decode("ascii")).encode()


@dataclass(frozen=True, slots=True)
class KekFiles:
    """Where a file provider keeps its KEK, and the file a rotation writes first."""

    current: Path
    next: Path


def kek_files(settings: Settings) -> KekFiles | None:
    """The KEK files of ``settings``' provider; None when the KEK is not in a file of ours."""
    keys = settings.home_path / "keys"
    if settings.key_provider == "local" and settings.master_key is None:
        return KekFiles(keys / "master.key", keys / "master.key.next")
    if settings.key_provider == "sealed":
        return KekFiles(keys / "master.sealed", keys / "master.sealed.next")
    return None


def seal_kek(kek: bytes, passphrase: str, *, cost: tuple[int, int, int] = _SCRYPT_DEFAULT) -> bytes:
    """The sealed-file form of ``kek``: magic, scrypt parameters, salt, nonce, AES-GCM ciphertext."""
    salt = os.urandom(_SALT_BYTES)
    header = _SEALED_MAGIC + _SCRYPT.pack(*cost) + salt
    nonce = new_nonce()
    return header + nonce + new_aead(_derive(passphrase, salt, cost)).encrypt(nonce, kek, header)


def _unseal(data: bytes, passphrase: str, path: Path) -> bytes:
    head_len = len(_SEALED_MAGIC) + _SCRYPT.size + _SALT_BYTES
    if not data.startswith(_SEALED_MAGIC) or len(data) < head_len + NONCE_BYTES + KEY_BYTES + 16:
        raise KeyProviderError(f"{path} is not a sealed sendvault master key")
    cost = _SCRYPT.unpack_from(data, len(_SEALED_MAGIC))
    if not (10 <= cost[0] <= 22 and 1 <= cost[1] <= 32 and 1 <= cost[2] <= 16):
        raise KeyProviderError(f"{path} has scrypt parameters out of range")
    salt = data[len(_SEALED_MAGIC) + _SCRYPT.size : head_len]
    nonce, body = data[head_len : head_len + NONCE_BYTES], data[head_len + NONCE_BYTES :]
    try:
        return new_aead(_derive(passphrase, salt, cost)).decrypt(nonce, body, data[:head_len])
    except InvalidTag:
        raise KeyProviderError(f"the passphrase does not open {path} (wrong master_passphrase?)") from None


def _derive(passphrase: str, salt: bytes, cost: tuple[int, int, int]) -> bytes:
    log_n, r, p = cost
    return Scrypt(salt=salt, length=KEY_BYTES, n=1 << log_n, r=r, p=p).derive(passphrase.encode())


def passphrase(settings: Settings, *, confirm: bool = False) -> str:
    """``master_passphrase``, else one typed at the terminal; ConfigError when neither can be had."""
    if settings.master_passphrase is not None:
        return settings.master_passphrase
    if not sys.stdin.isatty():
        raise ConfigError(
            "master_passphrase",
            "is not set and there is no terminal to ask for it",
            hint="set SENDVAULT_MASTER_PASSPHRASE in sendvault's environment",
        )
    first = getpass.getpass("sendvault master passphrase: ")
    if confirm and getpass.getpass("again: ") != first:
        raise ConfigError("master_passphrase", "the two passphrases typed differ")
    if len(first) < 12:
        raise ConfigError("master_passphrase", "is shorter than 12 characters")
    return first


def _sealed(path: Path, settings: Settings, *, create: bool) -> SealedKeyProvider | None:
    if not path.exists() and not create:
        return None
    secret = passphrase(settings, confirm=not path.exists())
    data = private_file(path, lambda: seal_kek(new_key(), secret))
    return SealedKeyProvider(_unseal(data, secret, path))


def _transit(settings: Settings) -> TransitKeyProvider:
    from .transit import TransitClient  # noqa: PLC0415 - hvac is the optional openbao extra

    if not settings.transit_url:
        raise ConfigError("transit_url", "must be set when key_provider is transit")
    if not settings.transit_token:
        raise ConfigError("transit_token", "must be set when key_provider is transit")
    client = TransitClient(
        settings.transit_url,
        settings.transit_token,
        mount=settings.transit_mount,
        ca_file=settings.transit_ca_file,
        timeout=5.0,
    )
    return TransitKeyProvider(client, settings.transit_key)


def build_provider(settings: Settings) -> KeyProvider:
    """The configured provider, creating a local or sealed KEK file on first use.

    A transit provider is checked at once (its key is read), so a server that cannot be reached
    stops start-up with :class:`~sendvault.errors.KeyProviderUnavailable` in one line.
    """
    provider = read_provider(settings, create=True)
    assert provider is not None
    return provider


def read_provider(settings: Settings, *, create: bool = False) -> KeyProvider | None:
    """The configured provider; None when its KEK file does not exist and ``create`` is false."""
    home = settings.home_path
    if settings.key_provider == "transit":
        provider = _transit(settings)
        key = provider.client.read_key(provider.key)
        if key.type not in ("aes256-gcm96", "aes128-gcm96", "chacha20-poly1305"):
            raise KeyProviderError(
                f"transit key {provider.key!r} is of type {key.type}, not an encryption key"
            )
        return provider
    if settings.key_provider == "sealed":
        return _sealed(home / "keys" / "master.sealed", settings, create=create)
    path = home / "keys" / "master.key"
    if settings.master_key is None and not path.exists() and not create:
        return None
    return LocalKeyProvider(load_key(path, settings.master_key, "master_key"))


def pending_provider(settings: Settings) -> KeyProvider | None:
    """The provider of a KEK rotation that wrote its new file but did not finish; else None."""
    files = kek_files(settings)
    if files is None or not files.next.exists():
        return None
    if settings.key_provider == "sealed":
        data = private_file(files.next, lambda: b"")
        return SealedKeyProvider(_unseal(data, passphrase(settings), files.next))
    return LocalKeyProvider(load_key(files.next, None, "master_key"))
