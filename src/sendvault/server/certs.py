"""A local CA and the certificates it issues: server (ECDSA P-256) and client (mutual TLS).

`sendvault serve --dev` uses these for `localhost`/`127.0.0.1`; `sendvault certs` issues the same
files for production and for client certificates. Private keys are written with mode 0600, via a
temporary file and a rename, so a crash never leaves half a key.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .._fs import check_replaceable, write_atomic

__all__ = ["CertAuthority"]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class CertAuthority:
    """A CA whose certificate and key live at ``dir/ca.pem`` and ``dir/ca.key``."""

    def __init__(self, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, cert_path: Path) -> None:
        self.cert = cert
        self.key = key
        self.cert_path = cert_path

    @classmethod
    def load_or_create(cls, directory: Path, name: str = "sendvault local CA") -> CertAuthority:
        """Load the CA in ``directory`` or create it (10 years, P-256)."""
        cert_path, key_path = directory / "ca.pem", directory / "ca.key"
        if cert_path.is_file() and key_path.is_file():  # a FIFO there would hold the read for ever
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("CA key is not an EC key")
            return cls(x509.load_pem_x509_certificate(cert_path.read_bytes()), key, cert_path)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        check_replaceable(key_path, cert_path)  # both or neither: never a key without its certificate
        write_atomic(key_path, _key_pem(key))
        write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)
        return cls(cert, key, cert_path)

    def issue(
        self, cert_path: Path, key_path: Path, names: list[str], *, client: bool = False, days: int = 397
    ) -> None:
        """Issue a server (or, with ``client``, a client) certificate for ``names``."""
        key = ec.generate_private_key(ec.SECP256R1())
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(_now() - dt.timedelta(minutes=5))
            .not_valid_after(_now() + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        check_replaceable(key_path, cert_path)  # both or neither: never a key without its certificate
        write_atomic(key_path, _key_pem(key))
        write_atomic(
            cert_path,
            cert.public_bytes(serialization.Encoding.PEM)
            + self.cert.public_bytes(serialization.Encoding.PEM),
            mode=0o644,
        )
