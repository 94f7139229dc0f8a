"""A client's ClientHello, read off the wire before any TLS library sees it.

OpenSSL refuses a ClientHello it will not serve (TLS 1.0 only, RSA key exchange only) before an
application can ask what was offered, and the ssl module exposes nothing of it anyway. So
``scan listen`` reads the first TLS records itself, parses the ClientHello here (RFC 8446 §4.1.2,
RFC 5246 §7.4.1.2, and the SSL 2.0-compatible form old Java and Windows stacks still send), and
only then hands the same bytes to OpenSSL through a memory BIO to complete the handshake.
"""

from __future__ import annotations

import ssl
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache

from ._wire import LEGACY_SUITES

__all__ = ["ClientHello", "NotTLS", "parse_client_hello", "read_hello", "suite_info", "version_name"]

_HANDSHAKE, _CLIENT_HELLO = 22, 1
MAX_HELLO = 64 * 1024  # a post-quantum key share is ~1.2 KB; anything near this is hostile

_VERSIONS = {
    0x0002: "SSLv2",
    0x0300: "SSLv3",
    0x0301: "TLSv1.0",
    0x0302: "TLSv1.1",
    0x0303: "TLSv1.2",
    0x0304: "TLSv1.3",
}
_GROUPS = {
    0x0017: "secp256r1",
    0x0018: "secp384r1",
    0x0019: "secp521r1",
    0x001D: "x25519",
    0x001E: "x448",
    0x0100: "ffdhe2048",
    0x0101: "ffdhe3072",
    0x0102: "ffdhe4096",
    0x0103: "ffdhe6144",
    0x0104: "ffdhe8192",
    0x11EC: "X25519MLKEM768",
    0x11EB: "SecP256r1MLKEM768",
    0x6399: "X25519Kyber768Draft00",
    0x0015: "secp224r1",
    0x0013: "secp192r1",
}
_SIGNATURES = {
    0x0201: "rsa_pkcs1_sha1",
    0x0203: "ecdsa_sha1",
    0x0401: "rsa_pkcs1_sha256",
    0x0501: "rsa_pkcs1_sha384",
    0x0601: "rsa_pkcs1_sha512",
    0x0403: "ecdsa_secp256r1_sha256",
    0x0503: "ecdsa_secp384r1_sha384",
    0x0603: "ecdsa_secp521r1_sha512",
    0x0804: "rsa_pss_rsae_sha256",
    0x0805: "rsa_pss_rsae_sha384",
    0x0806: "rsa_pss_rsae_sha512",
    0x0807: "ed25519",
    0x0808: "ed448",
    0x0809: "rsa_pss_pss_sha256",
    0x080A: "rsa_pss_pss_sha384",
    0x080B: "rsa_pss_pss_sha512",
    0x0202: "dsa_sha1",
    0x0402: "dsa_sha256",
    0x0303: "ecdsa_sha224",
    0x0301: "rsa_sha224",
}
_SCSV = {0x00FF: "TLS_EMPTY_RENEGOTIATION_INFO_SCSV", 0x5600: "TLS_FALLBACK_SCSV"}
# RSA key exchange suites old clients (Java 6, Windows XP) still offer that OpenSSL 3 does not know.
_RSA_ONLY_IANA = {
    0x0001: "NULL-MD5",
    0x0002: "NULL-SHA",
    0x0062: "EXP1024-DES-CBC-SHA",
    0x0064: "EXP1024-RC4-SHA",
    0x0060: "EXP1024-RC4-MD5",
    0x0061: "EXP1024-RC2-CBC-MD5",
}


class NotTLS(ValueError):
    """The bytes are not a TLS ClientHello (plain HTTP on the TLS port, garbage, a truncation)."""


def grease(code: int) -> bool:
    """RFC 8701's reserved values (0x0A0A, 0x1A1A...): noise a client adds, never offered."""
    return code & 0x0F0F == 0x0A0A and code >> 8 == code & 0xFF


def version_name(code: int) -> str:
    """``TLSv1.2`` for 0x0303; hex for anything else."""
    return _VERSIONS.get(code, f"0x{code:04x}")


def group_name(code: int) -> str:
    """``x25519`` for 0x001d; hex for groups without a name here."""
    return _GROUPS.get(code, f"0x{code:04x}")


def signature_name(code: int) -> str:
    """``rsa_pss_rsae_sha256`` for 0x0804; hex for schemes without a name here."""
    return _SIGNATURES.get(code, f"0x{code:04x}")


@cache
def _openssl_suites() -> dict[int, dict[str, object]]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.set_ciphers("ALL:COMPLEMENTOFALL:@SECLEVEL=0")
    known = {int(str(c["id"])) & 0xFFFF: dict(c) for c in ctx.get_ciphers()}
    return {**{code: dict(s) for code, s in LEGACY_SUITES.items()}, **known}


