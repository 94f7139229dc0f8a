"""The tamper-evident audit log: events, PII sealing, hash chain, signatures, verification.

Two ways in. A writer (:func:`open_audit`, for the server and commands that change state) may
create the log and its keys, and checks the log before every append. A reader
(:func:`open_audit_reader`, for `audit verify|show|search|export|head`) never creates, migrates
or keys anything: a missing log or key is :class:`AuditLogMissing` / :class:`AuditKeyMissing`.
Verification trusts only a public key given by configuration (``audit_public_key``) or by the
caller, never the one beside the log.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..config import Settings
from ..crypto.keys import load_key, private_file
from ..errors import AuditUnavailable, ConfigError, SendvaultError
from .events import Event
from .export import export_jsonl, head_document, parse_head, verify_export
from .log import AuditLog
from .record import Sealer
from .store import AuditLogMissing, AuditStore, Mark, Signer
from .verify import ChainBroken, Verified, signed_head, verify_store

__all__ = [
    "AuditKeyMissing",
    "AuditLog",
    "AuditLogMissing",
    "AuditStore",
    "ChainBroken",
    "Event",
    "Mark",
    "NoTrustedKey",
    "Verified",
    "audit_sealer",
    "configured_public_key",
    "export_jsonl",
    "head_document",
    "load_public_key",
    "open_audit",
    "open_audit_reader",
    "open_audit_store",
    "parse_head",
    "signed_head",
    "signing_key_warning",
    "trusted_public_key",
    "verify_export",
    "verify_store",
    "writer_public_key",
]


class NoTrustedKey(SendvaultError):
    """No trusted public key was configured or given: verification would prove nothing."""


class AuditKeyMissing(SendvaultError):
    """A read needs the audit key (to open or find sealed values) and there is none."""


def _raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file; ValueError when the file holds none."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    except ValueError:
        raise ValueError(f"{path} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"{path} is not an Ed25519 public key")  # noqa: TRY004 - a bad file, not a bad call
    return key


def trusted_public_key(settings: Settings, path: str | Path | None = None) -> Ed25519PublicKey:
    """The key verification trusts: ``path`` if given, else the ``audit_public_key`` setting.

    Never the ``keys/audit-signing.pub`` beside the log: whoever can write the log can replace
    it. Raises :class:`NoTrustedKey` when neither is given, ValueError when the file is unusable.
    """
    chosen = path if path is not None else settings.audit_public_key
    if chosen is None:
        raise NoTrustedKey(
            "no trusted audit public key: set audit_public_key or give --public-key FILE"
            " (a key kept where the log's writers cannot change it)"
        )
    return load_public_key(chosen)


_TRUSTED_KEY = "the path of a PEM file holding an Ed25519 public key (the audit signing key's), or empty"


def configured_public_key(settings: Settings) -> Ed25519PublicKey | None:
    """The ``audit_public_key`` setting's key; ConfigError naming the setting when unusable."""
    if settings.audit_public_key is None:
        return None
    try:
        return load_public_key(settings.audit_public_key)
    except ValueError as exc:
        raise ConfigError("audit_public_key", str(exc), allowed=_TRUSTED_KEY) from None


def writer_public_key(settings: Settings) -> Ed25519PublicKey | None:
    """The key this deployment's heads verify under, found without creating anything.

    ``audit_public_key`` when set (and then the signing key must be its pair), else the local
    signing key's public half; None when there is no key yet (a first start makes one).
    """
    configured = configured_public_key(settings)
    path = settings.home_path / "keys" / "audit-signing.key"
    if not path.exists():
        return configured
    own = _signing_key(settings).public_key()
    if configured is not None and _raw(configured) != _raw(own):
        raise AuditUnavailable("the audit signing key does not match audit_public_key")
    return configured or own


def signing_key_warning(settings: Settings) -> str | None:
    """What to warn about at a production start: a signing key this very process can read.

    Whoever runs as sendvault's user (or root) can then sign a forged log; a witness still
    catches rewrites of what it holds, but nothing stops new forged heads.
    """
    path = settings.home_path / "keys" / "audit-signing.key"
    if os.access(path, os.R_OK) or not path.exists():
        return (
            f"the audit signing key {path} is readable by the user sendvault runs as: whoever runs as "
            "that user, or root, can sign a forged audit log; keep the key off this host "
            "(docs/audit.md, 'Keys off the host') and set audit_witness"
        )
    return None


def _signing_key(settings: Settings) -> Ed25519PrivateKey:
    path = settings.home_path / "keys" / "audit-signing.key"
    if not path.exists() and (settings.home_path / "audit.db").exists():
        # A new key would sign over a log the old one signed: the log would stop at once anyway
        # (its head no longer verifies), so say why instead.
        raise AuditUnavailable(f"the audit signing key {path} is missing but the log exists: restore the key")

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


def open_audit_store(settings: Settings) -> AuditStore:
    """The audit database for writing, with this deployment's signer.

    With ``audit_public_key`` set, the signer's key must be that key: a writer handed another
    key (a replaced key file) refuses to start rather than sign with it.
    """
    trusted = configured_public_key(settings)
    signer: Signer = _signing_key(settings)
    public = signer.public_key()
    if trusted is not None:
        if _raw(trusted) != _raw(public):
            raise AuditUnavailable("the audit signing key does not match audit_public_key")
        public = trusted
    return AuditStore(
        settings.home_path / "audit.db",
        signer,
        public,
        checkpoint_records=settings.audit_checkpoint_records,
        checkpoint_seconds=settings.audit_checkpoint_seconds,
    )


def open_audit_reader(settings: Settings, public_key: Ed25519PublicKey | None = None) -> AuditStore:
    """The audit database, read-only: nothing is created; a missing file is AuditLogMissing."""
    store = AuditStore(settings.home_path / "audit.db", None, public_key, read_only=True)
    store.connect()
    return store


def audit_sealer(settings: Settings, *, create: bool = True) -> Sealer:
    """The sealer under the audit key; with ``create=False`` a missing key is AuditKeyMissing."""
    path = settings.home_path / "keys" / "audit.key"
    if not create and settings.audit_key is None and not path.exists():
        raise AuditKeyMissing(f"no audit key: set audit_key or restore {path}")
    return Sealer(load_key(path, settings.audit_key, "audit_key"))


def open_audit(
    settings: Settings, *, linger_seconds: float = 0.0, clock: Callable[[], float] = time.time
) -> AuditLog:
    """A running audit log for this process; the API's lets records gather for ``linger_seconds``."""
    store = open_audit_store(settings)
    return AuditLog(store, audit_sealer(settings), linger_seconds=linger_seconds, clock=clock)
