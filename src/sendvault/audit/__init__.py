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

from ..config import Settings
from ..crypto.keys import load_key
from ..errors import AuditUnavailable, ConfigError, SendvaultError
from .events import Event
from .export import export_jsonl, head_document, parse_head, verify_export
from .keys import (
    AuditKeyInfo,
    AuditRotation,
    TransitSigner,
    audit_key_status,
    load_public_keys,
    local_ring,
    local_signing_key,
    retired_sealing_keys,
    rotate_audit_keys,
    transit_client,
)
from .log import AuditLog
from .marks import KeyRing, Verifier
from .record import Sealer
from .store import AuditLogMissing, AuditStore, Mark, Signer
from .verify import ChainBroken, Verified, signed_head, verify_store
from .witness import Witnesses, open_witnesses, witnessed_export_heads, witnessed_heads, witnessed_heads_of

__all__ = [
    "AuditKeyInfo",
    "AuditKeyMissing",
    "AuditLog",
    "AuditLogMissing",
    "AuditRotation",
    "AuditStore",
    "ChainBroken",
    "Event",
    "KeyRing",
    "Mark",
    "NoTrustedKey",
    "Verified",
    "Witnesses",
    "audit_key_status",
    "audit_sealer",
    "configured_public_key",
    "export_jsonl",
    "head_document",
    "load_public_key",
    "open_audit",
    "open_audit_reader",
    "open_audit_store",
    "open_witnesses",
    "parse_head",
    "rotate_audit_keys",
    "signed_head",
    "signing_key_warning",
    "trusted_public_key",
    "verify_export",
    "verify_store",
    "witnessed_export_heads",
    "witnessed_heads",
    "witnessed_heads_of",
    "writer_public_key",
]


class NoTrustedKey(SendvaultError):
    """No trusted public key was configured or given: verification would prove nothing."""


class AuditKeyMissing(SendvaultError):
    """A read needs the audit key (to open or find sealed values) and there is none."""


def load_public_key(path: str | Path) -> KeyRing:
    """The Ed25519 public keys of a PEM file (one or more); ValueError when it holds none."""
    return KeyRing(load_public_keys(path))


def trusted_public_key(settings: Settings, path: str | Path | None = None) -> KeyRing:
    """The keys verification trusts: ``path`` if given, else the ``audit_public_key`` setting.

    Never the ``keys/audit-signing.pub`` beside the log: whoever can write the log can replace
    it. Raises :class:`NoTrustedKey` when neither is given, ValueError when the file is unusable.
    The file may hold several keys: the current signing key and the ones rotated out.
    """
    chosen = path if path is not None else settings.audit_public_key
    if chosen is None:
        raise NoTrustedKey(
            "no trusted audit public key: set audit_public_key or give --public-key FILE"
            " (a key kept where the log's writers cannot change it)"
        )
    return load_public_key(chosen)


_TRUSTED_KEY = "the path of a PEM file holding Ed25519 public keys (the audit signing keys'), or empty"


def configured_public_key(settings: Settings) -> KeyRing | None:
    """The ``audit_public_key`` setting's keys; ConfigError naming the setting when unusable."""
    if settings.audit_public_key is None:
        return None
    try:
        return load_public_key(settings.audit_public_key)
    except ValueError as exc:
        raise ConfigError("audit_public_key", str(exc), allowed=_TRUSTED_KEY) from None


def writer_public_key(settings: Settings) -> Verifier | None:
    """The keys this deployment's heads verify under, found without creating anything.

    ``audit_public_key`` when set (and then the signer must be one of its keys), else the
    signer's ring (the local key and its retired keys, or every version of the transit key);
    None when there is no local key yet (a first start makes one).
    """
    configured = configured_public_key(settings)
    if settings.audit_signer == "transit":
        return _signer_and_ring(settings)[1]
    path = settings.home_path / "keys" / "audit-signing.key"
    if not path.exists():
        return configured
    return _signer_and_ring(settings)[1]


