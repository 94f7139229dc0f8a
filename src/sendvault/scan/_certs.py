"""The certificates a TLS server sends, and how ``scan tls`` judges them.

Every certificate of the chain the server sends is judged, not only the leaf: an intermediate
whose validity has ended breaks the chain as surely as an expired leaf (``tls.cert-expired``,
naming its depth), and one that expires within 30 days is ``tls.cert-expiring``. Key strength
(``tls.weak-key``: RSA or DSA under 2048 bits, EC under 256) is judged apart from trust: OpenSSL
at its default security level calls a chain with a 1024-bit leaf untrusted ("EE certificate key
too weak") although it validates, which would send the user after the wrong problem. So trust is
judged again at security level 0 when the only complaint was the key; that level also accepts
SHA-1 and MD5 signatures, which clients refuse, so those are then checked here.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from .findings import CheckResult

__all__ = ["Cert", "Reading", "judge"]

EXPIRING_DAYS = 30
# What verification says of a certificate outside its validity period.
VALIDITY_MESSAGES = ("certificate has expired", "certificate is not yet valid")
_MIN_BITS = {"RSA": 2048, "DSA": 2048, "EC": 256}
_BROKEN_HASHES = ("md5", "sha1")

_Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Cert:
    """What the scan judges of one certificate."""

    subject: str
    not_before: dt.datetime
    not_after: dt.datetime
    dns_names: tuple[str, ...]
    ips: tuple[_Address, ...]
    key_type: str  # RSA, DSA, EC, Ed25519, Ed448 (or the key class's name)
    key_bits: int
    signature_hash: str | None  # None for Ed25519/Ed448 or an algorithm cryptography does not know
    self_signed: bool

    @classmethod
    def from_der(cls, der: bytes) -> Cert:
        """From a certificate's DER bytes."""
        # Imported here: only a scan that reached a certificate needs cryptography.
        from cryptography import x509  # noqa: PLC0415
        from cryptography.exceptions import UnsupportedAlgorithm  # noqa: PLC0415

        cert = x509.load_der_x509_certificate(der)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            dns: tuple[str, ...] = ()
            ips: tuple[_Address, ...] = ()
        else:
            dns = tuple(san.get_values_for_type(x509.DNSName))
            ips = tuple(
                ip
                for ip in san.get_values_for_type(x509.IPAddress)
                if not isinstance(ip, ipaddress._BaseNetwork)
            )
        try:
            digest = cert.signature_hash_algorithm
        except UnsupportedAlgorithm:
            digest = None
        key_type, bits = _key(cert)
        return cls(
            cert.subject.rfc4514_string(),
            cert.not_valid_before_utc,
            cert.not_valid_after_utc,
            dns,
            ips,
            key_type,
            bits,
            digest.name if digest is not None else None,
            cert.subject == cert.issuer,
        )

    def names(self, name: str) -> bool:
        """Whether the subject alternative names cover ``name`` (one-label wildcards allowed)."""
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            ip = None
        if ip is not None:
            return ip in self.ips
        wanted = name.lower().rstrip(".")
        for dns in self.dns_names:
            pattern = dns.lower().rstrip(".")
            if pattern == wanted:
                return True
            if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
                return True
        return False

    @property
    def weak_key(self) -> bool:
        """RSA or DSA under 2048 bits, EC under 256."""
        return self.key_bits < _MIN_BITS.get(self.key_type, 0)

    @property
    def key(self) -> str:
        """``RSA 2048``, ``EC 256``..."""
        return f"{self.key_type} {self.key_bits}"


def _key(cert: object) -> tuple[str, int]:
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa  # noqa: PLC0415
    from cryptography.x509.oid import PublicKeyAlgorithmOID  # noqa: PLC0415

    # cryptography 51 deprecates DSA: reading ``dsa.DSAPublicKey`` or loading a DSA key warns
    # (an error under -W error), and a warnings filter is process-wide, not safe beside the
    # scan's threads. So a DSA key is known by its algorithm OID and measured from the DER.
    if cert.public_key_algorithm_oid == PublicKeyAlgorithmOID.DSA:  # type: ignore[attr-defined]
        return "DSA", _dsa_bits(cert.tbs_certificate_bytes)  # type: ignore[attr-defined]
    key = cert.public_key()  # type: ignore[attr-defined]
    if isinstance(key, rsa.RSAPublicKey):
        return "RSA", key.key_size
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "EC", key.curve.key_size
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", 256
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", 456
    return type(key).__name__, 0


def _der(data: bytes, at: int) -> tuple[int, int]:
    """Where the contents of the DER element at ``at`` start and end."""
    length = data[at + 1]
    start = at + 2
    if length & 0x80:
        start += length & 0x7F
        length = int.from_bytes(data[at + 2 : start], "big")
    if start + length > len(data):
        raise IndexError(at)
    return start, start + length