def suite_info(code: int) -> tuple[str, bool | None]:
    """(name, RSA key exchange?) of a suite; None when the suite is unknown here (hex name)."""
    if code in _SCSV:
        return _SCSV[code], False
    suite = _openssl_suites().get(code)
    if suite is None:
        return (_RSA_ONLY_IANA[code], True) if code in _RSA_ONLY_IANA else (f"0x{code:04x}", None)
    return str(suite["name"]), str(suite.get("kea", "")).startswith("kx-rsa")


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a client offered."""

    legacy_version: int
    versions: tuple[int, ...]  # from supported_versions; () when the client sent none
    suites: tuple[int, ...]
    groups: tuple[int, ...] = ()
    signature_algorithms: tuple[int, ...] = ()
    server_name: str | None = None
    alpn: tuple[str, ...] = ()
    sslv2_format: bool = False
    extensions: tuple[int, ...] = field(default=())

    @property
    def offered_versions(self) -> tuple[int, ...]:
        """supported_versions, or the legacy version (the maximum) when there is none."""
        return self.versions or (self.legacy_version,)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, size: int) -> bytes:
        if self.at + size > len(self.data):
            raise NotTLS("a ClientHello shorter than its fields")
        out = self.data[self.at : self.at + size]
        self.at += size
        return out

    def number(self, width: int) -> int:
        return int.from_bytes(self.take(width), "big")

    def vector(self, width: int) -> _Reader:
        return _Reader(self.take(self.number(width)))

    def codes(self, width: int) -> tuple[int, ...]:
        raw = self.take(self.number(width))
        if len(raw) % 2:
            raise NotTLS("a list of 16-bit codes with an odd length")
        return tuple(int.from_bytes(raw[i : i + 2], "big") for i in range(0, len(raw), 2))

    @property
    def left(self) -> int:
        return len(self.data) - self.at


def read_hello(read: Callable[[int], bytes]) -> bytes:
    """The raw bytes of a client's first flight up to the end of its ClientHello, read with
    ``read(n)`` (exactly n bytes, or an exception); NotTLS as soon as they cannot be one."""
    first = read(1)
    if first[0] & 0x80:  # an SSL 2.0-compatible hello: a 2-byte length with its top bit set
        rest = read(1)
        return first + rest + read(((first[0] & 0x7F) << 8) | rest[0])
    if first[0] != _HANDSHAKE:
        raise NotTLS(f"not a TLS handshake record (first byte 0x{first[0]:02x})")
    raw, body = b"", b""
    header = first + read(4)
    while True:
        length = struct.unpack("!H", header[3:5])[0]
        if header[0] != _HANDSHAKE or length == 0 or len(raw) + length > MAX_HELLO:
            raise NotTLS("not a ClientHello of a sane size")
        payload = read(length)
        raw += header + payload
        body += payload
        if len(body) >= 4 and len(body) >= 4 + int.from_bytes(body[1:4], "big"):
            return raw
        header = read(5)


def parse_client_hello(data: bytes) -> ClientHello:
    """The ClientHello at the start of ``data`` (whole records); NotTLS when it is not one."""
    if data[:1] and data[0] & 0x80:
        return _parse_sslv2(data)
    body = b""
    at = 0
    while at + 5 <= len(data):
        if data[at] != _HANDSHAKE:
            raise NotTLS("not a TLS handshake record")
        length = struct.unpack("!H", data[at + 3 : at + 5])[0]
        body += data[at + 5 : at + 5 + length]
        at += 5 + length
    if len(body) < 4 or body[0] != _CLIENT_HELLO:
        raise NotTLS("the first handshake message is not a ClientHello")
    message = _Reader(body[4 : 4 + int.from_bytes(body[1:4], "big")])
    legacy = message.number(2)
    message.take(32)  # random
    message.vector(1)  # session id
    suites = message.codes(2)
    message.vector(1)  # compression methods
    extensions = _extensions(message.vector(2)) if message.left else {}
    return _hello(legacy, suites, extensions)


def _extensions(reader: _Reader) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    while reader.left:
        kind = reader.number(2)
        out.setdefault(kind, reader.take(reader.number(2)))
    return out


def _hello(legacy: int, suites: tuple[int, ...], ext: dict[int, bytes]) -> ClientHello:
    versions: tuple[int, ...] = _Reader(ext[43]).codes(1) if 43 in ext else ()  # supported_versions
    groups = _Reader(ext[10]).codes(2) if 10 in ext else ()
    signatures = _Reader(ext[13]).codes(2) if 13 in ext else ()
    name = None
    if ext.get(0):
        names = _Reader(ext[0]).vector(2)
        while names.left:
            kind, value = names.number(1), names.take(names.number(2))
            if kind == 0:
                name = value.decode("ascii", "replace")
                break
    alpn: tuple[str, ...] = ()
    if ext.get(16):
        protocols = _Reader(ext[16]).vector(2)
        found = []
        while protocols.left:
            found.append(protocols.take(protocols.number(1)).decode("ascii", "replace"))
        alpn = tuple(found)
    return ClientHello(
        legacy,
        tuple(v for v in versions if not grease(v)),
        tuple(s for s in suites if not grease(s)),
        tuple(g for g in groups if not grease(g)),
        signatures,
        name,
        alpn,
        extensions=tuple(k for k in ext if not grease(k)),
    )


def _parse_sslv2(data: bytes) -> ClientHello:
    # SSL 2.0 CLIENT-HELLO (RFC 6101 appendix E.2): 3-byte cipher specs; TLS suites start with 0.
    length = ((data[0] & 0x7F) << 8) | data[1]
    message = _Reader(data[2 : 2 + length])
    if message.number(1) != _CLIENT_HELLO:
        raise NotTLS("an SSL 2.0 record that is not a CLIENT-HELLO")
    version = message.number(2)
    specs_length, session_length, challenge_length = message.number(2), message.number(2), message.number(2)
    specs = message.take(specs_length)
    message.take(session_length + challenge_length)
    suites = tuple(
        int.from_bytes(specs[i + 1 : i + 3], "big") for i in range(0, len(specs) - 2, 3) if specs[i] == 0
    )
    return ClientHello(version, (), suites, sslv2_format=True)
