"""The tamper-evident audit log: events, PII sealing, hash chain, signatures, verification."""

from __future__ import annotations

import time
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..config import Settings
from ..crypto.keys import load_key, private_file
from .events import Event
from .log import AuditLog
from .record import Sealer
from .store import AuditStore, Mark
from .verify import (
    ChainBroken,
    Verified,
    export_jsonl,
    head_document,
    parse_head,
    signed_head,
    verify_export,
    verify_store,
)

__all__ = [
    "AuditLog",
    "AuditStore",
    "ChainBroken",
    "Event",
    "Mark",
    "Verified",
    "export_jsonl",
    "head_document",
    "load_public_key",
    "open_audit",
    "open_audit_store",
    "parse_head",
    "signed_head",
    "verify_export",
    "verify_store",
]


def _signing_key(settings: Settings) -> Ed25519PrivateKey:
    path = settings.home_path / "keys" / "audit-signing.key"

    def create() -> bytes:
        return Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    key = serialization.load_pem_private_key(private_file(path, create), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise TypeError("audit signing key is not Ed25519")
    public = settings.home_path / "keys" / "audit-signing.pub"
    if not public.exists():
        public.write_bytes(
            key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
    return key


def load_public_key(path: str | None, settings: Settings) -> Ed25519PublicKey:
    """The trusted verification key: ``path``, else ``$SENDVAULT_HOME/keys/audit-signing.pub``."""
    source = (
        settings.home_path / "keys" / "audit-signing.pub"
        if path is None
        else settings.home_path.__class__(path)
    )
    key = serialization.load_pem_public_key(source.read_bytes())
    if not isinstance(key, Ed25519PublicKey):
        raise TypeError("not an Ed25519 public key")
    return key


def open_audit_store(settings: Settings) -> AuditStore:
    """The audit database with this host's signing key."""
    signer = _signing_key(settings)
    return AuditStore(settings.home_path / "audit.db", signer, signer.public_key())


def open_audit(
    settings: Settings, *, linger_seconds: float = 0.0, clock: Callable[[], float] = time.time
) -> AuditLog:
    """A running audit log for this process; the API's lets records gather for ``linger_seconds``."""
    audit_key = load_key(settings.home_path / "keys" / "audit.key", settings.audit_key, "audit_key")
    return AuditLog(open_audit_store(settings), Sealer(audit_key), linger_seconds=linger_seconds, clock=clock)