def signing_key_warning(settings: Settings) -> str | None:
    """What to warn about at a production start: a signing key this very process can read.

    Whoever runs as sendvault's user (or root) can then sign a forged log; a witness still
    catches rewrites of what it holds, but nothing stops new forged heads. A transit signer
    holds no key here (its token can still ask for signatures: see docs/audit.md).
    """
    if settings.audit_signer == "transit":
        return None
    path = settings.home_path / "keys" / "audit-signing.key"
    if os.access(path, os.R_OK) or not path.exists():
        return (
            f"the audit signing key {path} is readable by the user sendvault runs as: whoever runs as "
            "that user, or root, can sign a forged audit log; keep the key off this host "
            "(audit_signer = transit, docs/audit.md 'Keys off the host') and set audit_witness"
        )
    return None


def _signer_and_ring(settings: Settings) -> tuple[Signer, Verifier]:
    """This deployment's signer and the keys its heads verify under.

    With ``audit_public_key`` set, the signer's key must be one of its keys: a writer handed
    another key (a replaced key file) refuses to start rather than sign with it.
    """
    trusted = configured_public_key(settings)
    if settings.audit_signer == "transit":
        client = transit_client(settings)
        assert settings.audit_transit_key is not None  # transit_client checked it
        signer = TransitSigner(client, settings.audit_transit_key, trusted)
        return signer, trusted or signer.ring
    key = local_signing_key(settings)
    if trusted is not None and key.public_key() not in trusted:
        raise AuditUnavailable("the audit signing key does not match audit_public_key")
    return key, trusted or local_ring(settings, key.public_key())


def open_audit_store(settings: Settings) -> AuditStore:
    """The audit database for writing, with this deployment's signer and key ring.

    The store reloads the keys when the head stops verifying under them (a rotation by another
    process); the reloaded keys pass the same checks.
    """
    signer, ring = _signer_and_ring(settings)
    store = AuditStore(
        settings.home_path / "audit.db",
        signer,
        ring,
        checkpoint_records=settings.audit_checkpoint_records,
        checkpoint_seconds=settings.audit_checkpoint_seconds,
    )
    store.reload_keys = lambda: _signer_and_ring(settings)
    return store


def open_audit_reader(settings: Settings, public_key: Verifier | None = None) -> AuditStore:
    """The audit database, read-only: nothing is created; a missing file is AuditLogMissing."""
    store = AuditStore(settings.home_path / "audit.db", None, public_key, read_only=True)
    store.connect()
    return store


def audit_sealer(settings: Settings, *, create: bool = True) -> Sealer:
    """The sealer under the audit key; with ``create=False`` a missing key is AuditKeyMissing."""
    path = settings.home_path / "keys" / "audit.key"
    if not create and settings.audit_key is None and not path.exists():
        raise AuditKeyMissing(f"no audit key: set audit_key or restore {path}")
    return Sealer(load_key(path, settings.audit_key, "audit_key"), retired_sealing_keys(settings))


def open_audit(
    settings: Settings,
    *,
    linger_seconds: float = 0.0,
    clock: Callable[[], float] = time.time,
    refuse_tampered: bool = False,
) -> AuditLog:
    """A running audit log for this process; the API's lets records gather for ``linger_seconds``.

    The log is checked against its signed head (and witnesses) before anything is written. A
    log that fails the check is stopped (every record refused, an ALERT logged) until it checks
    again; with ``refuse_tampered`` (a CLI command, before it changes anything) the check's
    :class:`~sendvault.errors.AuditTampered` is raised instead.
    """
    store = open_audit_store(settings)
    try:
        witness = open_witnesses(settings, log_id=store.log_id())
    except BaseException:
        store.close()
        raise
    try:
        return AuditLog(
            store,
            audit_sealer(settings),
            linger_seconds=linger_seconds,
            clock=clock,
            witness=witness,
            refuse_tampered=refuse_tampered,
        )
    except BaseException:
        witness.close()
        store.close()
        raise
