"""Envelope encryption with versioned, key-identified ciphertexts, and the blind index.

Ciphertext layout (all integers big-endian)::

    version (1 byte, 0x01) | data key id (4 bytes) | nonce (12 bytes) | AES-256-GCM ciphertext + tag

The first five bytes are part of the additional data, with the caller's context (the token and
the kind of value), so a ciphertext copied onto another row, or given another key id, fails to
open. New data is sealed with the newest data key; any known key opens (as ``MultiFernet``).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

from ..errors import CryptoError
from ._aead import NONCE_BYTES, InvalidTag, new_aead, new_hmac, new_nonce

__all__ = ["CIPHERTEXT_VERSION", "BlindIndex", "Keyring"]

CIPHERTEXT_VERSION = 1
_HEADER = struct.Struct(">BI")
_HEADER_LEN = _HEADER.size
_MIN_LEN = _HEADER_LEN + NONCE_BYTES + 16


class Keyring:
    """Data keys by id; seals with the newest, opens with whichever the ciphertext names."""

    def __init__(self, keys: Iterable[tuple[int, bytes]]) -> None:
        self._aeads = {key_id: new_aead(key) for key_id, key in keys}
        if not self._aeads:
            raise CryptoError("a keyring needs at least one data key")
        self._current = max(self._aeads)
        self._current_header = _HEADER.pack(CIPHERTEXT_VERSION, self._current)
        self._by_header = {_HEADER.pack(CIPHERTEXT_VERSION, k): a for k, a in self._aeads.items()}

    @property
    def current_key_id(self) -> int:
        """The id of the key new ciphertexts are sealed with."""
        return self._current

    @property
    def key_ids(self) -> list[int]:
        """Every key id this keyring can open, ascending."""
        return sorted(self._aeads)

    def seal(self, plaintext: bytes, context: bytes) -> bytes:
        """Encrypt ``plaintext`` bound to ``context`` (e.g. token and field)."""
        header = self._current_header
        nonce = new_nonce()
        return header + nonce + self._aeads[self._current].encrypt(nonce, plaintext, header + context)

    def open(self, ciphertext: bytes, context: bytes) -> bytes:
        """Decrypt a ciphertext sealed with the same ``context``; fail closed otherwise."""
        # Hot path (500 calls per resolve batch): the 5-byte header (version and key id) is the
        # dictionary key, so an unknown version or key simply misses.
        header = ciphertext[:_HEADER_LEN]
        aead = self._by_header.get(header)
        if aead is None or len(ciphertext) < _MIN_LEN:
            raise CryptoError()
        try:
            return aead.decrypt(
                ciphertext[_HEADER_LEN : _HEADER_LEN + NONCE_BYTES],
                ciphertext[_HEADER_LEN + NONCE_BYTES :],
                header + context,
            )
        except InvalidTag:
            raise CryptoError() from None

    def open_many(self, items: Iterable[tuple[bytes, bytes]]) -> list[bytes | None]:
        """:meth:`open` for each ``(ciphertext, context)``: the plaintext, or None where it fails.

        The resolve hot path opens 500 values per call; one loop here spares a call and an
        exception per value. A failure is still only ever an opaque None.
        """
        by_header = self._by_header
        out: list[bytes | None] = []
        for ciphertext, context in items:
            header = ciphertext[:_HEADER_LEN]
            aead = by_header.get(header)
            if aead is None or len(ciphertext) < _MIN_LEN:
                out.append(None)
                continue
            try:
                out.append(
                    aead.decrypt(
                        ciphertext[_HEADER_LEN : _HEADER_LEN + NONCE_BYTES],
                        ciphertext[_HEADER_LEN + NONCE_BYTES :],
                        header + context,
                    )
                )
            except InvalidTag:
                out.append(None)
        return out

    def with_key(self, key_id: int, key: bytes) -> Keyring:
        """A new keyring that also holds ``key``; it becomes current if its id is the highest."""
        clone = Keyring.__new__(Keyring)
        clone._aeads = {**self._aeads, key_id: new_aead(key)}
        clone._current = max(clone._aeads)
        clone._current_header = _HEADER.pack(CIPHERTEXT_VERSION, clone._current)
        clone._by_header = {_HEADER.pack(CIPHERTEXT_VERSION, k): a for k, a in clone._aeads.items()}
        return clone

    @staticmethod
    def key_id_of(ciphertext: bytes) -> int:
        """The data key id a ciphertext names (for rotation reports), without opening it."""
        if len(ciphertext) < _MIN_LEN:
            raise CryptoError()
        return int(_HEADER.unpack_from(ciphertext)[1])


# The first byte of a blind index's message: the kind of value.
_KIND_BYTES = tuple(bytes((k,)) for k in range(256))


class BlindIndex:
    """HMAC-SHA256 of a normalized value under its own key: the only way from value to token.

    The kind of value is part of the message, so an email and a mobile number never collide.
    """

    def __init__(self, key: bytes) -> None:
        self._base = new_hmac(key)

    def digest(self, kind: int, normalized: str) -> bytes:
        """The 32-byte index of one normalized value of the given kind."""
        mac = self._base.copy()
        mac.update(_KIND_BYTES[kind] + normalized.encode())
        return mac.finalize()

    def digest_each(self, items: Iterable[tuple[int, str]], max_length: int) -> list[bytes | None]:
        """:meth:`digest` of each value, in one loop (a bulk lookup's hot path); None for an
        empty value or one longer than ``max_length`` characters."""
        copy = self._base.copy
        out: list[bytes | None] = []
        for kind, value in items:
            if 0 < len(value) <= max_length:
                mac = copy()
                mac.update(_KIND_BYTES[kind] + value.encode())
                out.append(mac.finalize())
            else:
                out.append(None)
        return out
