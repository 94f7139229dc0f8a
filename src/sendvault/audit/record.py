"""Turning a payload into an audit record body with no clear PII, and the chain hash.

PII rule: every string under the keys ``tokenValue``, ``value`` and ``values`` (which covers the
``value`` of each item in an ``attributes`` list) is personal data. Each is replaced by a
placeholder ``{"$pii": N}``; the clear values of a record are sealed together with AES-256-GCM
under the audit key, bound to the record's random id, and each gets a keyed fingerprint (HMAC
under a key derived from the audit key) so an investigator can find records by value. Tokens,
request ids, types, ``sendKey`` and messages are not personal data and stay as they are.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import msgspec
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import CryptoError

__all__ = ["GENESIS", "PII_KEYS", "Sealer", "chain_hash", "names_purge", "redact"]

PII_KEYS = frozenset({"tokenValue", "value", "values"})
GENESIS = b"\0" * 32
_encoder = msgspec.json.Encoder(order="sorted")


def redact(doc: Any, values: list[str] | None = None) -> tuple[Any, list[str]]:
    """``doc`` with every PII string replaced by ``{"$pii": index}``, and the clear values."""
    values = [] if values is None else values
    return _walk(doc, values, pii=False), values


def _walk(node: Any, values: list[str], *, pii: bool) -> Any:
    if isinstance(node, str):
        if pii:
            values.append(node)
            return {"$pii": len(values) - 1}
        return node
    if isinstance(node, dict):
        return {k: _walk(v, values, pii=k in PII_KEYS) for k, v in node.items()}
    if isinstance(node, list):
        return [_walk(v, values, pii=pii) for v in node]
    return node


_PHONE_LIKE = re.compile(r"[+0-9\s().-]+")


def _search_form(value: str) -> str:
    text = unicodedata.normalize("NFC", value.strip()).lower()
    return re.sub(r"[^0-9]", "", text) if _PHONE_LIKE.fullmatch(text) else text


def chain_hash(prev: bytes, seq: int, body: bytes, request: bytes = b"", response: bytes = b"") -> bytes:
    """SHA-256 over the previous hash, the record's number, its body and its payload blobs.

    Each part is length-prefixed, so no byte can move from one part to another unnoticed.
    """
    digest = hashlib.sha256(prev + seq.to_bytes(8, "big"))
    for part in (body, request, response):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


def canonical(doc: dict[str, Any]) -> bytes:
    """The one byte encoding of a record body (JSON, sorted keys)."""
    return _encoder.encode(doc)


class Sealer:
    """Seals a record's clear values and fingerprints them, under the audit key."""

    def __init__(self, audit_key: bytes, retired: Sequence[bytes] = ()) -> None:
        self._aead = AESGCM(audit_key)
        self._fp = _fp_mac(audit_key)
        # Keys rotated out: they still open the records they sealed and find them by value.
        self._retired = [(AESGCM(key), _fp_mac(key)) for key in retired if key != audit_key]

    def fingerprints(self, value: str) -> list[str]:
        """The value's fingerprint under the current key and every retired one (for searches)."""
        return [self.fingerprint(value)] + [_fingerprint(fp, value) for _, fp in self._retired]

    def fingerprint(self, value: str) -> str:
        """Keyed fingerprint of one clear value (hex, 128 bits), over its search form.

        The search form ignores case, surrounding space and phone punctuation, so an investigator
        finds ``Some.One@Example.com`` by ``some.one@example.com`` and ``+1 212-555-0123`` by
        ``12125550123``.
        """
        return _fingerprint(self._fp, value)

    def seal(self, values: list[str]) -> dict[str, str]:
        """``{"id", "ct"}``: the values sealed together, bound to a fresh record id."""
        return self.seal_bytes(msgspec.json.encode(values))

    def seal_bytes(self, data: bytes) -> dict[str, str]:
        """``{"id", "ct"}``: ``data`` sealed, bound to a fresh random id."""
        blob = self.seal_blob(data)
        return {"id": base64.b64encode(blob[:12]).decode(), "ct": base64.b64encode(blob[12:]).decode()}

    def seal_blob(self, data: bytes) -> bytes:
        """``id (12) | nonce (12) | ciphertext``: ``data`` sealed and bound to a fresh random id."""
        record_id = os.urandom(12)
        nonce = os.urandom(12)
        return record_id + nonce + self._aead.encrypt(nonce, data, b"sendvault-audit|" + record_id)

    def open_blob(self, blob: bytes) -> bytes:
        """What :meth:`seal_blob` sealed (an investigator holding the audit key)."""
        for aead in (self._aead, *(a for a, _ in self._retired)):
            try:
                return aead.decrypt(blob[12:24], blob[24:], b"sendvault-audit|" + blob[:12])
            except Exception:  # noqa: BLE001, S112 - every failure is the same opaque answer
                continue
        raise CryptoError("audit record could not be opened")

    def open_bytes(self, sealed: dict[str, str]) -> bytes:
        """What :meth:`seal_bytes` sealed."""
        try:
            blob = base64.b64decode(sealed["id"]) + base64.b64decode(sealed["ct"])
        except (KeyError, ValueError):
            raise CryptoError("audit record could not be opened") from None
        return self.open_blob(blob)

    def open(self, sealed: dict[str, str]) -> list[str]:
        """The clear values of a sealed record (an investigator holding the audit key)."""
        try:
            return list(msgspec.json.decode(self.open_bytes(sealed), type=list[str]))
        except msgspec.DecodeError:
            raise CryptoError("audit record could not be opened") from None


def _fp_mac(key: bytes) -> hmac.HMAC:
    fp_key = HKDF(hashes.SHA256(), 32, salt=None, info=b"sendvault audit fingerprint").derive(key)
    return hmac.HMAC(fp_key, hashes.SHA256())


def _fingerprint(mac: hmac.HMAC, value: str) -> str:
    copy = mac.copy()
    copy.update(_search_form(value).encode())
    return copy.finalize()[:16].hex()


_purge_decoder = msgspec.json.Decoder(dict[str, Any])


def names_purge(body: bytes, anchor: int) -> bool:
    """Whether ``body`` is the ``audit:purge`` record of the purge that left the anchor at ``anchor``.

    A purge writes its record (``meta.through_seq``: the last record removed) with its anchor; an
    anchor without that record was not left by a purge (see :mod:`.verify`).
    """
    if b'"audit:purge"' not in body:
        return False  # the cheap test first: verify asks this of every record after the anchor
    try:
        doc = _purge_decoder.decode(body)
    except msgspec.DecodeError:
        return False
    meta = doc.get("meta")
    through = meta.get("through_seq") if isinstance(meta, dict) else None
    return doc.get("event") == "audit:purge" and type(through) is int and through == anchor
