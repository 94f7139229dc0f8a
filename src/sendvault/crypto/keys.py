"""Key-encryption keys (KEKs) and the providers that hold them.

A provider wraps and unwraps data keys; it never sees a token or a value. ``local`` keeps the
KEK in ``SENDVAULT_MASTER_KEY`` or in ``$SENDVAULT_HOME/keys/master.key`` (mode 0600). Other
providers (OpenBao/Vault transit, cloud KMS) implement the same :class:`KeyProvider` protocol.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from ..errors import ConfigError, KeyProviderError
from ._aead import KEY_BYTES, NONCE_BYTES, InvalidTag, new_aead, new_key, new_nonce

__all__ = ["KeyProvider", "LocalKeyProvider", "load_key", "load_local_kek", "private_file"]

_WRAP_VERSION = b"\x01"


class KeyProvider(Protocol):
    """Wraps and unwraps data keys under a key-encryption key the vault never stores."""

    name: str

    def wrap(self, purpose: str, key_id: int, key: bytes) -> bytes:
        """Encrypt ``key`` so only this provider can open it, bound to its purpose and id."""
        ...

    def unwrap(self, purpose: str, key_id: int, wrapped: bytes) -> bytes:
        """Open a wrapped key; raise :class:`KeyProviderError` if it does not open."""
        ...


def _wrap_aad(purpose: str, key_id: int) -> bytes:
    return b"sendvault/kek/v1|" + purpose.encode() + b"|" + str(key_id).encode()


class LocalKeyProvider:
    """AES-256-GCM key wrapping under a KEK held in this process's memory."""

    name = "local"

    def __init__(self, kek: bytes) -> None:
        self._aead = new_aead(kek)
        # Names the KEK in `keys status` without revealing it: a hash under a fixed label.
        self.fingerprint = hashlib.sha256(b"sendvault/kek-fingerprint|" + kek).hexdigest()[:16]

    def wrap(self, purpose: str, key_id: int, key: bytes) -> bytes:
        """Wrap a data key: version byte, nonce, ciphertext and tag."""
        nonce = new_nonce()
        return _WRAP_VERSION + nonce + self._aead.encrypt(nonce, key, _wrap_aad(purpose, key_id))

    def unwrap(self, purpose: str, key_id: int, wrapped: bytes) -> bytes:
        """Open a wrapped data key; any failure is one opaque :class:`KeyProviderError`."""
        if len(wrapped) < 1 + NONCE_BYTES + 16 or wrapped[:1] != _WRAP_VERSION:
            raise KeyProviderError("a stored data key is malformed")
        nonce, body = wrapped[1 : 1 + NONCE_BYTES], wrapped[1 + NONCE_BYTES :]
        try:
            return self._aead.decrypt(nonce, body, _wrap_aad(purpose, key_id))
        except InvalidTag:
            raise KeyProviderError(
                "the key-encryption key does not open this vault's data keys (wrong master key?)"
            ) from None


def _decode_kek(text: str, setting: str) -> bytes:
    try:
        kek = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(setting, "is not valid base64") from None
    if len(kek) != KEY_BYTES:
        raise ConfigError(setting, f"must decode to {KEY_BYTES} bytes")
    return kek


def private_file(path: Path, create: Callable[[], bytes]) -> bytes:
    """The content of a secret file, created with ``create()`` and mode 0600 on first use.

    Refuses a file that group or others may access, as OpenSSH does for private keys. Two
    processes starting together agree on one file (O_EXCL), the loser waiting for the content.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(create())
                fh.flush()
                os.fsync(fh.fileno())
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyProviderError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):o}); run: chmod 600 {path}"
        )
    for _ in range(50):
        data = path.read_bytes()
        if data.strip():
            return data
        time.sleep(0.02)  # another process created it and is still writing
    raise KeyProviderError(f"{path} is empty")


def load_key(path: Path, given: str | None, setting: str) -> bytes:
    """A 32-byte key: base64 ``given`` (a setting) if set, else the key file at ``path``."""
    if given is not None:
        return _decode_kek(given, setting)
    text = private_file(path, lambda: base64.b64encode(new_key()) + b"\n").decode()
    try:
        return _decode_kek(text, setting)
    except ConfigError as exc:
        raise KeyProviderError(f"{path} {exc.problem}") from None


def load_local_kek(home: Path, master_key: str | None) -> bytes:
    """The local KEK: from ``master_key`` if given, else ``keys/master.key``, created on first use."""
    return load_key(home / "keys" / "master.key", master_key, "master_key")
