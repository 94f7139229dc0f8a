"""What the audit chain is made of: records as stored and as queued, signed marks, signers.

A head, checkpoint or anchor signature covers ``sendvault-audit|KIND|seq|hash`` (and, for a dated
head, the time it was written): :func:`head_message`. Any Ed25519 signer fits :class:`Signer`:
a local key, OpenBao/Vault transit, or a signer process under its own user.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

__all__ = [
    "Checkpoint",
    "KeyRing",
    "Mark",
    "Pending",
    "Signer",
    "Stored",
    "Verifier",
    "check_signature",
    "head_message",
    "now_us",
]


def head_message(kind: str, seq: int, digest: bytes, ts_us: int | None = None) -> bytes:
    """What a head (with the time it was written), anchor or checkpoint signature covers."""
    message = b"sendvault-audit|" + kind.encode() + b"|" + seq.to_bytes(8, "big") + digest
    return message if ts_us is None else message + ts_us.to_bytes(8, "big", signed=True)


class Signer(Protocol):
    """Signs head messages with an Ed25519 key (``Ed25519PrivateKey`` is one)."""

    def sign(self, data: bytes) -> bytes:
        """An Ed25519 signature of ``data``."""
        ...

    def public_key(self) -> Ed25519PublicKey:
        """The public key that verifies this signer's signatures."""
        ...


class Verifier(Protocol):
    """Checks an Ed25519 signature (``Ed25519PublicKey`` and :class:`KeyRing` are verifiers)."""

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise InvalidSignature unless ``signature`` signs ``data``."""
        ...


def raw_public(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of an Ed25519 public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class KeyRing:
    """The public keys a log's signatures may verify under: the current one and retired ones.

    A signature passes when one of them verifies it. Retired keys stay so that records signed
    before a rotation still verify; their private halves are destroyed at the rotation (local
    keys) or barred from signing (transit ``min_encryption_version``).
    """

    __slots__ = ("keys",)

    def __init__(self, keys: list[Ed25519PublicKey] | tuple[Ed25519PublicKey, ...]) -> None:
        unique: dict[bytes, Ed25519PublicKey] = {}
        for key in keys:
            unique.setdefault(raw_public(key), key)
        self.keys = tuple(unique.values())

    def verify(self, signature: bytes, data: bytes) -> None:
        """Raise InvalidSignature unless one of the keys verifies ``signature`` of ``data``."""
        for key in self.keys:
            try:
                key.verify(signature, data)
            except InvalidSignature:
                continue
            return
        raise InvalidSignature

    def __contains__(self, key: object) -> bool:
        return isinstance(key, Ed25519PublicKey) and any(raw_public(k) == raw_public(key) for k in self.keys)

    def __len__(self) -> int:
        return len(self.keys)


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed point of the chain kept for good: a dated head (``ts_us``), or, in logs written
    before checkpoints were dated, an undated checkpoint signature (``ts_us`` None)."""

    hash: bytes
    sig: bytes
    ts_us: int | None = None


@dataclass(frozen=True, slots=True)
class Mark:
    """A signed head or anchor: a record's number and hash (and, for a head, when it was written)."""

    seq: int
    hash: bytes
    sig: bytes
    ts_us: int = 0


@dataclass(frozen=True, slots=True)
class Stored:
    """One record as stored. The indexed columns are read as they are (a tampered row may hold
    text where a number belongs), so verification can compare them with the hashed body."""

    seq: int
    ts_us: int
    event: str
    actor: str | None
    route: str | None
    status: int | None
    body: bytes
    prev_hash: bytes
    hash: bytes
    request: bytes = b""
    response: bytes = b""


@dataclass(frozen=True, slots=True)
class Pending:
    """A record ready to chain: its columns, canonical body and fingerprints."""

    ts_us: int
    event: str
    actor: str | None
    route: str | None
    status: int | None
    body: bytes
    fingerprints: tuple[str, ...]
    request: bytes = b""
    response: bytes = b""


def check_signature(
    public_key: Verifier, kind: str, seq: int, digest: bytes, sig: bytes, *, ts_us: int | None = None
) -> None:
    """Raise InvalidSignature unless ``sig`` signs (kind, seq, digest[, time]) under ``public_key``.

    ``public_key`` is a key or a :class:`KeyRing`.
    """
    public_key.verify(sig, head_message(kind, seq, digest, ts_us))


def now_us(clock: Callable[[], float] = time.time) -> int:
    """Microseconds since the epoch."""
    return int(clock() * 1_000_000)
