"""The audit log's keys: who signs heads, which public keys verify them, rotation and status.

Two keys serve the log. The **signing key** signs heads, checkpoints and anchors (Ed25519): a
local file (``keys/audit-signing.key``, the development default) or an ed25519 key in
OpenBao/Vault transit, which signs on request and never hands the private key out. The
**sealing key** (``keys/audit.key`` or the ``audit_key`` setting) seals clear values inside
records and keys their fingerprints.

Rotation keeps old records verifiable and readable. A rotated local signing key's public half
moves to ``keys/audit-retired/signing-ID.pub`` (its private half is gone: the new key file
replaces it), a transit key keeps its old versions; the log's :class:`~.marks.KeyRing` holds
them all. A rotated sealing key moves to ``keys/audit-retired/sealing-ID.key`` and still opens
(and finds) the records it sealed. When ``audit_public_key`` is configured, a new signing key
is used only once that file trusts it: the first rotation prepares the key
(``keys/audit-signing.next.key``, or a new transit version) and returns its public key; after
the operator adds it to the trusted file, the next rotation switches to it.

Key ids are 16 hex digits: SHA-256 of the raw public key (signing) or of a domain-separated hash
of the key (sealing), never the key itself.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .._fs import read_small, write_atomic
from ..config import Settings
from ..crypto.keys import load_key, private_file
from ..errors import AuditUnavailable, ConfigError, KeyProviderError
from .marks import KeyRing, raw_public

if TYPE_CHECKING:
    from ..crypto.transit import TransitClient

__all__ = [
    "AuditKeyInfo",
    "AuditRotation",
    "TransitSigner",
    "audit_key_status",
    "load_public_keys",
    "local_ring",
    "public_pem",
    "retired_sealing_keys",
    "rotate_audit_keys",
    "sealing_key_id",
    "signing_key_id",
    "transit_client",
]

Role = Literal["signing", "sealing"]
State = Literal["current", "retired", "pending"]
Provider = Literal["local", "transit", "config"]


def signing_key_id(key: Ed25519PublicKey) -> str:
    """16 hex digits naming a signing key (from its public half)."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def sealing_key_id(key: bytes) -> str:
    """16 hex digits naming a sealing key, without revealing it."""
    return hashlib.sha256(b"sendvault-audit-sealing-key-id|" + key).hexdigest()[:16]


