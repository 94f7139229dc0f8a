"""Raw AES-256-GCM and HMAC-SHA256 from `cryptography`; private: use :mod:`sendvault.crypto`."""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["KEY_BYTES", "NONCE_BYTES", "InvalidTag", "new_aead", "new_hmac", "new_key", "new_nonce"]

KEY_BYTES = 32
NONCE_BYTES = 12


def new_key() -> bytes:
    """A fresh 256-bit key from the operating system's CSPRNG."""
    return os.urandom(KEY_BYTES)


def new_nonce() -> bytes:
    """A fresh 96-bit GCM nonce. Random nonces are safe far beyond our per-key message counts."""
    return os.urandom(NONCE_BYTES)


def new_aead(key: bytes) -> AESGCM:
    """An AES-256-GCM context; contexts are reusable and cheap to call."""
    if len(key) != KEY_BYTES:
        raise ValueError("AES-256-GCM needs a 32-byte key")
    return AESGCM(key)


def new_hmac(key: bytes) -> hmac.HMAC:
    """A keyed HMAC-SHA256 context to ``copy()`` per message (copying skips the key schedule)."""
    return hmac.HMAC(key, hashes.SHA256())
