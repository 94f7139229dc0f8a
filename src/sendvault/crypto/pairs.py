"""Whether a private key belongs to a certificate: the TLS listener's, the database link's and the
harness's client certificate checks all ask it before a handshake would fail less clearly."""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes

__all__ = ["is_key_of"]

_DER = serialization.Encoding.DER
_SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def is_key_of(key: PrivateKeyTypes, cert: x509.Certificate) -> bool:
    """Whether ``key``'s public half is the public key ``cert`` certifies."""
    return key.public_key().public_bytes(_DER, _SPKI) == cert.public_key().public_bytes(_DER, _SPKI)