def public_pem(key: Ed25519PublicKey) -> str:
    """The PEM form of a public key (what goes into the ``audit_public_key`` file)."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_keys(path: str | Path) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in a PEM file (one or more blocks); ValueError when there is none."""
    try:
        text = read_small(Path(path))
    except OSError as exc:
        raise ValueError(f"{path}: {exc.strerror}") from None
    keys = []
    marker = b"-----END PUBLIC KEY-----"
    for block in text.split(marker):
        if b"-----BEGIN" not in block:
            continue
        try:
            key = serialization.load_pem_public_key(block + marker)
        except ValueError:
            raise ValueError(f"{path} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"{path} holds a key that is not Ed25519")  # noqa: TRY004 - a bad file
        keys.append(key)
    if not keys:
        raise ValueError(f"{path} is not a PEM public key")
    return keys


# -- local files ---------------------------------------------------------------------------------


def _keys(settings: Settings) -> Path:
    return settings.home_path / "keys"


def _retired(settings: Settings) -> Path:
    return _keys(settings) / "audit-retired"


def _signing_path(settings: Settings) -> Path:
    return _keys(settings) / "audit-signing.key"


def _next_path(settings: Settings) -> Path:
    return _keys(settings) / "audit-signing.next.key"


def _new_private_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _private(data: bytes, path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyProviderError(f"{path} is not an Ed25519 private key")
    return key


def local_signing_key(settings: Settings) -> Ed25519PrivateKey:
    """The local signing key, created on first use (never over an existing log)."""
    path = _signing_path(settings)
    if not path.exists() and (settings.home_path / "audit.db").exists():
        # A new key would sign over a log the old one signed: the log would stop at once anyway
        # (its head no longer verifies), so say why instead.
        raise AuditUnavailable(f"the audit signing key {path} is missing but the log exists: restore the key")
    key = _private(private_file(path, _new_private_pem), path)
    public = _keys(settings) / "audit-signing.pub"
    if not public.exists():
        public.write_text(public_pem(key.public_key()))
    return key


def _retired_signing(settings: Settings) -> list[tuple[Path, Ed25519PublicKey]]:
    found: list[tuple[Path, Ed25519PublicKey]] = []
    for path in sorted(_retired(settings).glob("signing-*.pub")):
        try:
            found.extend((path, key) for key in load_public_keys(path))
        except ValueError:
            continue  # not a key: it vouches for nothing
    return found


def local_ring(settings: Settings, current: Ed25519PublicKey) -> KeyRing:
    """The local key and the retired local keys (a development log's ring: no configured key)."""
    return KeyRing([current, *(key for _, key in _retired_signing(settings))])


def retired_sealing_keys(settings: Settings) -> list[bytes]:
    """The sealing keys retired by rotations, newest first: they still open old records."""
    paths = sorted(_retired(settings).glob("sealing-*.key"), key=lambda p: p.stat().st_mtime, reverse=True)
    return [load_key(path, None, "audit_key") for path in paths]


# -- transit -------------------------------------------------------------------------------------


def transit_client(settings: Settings) -> TransitClient:
    """The transit client for ``audit_signer = transit``; ConfigError naming a missing setting."""
    from ..crypto.transit import TransitClient  # noqa: PLC0415 - optional extra

    for name in ("audit_transit_url", "audit_transit_key", "audit_transit_token"):
        if getattr(settings, name) is None:
            raise ConfigError(name, "is required with audit_signer = transit")
    assert settings.audit_transit_url is not None  # checked above
    assert settings.audit_transit_token is not None
    return TransitClient(
        settings.audit_transit_url,
        settings.audit_transit_token,
        mount=settings.audit_transit_mount,
        ca_file=settings.audit_transit_ca_file,
    )


def _transit_versions(client: TransitClient, name: str) -> dict[int, Ed25519PublicKey]:
    info = client.read_key(name)
    if info.type != "ed25519":
        raise ConfigError(
            "audit_transit_key", f"{name!r} is a {info.type or 'unknown'} key; audit heads need ed25519"
        )
    versions = {}
    for version, text in info.public_keys.items():
        try:
            versions[version] = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            raise KeyProviderError(
                f"transit key {name!r} version {version} has a malformed public key"
            ) from None
    if not versions:
        raise KeyProviderError(f"transit key {name!r} has no public key")
    return versions


class TransitSigner:
    """Signs heads with an ed25519 transit key: the private key never leaves OpenBao/Vault.

    It signs with the newest version the trusted ring holds (every version when none is
    configured); :attr:`ring` holds every version's public key. When OpenBao is unreachable,
    :meth:`sign` raises :class:`~sendvault.errors.KeyProviderUnavailable`: the append fails and
    the API answers 503 until signing works again.
    """

    provider = "transit"

    def __init__(self, client: TransitClient, name: str, trusted: KeyRing | None = None) -> None:
        self._client = client
        self.name = name
        self.versions = _transit_versions(client, name)
        usable = [v for v, key in self.versions.items() if trusted is None or key in trusted]
        if not usable:
            raise AuditUnavailable(f"no version of transit key {name!r} is trusted by audit_public_key")
        self.version = max(usable)
        self.ring = KeyRing(list(self.versions.values()))

    def sign(self, data: bytes) -> bytes:
        """The raw 64-byte Ed25519 signature of ``data`` by the chosen version."""
        answer = self._client.sign(self.name, data, key_version=self.version)
        prefix = f"vault:v{self.version}:"
        if not answer.startswith(prefix):
            raise KeyProviderError(f"sign: transit key {self.name!r} answered with another version")
        try:
            signature = base64.b64decode(answer[len(prefix) :], validate=True)
        except (binascii.Error, ValueError):
            raise KeyProviderError(f"sign: transit key {self.name!r} gave a malformed signature") from None
        if len(signature) != 64:
            raise KeyProviderError(f"sign: transit key {self.name!r} gave a malformed signature")
        return signature

    def public_key(self) -> Ed25519PublicKey:
        """The public key of the version that signs."""
        return self.versions[self.version]


# -- status --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditKeyInfo:
    """One audit key as ``keys status`` shows it (no key material)."""

    role: Role
    key_id: str
    state: State
    provider: Provider
    created: dt.datetime | None
    age_days: float | None
    where: str


def _file_time(path: Path) -> dt.datetime:
    return dt.datetime.fromtimestamp(path.stat().st_mtime, tz=dt.UTC)


def _info(  # noqa: PLR0917 - one row's fields, in the order they are shown
    role: Role, key_id: str, state: State, provider: Provider, created: dt.datetime | None, where: str
) -> AuditKeyInfo:
    age = None if created is None else (dt.datetime.now(dt.UTC) - created).total_seconds() / 86_400
    return AuditKeyInfo(role, key_id, state, provider, created, age, where)


def _transit_time(text: str) -> dt.datetime | None:
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def audit_key_status(settings: Settings) -> list[AuditKeyInfo]:
    """The audit keys of this deployment: ids, states, ages, providers. Never creates a key.

    Local files' times are their modification times (a key file is written once, at its
    creation; a retired key's file at its retirement). A transit key's versions are read from
    OpenBao (KeyProviderUnavailable when it cannot be reached).
    """
    out: list[AuditKeyInfo] = []
    if settings.audit_signer == "transit":
        client = transit_client(settings)
        assert settings.audit_transit_key is not None  # transit_client checked it
        info = client.read_key(settings.audit_transit_key)
        signer = TransitSigner(client, settings.audit_transit_key, _configured_ring(settings))
        where = f"{settings.audit_transit_url} {settings.audit_transit_mount}/{settings.audit_transit_key}"
        for version, key in sorted(signer.versions.items()):
            state: State = (
                "current"
                if version == signer.version
                else "retired"
                if version < signer.version
                else "pending"
            )
            created = _transit_time(info.versions.get(version, ""))
            out.append(
                _info("signing", signing_key_id(key), state, "transit", created, f"{where} v{version}")
            )
    else:
        path = _signing_path(settings)
        if path.exists():
            key = _private(path.read_bytes(), path).public_key()
            out.append(_info("signing", signing_key_id(key), "current", "local", _file_time(path), str(path)))
        nxt = _next_path(settings)
        if nxt.exists():
            key = _private(nxt.read_bytes(), nxt).public_key()
            out.append(_info("signing", signing_key_id(key), "pending", "local", _file_time(nxt), str(nxt)))
        for retired, key in _retired_signing(settings):
            out.append(
                _info("signing", signing_key_id(key), "retired", "local", _file_time(retired), str(retired))
            )
    sealing = _keys(settings) / "audit.key"
    if settings.audit_key is not None:
        key_bytes = load_key(sealing, settings.audit_key, "audit_key")
        out.append(
            _info("sealing", sealing_key_id(key_bytes), "current", "config", None, "audit_key setting")
        )
    elif sealing.exists():
        key_bytes = load_key(sealing, None, "audit_key")
        out.append(
            _info("sealing", sealing_key_id(key_bytes), "current", "local", _file_time(sealing), str(sealing))
        )
    for retired_path in sorted(_retired(settings).glob("sealing-*.key")):
        key_bytes = load_key(retired_path, None, "audit_key")
        out.append(
            _info(
                "sealing",
                sealing_key_id(key_bytes),
                "retired",
                "local",
                _file_time(retired_path),
                str(retired_path),
            )
        )
    return out


def _configured_ring(settings: Settings) -> KeyRing | None:
    if settings.audit_public_key is None:
        return None
    try:
        return KeyRing(load_public_keys(settings.audit_public_key))
    except ValueError as exc:
        raise ConfigError("audit_public_key", str(exc)) from None


# -- rotation ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditRotation:
    """What a rotation did.

    ``signing``/``sealing``: (old id, new id) of a key switched, None when not rotated (or only
    prepared). ``pending``: a new signing key was prepared but is not used until the
    ``audit_public_key`` file trusts it (add ``public_key_pem`` there, then rotate again).
    ``public_key_pem``: the new signing key's public half. ``seq``: the record of the rotation.
    """

    signing: tuple[str, str] | None
    sealing: tuple[str, str] | None
    public_key_pem: str | None
    pending: bool
    seq: int | None


def _prepare_local(settings: Settings, trusted: KeyRing | None) -> tuple[Ed25519PrivateKey, bool]:
    """The next local signing key (made now, or kept from an earlier rotation) and whether it may sign."""
    nxt = _next_path(settings)
    key = _private(private_file(nxt, _new_private_pem), nxt)
    return key, trusted is None or key.public_key() in trusted


def _prepare_transit(settings: Settings, trusted: KeyRing | None) -> tuple[int, Ed25519PublicKey, bool]:
    """The transit version to switch to and whether it may sign (a new version unless one waits)."""
    client = transit_client(settings)
    name = settings.audit_transit_key
    assert name is not None  # transit_client checked it
    current = TransitSigner(client, name, trusted)
    latest = max(current.versions)
    if latest == current.version:
        latest = client.rotate_key(name)
        current = TransitSigner(client, name, trusted)
    key = _transit_versions(client, name)[latest]
    return latest, key, trusted is None or key in trusted


@dataclass
class _Plan:
    old_signer: Ed25519PublicKey | None = None
    signing: tuple[str, str] | None = None
    new_local: Ed25519PrivateKey | None = None
    new_pem: str | None = None
    pending: bool = False
    sealing: tuple[str, str] | None = None
    new_sealing: bytes | None = None

    def meta(self, provider: str) -> dict[str, object]:
        meta: dict[str, object] = {}
        if self.signing is not None:
            meta["signing"] = {"from": self.signing[0], "to": self.signing[1], "provider": provider}
        if self.sealing is not None:
            meta["sealing"] = {"from": self.sealing[0], "to": self.sealing[1]}
        return meta


def _plan_signing(settings: Settings, plan: _Plan, old: Ed25519PublicKey) -> None:
    trusted = _configured_ring(settings)
    if settings.audit_signer == "transit":
        _, new_public, usable = _prepare_transit(settings, trusted)
    else:
        plan.new_local, usable = _prepare_local(settings, trusted)
        new_public = plan.new_local.public_key()
    plan.old_signer = old
    plan.new_pem = public_pem(new_public)
    plan.pending = not usable
    if usable:
        plan.signing = (signing_key_id(old), signing_key_id(new_public))


def _switch_local(settings: Settings, plan: _Plan) -> None:
    """Put the new local keys in place; old public signing keys and old sealing keys retire."""
    retired = _retired(settings)
    retired.mkdir(parents=True, exist_ok=True, mode=0o700)
    if plan.signing is not None and plan.new_local is not None and plan.old_signer is not None:
        # The old public key stays trusted for old records; the private key is replaced (gone).
        write_atomic(
            retired / f"signing-{plan.signing[0]}.pub", public_pem(plan.old_signer).encode(), mode=0o644
        )
        new_private = plan.new_local.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        write_atomic(_signing_path(settings), new_private)
        write_atomic(
            _keys(settings) / "audit-signing.pub",
            public_pem(plan.new_local.public_key()).encode(),
            mode=0o644,
        )
        _next_path(settings).unlink(missing_ok=True)
    if plan.sealing is not None and plan.new_sealing is not None:
        current = _keys(settings) / "audit.key"
        write_atomic(retired / f"sealing-{plan.sealing[0]}.key", current.read_bytes())
        write_atomic(current, base64.b64encode(plan.new_sealing) + b"\n")


def rotate_audit_keys(
    settings: Settings, *, signing: bool = True, sealing: bool = True, actor: str | None = None
) -> AuditRotation:
    """Rotate the audit signing and/or sealing key; old records keep verifying and opening.

    The log is checked first (verify before extend: :class:`~sendvault.errors.AuditTampered`
    and nothing rotated when it does not match its signed head), the rotation is recorded as
    ``audit:keys-rotate`` (ids only) and covered by a checkpoint under the old signing key, then
    the keys switch and the head is signed again under the new one. A running server picks up
    a new signing key at its next write (the head no longer verifies under its ring, so it
    reloads the keys); it seals under the old sealing key until it restarts (both open).

    With ``audit_public_key`` set, a new signing key that file does not trust yet is only
    prepared (``pending``); rotate again once it is added. Raises ConfigError for a sealing key
    given by the ``audit_key`` setting (rotate it there), KeyProviderError(Unavailable) for transit.
    """
    from . import open_audit  # noqa: PLC0415 - the package imports this module
    from .events import Event  # noqa: PLC0415

    if sealing and settings.audit_key is not None:
        raise ConfigError(
            "audit_key", "is set in configuration: rotate the sealing key there, not with a key file"
        )
    plan = _Plan()
    log = open_audit(settings)
    try:
        log.store.checkpoint()  # the log must match its head before anything changes
        if signing:
            _plan_signing(settings, plan, log.store.signer_public_key())
        if sealing:
            old_sealing = load_key(_keys(settings) / "audit.key", None, "audit_key")
            plan.new_sealing = os.urandom(32)
            plan.sealing = (sealing_key_id(old_sealing), sealing_key_id(plan.new_sealing))
        if plan.signing is None and plan.sealing is None:
            return AuditRotation(None, None, plan.new_pem, plan.pending, None)
        log.record_sync(Event.AUDIT_KEYS_ROTATE, actor=actor, meta=plan.meta(settings.audit_signer))
        log.store.checkpoint()  # the old signing key vouches for everything up to the rotation
        seq = log.store.last_head_seq()
    finally:
        log.close()
    _switch_local(settings, plan)
    if plan.signing is not None:
        # Sign the head again under the new key: from here on it is the one that signs.
        after = open_audit(settings)
        try:
            after.store.probe()
        finally:
            after.close()
    return AuditRotation(plan.signing, plan.sealing, plan.new_pem, plan.pending, seq)
