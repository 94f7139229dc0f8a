"""A root, an intermediate and a leaf with chosen validity and keys, which trustme cannot make.

trustme issues every certificate for now and with 2048-bit RSA or P-256 keys; the defects of
issue 14 need an intermediate whose validity has ended and a 1024-bit RSA leaf.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_Key = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
_NOW = dt.datetime.now(dt.UTC)


def rsa_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def ec_key(curve: ec.EllipticCurve | None = None) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(curve or ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(
    subject: str,
    key: _Key,
    issuer: x509.Certificate | None,
    issuer_key: _Key,
    *,
    ca: bool,
    names: tuple[str, ...] = (),
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    digest: hashes.HashAlgorithm | None = None,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer.subject if issuer is not None else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or _NOW - dt.timedelta(days=30))
        .not_valid_after(not_after or _NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        alt: list[x509.GeneralName] = []
        for n in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    return builder.sign(issuer_key, digest or hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Chain:
    """Files for a server (leaf + intermediate) and for a client (the root)."""

    cert_file: Path
    key_file: Path
    ca_file: Path

    def configure_cert(self, ctx: ssl.SSLContext) -> None:
        # OpenSSL refuses to load a 1024-bit key at the default security level: these servers
        # exist, and serving one is the point.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
        ctx.load_cert_chain(self.cert_file, self.key_file)


def chain(
    directory: Path,
    *names: str,
    leaf_key: _Key | None = None,
    intermediate_not_after: dt.datetime | None = None,
    intermediate_not_before: dt.datetime | None = None,
    intermediate_key: _Key | None = None,
    leaf_digest: hashes.HashAlgorithm | None = None,
    with_intermediate: bool = True,
) -> Chain:
    """root -> [intermediate ->] leaf for ``names``, written to ``directory``."""
    root_key = ec_key()
    root = _cert("sendvault test root", root_key, None, root_key, ca=True,
                 not_after=_NOW + dt.timedelta(days=3650))  # fmt: skip
    issuer, issuer_key, sent = root, root_key, b""
    if with_intermediate:
        issuer_key = intermediate_key or ec_key()
        issuer = _cert(
            "sendvault test intermediate", issuer_key, root, root_key, ca=True,
            not_before=intermediate_not_before, not_after=intermediate_not_after,
        )  # fmt: skip
        sent = _pem(issuer)
    key = leaf_key or ec_key()
    leaf = _cert(names[0], key, issuer, issuer_key, ca=False, names=names, digest=leaf_digest)
    out = Chain(directory / "server.pem", directory / "server.key", directory / "root.pem")
    out.cert_file.write_bytes(_pem(leaf) + sent)
    out.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    out.ca_file.write_bytes(_pem(root))
    return out


def sha1_leaf(directory: Path, rsa_bits: int = 1024) -> Chain:
    """root -> leaf for 127.0.0.1 and localhost, the leaf signed with ECDSA-SHA1 (by the openssl CLI:
    cryptography no longer signs with SHA-1)."""
    import subprocess

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout",
        "root.key", "-out", "root.pem", "-subj", "/CN=sendvault test root", "-days", "90",
        "-addext", "basicConstraints=critical,CA:TRUE")  # fmt: skip
    run("req", "-newkey", f"rsa:{rsa_bits}", "-nodes", "-keyout", "server.key", "-out", "leaf.csr",
        "-subj", "/CN=127.0.0.1")  # fmt: skip
    (directory / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "leaf.csr", "-CA", "root.pem", "-CAkey", "root.key", "-sha1", "-days", "90",
        "-out", "server.pem", "-extfile", "ext")  # fmt: skip
    return Chain(directory / "server.pem", directory / "server.key", directory / "root.pem")