def _dsa_bits(tbs: bytes) -> int:
    """Bits of the DSA prime p in a TBSCertificate's key (0 if the parameters are not there).

    TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serial, signature, issuer, validity,
    subject, SubjectPublicKeyInfo ::= SEQUENCE { SEQUENCE { OID, Dss-Parms ::= SEQUENCE { p,
    q, g } }, BIT STRING }, ... } (RFC 5280 and RFC 3279).
    """
    try:
        at, _ = _der(tbs, 0)
        if tbs[at] == 0xA0:
            at = _der(tbs, at)[1]
        for _skipped in range(5):
            at = _der(tbs, at)[1]
        algorithm, algorithm_end = _der(tbs, _der(tbs, at)[0])  # into SubjectPublicKeyInfo
        params = _der(tbs, algorithm)[1]  # past the OID
        if params >= algorithm_end or tbs[params] != 0x30:
            return 0
        p = _der(tbs, params)[0]
        start, end = _der(tbs, p)
    except IndexError:
        return 0
    return int.from_bytes(tbs[start:end], "big").bit_length()


@dataclass(frozen=True, slots=True)
class Reading:
    """The chain as the target sent it (leaf first), with what verification said of it."""

    chain: tuple[Cert, ...] = ()
    untrusted: str | None = None  # the verification message, when the chain did not verify
    chain_unknown: str | None = None  # why verification could not be attempted
    error: str | None = None  # why the certificates could not be read at all
    chain_skipped: bool = False  # no usable CA file: already reported as tls.unknown
    lenient: bool = False  # trust was judged at security level 0 (SHA-1 signatures allowed)


def _role(depth: int, cert: Cert) -> str:
    if depth == 0:
        return "leaf"
    return "root" if cert.self_signed else "intermediate"


def _where(depth: int, cert: Cert) -> str:
    return f"{_role(depth, cert)} {cert.subject} (depth {depth})"


def judge(reading: Reading, name: str, now: dt.datetime, result: CheckResult) -> None:
    """Validity of every certificate sent, the leaf's name, every key's strength, and trust."""
    if not reading.chain:
        result.cannot(f"certificate: {reading.error}")
        result.fail("tls.unknown", "certificate could not be read")
        return
    leaf = reading.chain[0]
    result.facts["certificate"] = {
        "subject": leaf.subject,
        "not_after": leaf.not_after.isoformat(),
        "key": leaf.key,
    }
    result.facts["chain"] = [
        {"depth": d, "subject": c.subject, "not_after": c.not_after.isoformat(), "key": c.key}
        for d, c in enumerate(reading.chain)
    ]
    verified = reading.untrusted is None and reading.chain_unknown is None and not reading.chain_skipped
    expired = _validity(reading.chain, now, result, verified=verified)
    if leaf.names(name):
        result.ok()
    else:
        result.fail("tls.cert-hostname", f"certificate does not name {name}")
    weak = [f"{_where(d, c)}: {c.key} bits" for d, c in enumerate(reading.chain) if c.weak_key]
    if weak:
        result.fail("tls.weak-key", "; ".join(weak))
    else:
        result.ok()
    _trust(reading, expired, result)


def _validity(
    chain: tuple[Cert, ...], now: dt.datetime, result: CheckResult, *, verified: bool = False
) -> bool:
    """Judge every certificate's dates; whether one is outside its validity period.

    A certificate sent beside a chain that verifies without it (an old cross-signature) is still
    reported: clients that build their path through it (OpenSSL 1.0, old Android) fail.
    """
    out = [(d, c) for d, c in enumerate(chain) if c.not_after <= now or c.not_before > now]
    soon = [(d, c) for d, c in enumerate(chain) if (d, c) not in out
            and c.not_after - now < dt.timedelta(days=EXPIRING_DAYS)]  # fmt: skip
    if out:
        result.fail(
            "tls.cert-expired",
            "; ".join(f"{_where(d, c)}: valid {c.not_before:%Y-%m-%d} to {c.not_after:%Y-%m-%d}"
                      for d, c in out)
            + (" (sent, though the chain verifies here without it: clients that build their path "
               "through it fail)" if verified else ""),
        )  # fmt: skip
    elif soon:
        result.fail(
            "tls.cert-expiring",
            "; ".join(f"{_where(d, c)}: expires {c.not_after:%Y-%m-%d} ({(c.not_after - now).days} days)"
                      for d, c in soon),
        )  # fmt: skip
    else:
        result.ok()
    return bool(out)


def _trust(reading: Reading, expired: bool, result: CheckResult) -> None:
    if reading.chain_skipped:
        return
    if reading.chain_unknown is not None:
        result.cannot(f"chain: {reading.chain_unknown}")
        return
    if reading.untrusted is None:
        broken = [
            f"{_where(d, c)} is signed with {c.signature_hash}"
            for d, c in enumerate(reading.chain)
            if reading.lenient and not c.self_signed and c.signature_hash in _BROKEN_HASHES
        ]
        if broken:
            result.fail(
                "tls.cert-untrusted", "chain not trusted: " + "; ".join(broken) + ", which clients refuse"
            )
        else:
            result.ok()
    elif reading.untrusted in VALIDITY_MESSAGES and expired:
        result.ok()  # reported as tls.cert-expired, with the certificate named
    elif reading.untrusted in VALIDITY_MESSAGES:
        result.fail(
            "tls.cert-untrusted",
            f"chain not trusted ({reading.untrusted}: a certificate the server did not send, "
            "such as the root in the trust store)",
        )
    else:
        result.fail("tls.cert-untrusted", f"chain not trusted ({reading.untrusted})")
