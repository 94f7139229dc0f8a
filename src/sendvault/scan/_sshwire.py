"""SSH on the wire, as far as a scan needs it: identification, KEXINIT, and a host key.

No login and no encryption: a scan reads the server's identification line and its KEXINIT
(both in clear, RFC 4253 §4.2 and §7.1), and, to learn a host key and its size, starts a key
exchange pinned to one host-key algorithm and stops at the server's reply, which carries the
key (``K_S``). The exchange is never finished, so nothing of it needs to be computed: the
client's ephemeral value only has to be one the server accepts (a random X25519 value; a
random element of a Diffie-Hellman group; a real point on a NIST curve, which servers check).

Every read is bounded in size and in time (a per-connection deadline, not only a per-read
timeout), so a server that trickles bytes or sends garbage cannot hold a scan.
"""

from __future__ import annotations

import os
import struct
import time

from ._sshdial import Dial

__all__ = [
    "EC_BITS",
    "KEX_LISTS",
    "Closed",
    "Connection",
    "HostKey",
    "Kexinit",
    "OldProtocol",
    "ProtocolError",
    "gex_group_bits",
    "handshake",
    "host_key",
    "read_kexinit",
]

_MAX_LINE = 255  # RFC 4253 §4.2, with CR LF
_MAX_PRE_LINES = 50  # lines a server may send before its identification
_MAX_PACKET = 35000  # RFC 4253 §6.1: what every implementation must take
_MSG_DISCONNECT, _MSG_IGNORE, _MSG_UNIMPLEMENTED, _MSG_DEBUG = 1, 2, 3, 4
_MSG_KEXINIT = 20
# Key exchange messages share numbers 30-49 (RFC 4253 §12): each method gives them its meaning.
_KEX_INIT, _KEX_REPLY = 30, 31  # KEXDH and KEX_ECDH (RFC 4253 §8, RFC 5656 §4)
_GEX_GROUP, _GEX_INIT, _GEX_REPLY, _GEX_REQUEST = 31, 32, 33, 34  # RFC 4419
_KEXRSA_PUBKEY = 30  # RFC 4432

KEX_LISTS = (
    "kex",
    "host_key",
    "enc_c2s",
    "enc_s2c",
    "mac_c2s",
    "mac_s2c",
    "comp_c2s",
    "comp_s2c",
    "lang_c2s",
    "lang_s2c",
)


class ProtocolError(Exception):
    """The peer said something that is not SSH as RFC 4253 writes it (or stopped saying it)."""


class Closed(ProtocolError):
    """The server closed the connection or sent DISCONNECT: it refused what we asked."""


class OldProtocol(ProtocolError):
    """The server speaks SSH protocol 1 only."""

    def __init__(self, identification: str) -> None:
        super().__init__(f"SSH protocol 1 only ({identification})")
        self.identification = identification


# Plain classes, neither dataclasses nor named tuples: a `scan ssh` process is mostly start-up,
# and it imports neither dataclasses nor typing.
class Kexinit:
    """A server's identification and the name-lists of its KEXINIT."""

    __slots__ = ("identification", "lists", "pre_lines")

    def __init__(
        self, identification: str, pre_lines: tuple[str, ...], lists: dict[str, tuple[str, ...]]
    ) -> None:
        self.identification = identification
        self.pre_lines = pre_lines
        self.lists = lists


class HostKey:
    """A host key as the server sent it."""

    __slots__ = ("algorithm", "bits", "blob", "key_type")

    def __init__(self, algorithm: str, key_type: str, bits: int, blob: bytes) -> None:
        self.algorithm = algorithm  # the host-key algorithm of the handshake that fetched it
        self.key_type = key_type  # the blob's own type (ssh-rsa for rsa-sha2-256, a certificate's...)
        self.bits = bits
        self.blob = blob  # the public key (a certificate's certified key), as fingerprinted


class Connection:
    """A TCP connection (from ``_sshdial``, the client's identification sent) with a deadline for
    everything read from it."""

    def __init__(self, dialed: Dial) -> None:
        sock = dialed.result()
        if sock is None:
            raise Closed("the server closed the connection")
        self.sock = sock
        self.deadline = dialed.deadline
        self._buffer = b""

    def close(self) -> None:
        """Close the socket."""
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _more(self) -> bytes:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the server took too long")
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""  # a close with our bytes unread: as much a close as any other
        if not chunk:
            raise Closed("the server closed the connection")
        return chunk

    def read(self, size: int) -> bytes:
        """Exactly ``size`` bytes."""
        while len(self._buffer) < size:
            self._buffer += self._more()
        out, self._buffer = self._buffer[:size], self._buffer[size:]
        return out

    def read_line(self) -> bytes:
        """One line, without its LF (and CR); ProtocolError past 255 bytes."""
        while b"\n" not in self._buffer:
            if len(self._buffer) > _MAX_LINE:
                raise ProtocolError("an identification line longer than 255 bytes")
            self._buffer += self._more()
        line, _, self._buffer = self._buffer.partition(b"\n")
        if len(line) + 1 > _MAX_LINE:
            raise ProtocolError("an identification line longer than 255 bytes")
        return line.removesuffix(b"\r")

    def send(self, data: bytes) -> None:
        """Send ``data`` whole."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            raise Closed("the server closed the connection") from None

    # -- binary packets (RFC 4253 §6), before any NEWKEYS: no encryption, no MAC

    def read_packet(self) -> bytes:
        """The payload of the next packet that is not IGNORE or DEBUG."""
        for _ in range(64):
            length = struct.unpack("!I", self.read(4))[0]
            if not 5 <= length <= _MAX_PACKET:
                raise ProtocolError(f"a packet length of {length} bytes")
            packet = self.read(length)
            padding = packet[0]
            if padding > length - 2:
                raise ProtocolError("a packet whose padding is longer than the packet")
            payload = packet[1 : length - padding]
            if not payload:
                raise ProtocolError("an empty packet")
            if payload[0] == _MSG_DISCONNECT:
                reason = _Reader(payload[1:])
                code = reason.uint32()
                raise Closed(f"the server disconnected (code {code}: {_printable(reason.string())})")
            if payload[0] not in (_MSG_IGNORE, _MSG_DEBUG):
                return payload
        raise ProtocolError("64 IGNORE/DEBUG packets in a row")

    def send_packet(self, payload: bytes) -> None:
        """Send ``payload`` in one packet (block size 8, at least 4 bytes of padding)."""
        padding = 8 - (5 + len(payload)) % 8
        if padding < 4:
            padding += 8
        self.send(struct.pack("!IB", 1 + len(payload) + padding, padding) + payload + os.urandom(padding))


def _printable(data: bytes, limit: int = 120) -> str:
    text = data[:limit].decode("ascii", "replace")
    return "".join(c if c.isprintable() else "?" for c in text)


class _Reader:
    """RFC 4251 §5 types, bounds-checked: ProtocolError when the data runs out."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def take(self, size: int) -> bytes:
        if size < 0 or self.at + size > len(self.data):
            raise ProtocolError("a message shorter than its fields")
        out = self.data[self.at : self.at + size]
        self.at += size
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def uint32(self) -> int:
        value: int = struct.unpack("!I", self.take(4))[0]
        return value

    def string(self) -> bytes:
        return self.take(self.uint32())

    def mpint(self) -> int:
        return int.from_bytes(self.string(), "big", signed=True)

    def name_list(self) -> tuple[str, ...]:
        raw = self.string()
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise ProtocolError("a name-list that is not ASCII") from None
        if not text:
            return ()
        names = tuple(text.split(","))
        if any(not n or not n.isprintable() or " " in n for n in names):
            raise ProtocolError("a malformed name-list")
        return names


def _string(data: bytes) -> bytes:
    return struct.pack("!I", len(data)) + data


def _names(names: tuple[str, ...] | list[str]) -> bytes:
    return _string(",".join(names).encode())


def _mpint(value: int) -> bytes:
    if value == 0:
        return _string(b"")
    return _string(value.to_bytes((value.bit_length() + 8) // 8, "big"))


# -- identification and KEXINIT ------------------------------------------------------------------


def _identify(conn: Connection) -> tuple[str, tuple[str, ...]]:
    # Ours went out as the connection opened (_sshdial).
    pre: list[str] = []
    for _ in range(_MAX_PRE_LINES + 1):
        line = conn.read_line()
        if line.startswith(b"SSH-"):
            if not line.isascii() or not line.decode().isprintable():
                raise ProtocolError("an identification that is not printable ASCII")
            return line.decode(), tuple(pre)
        pre.append(_printable(line))
    raise ProtocolError(f"no SSH identification within {_MAX_PRE_LINES} lines")


def _parse_kexinit(payload: bytes) -> dict[str, tuple[str, ...]]:
    if payload[0] != _MSG_KEXINIT:
        raise ProtocolError(f"message {payload[0]} where KEXINIT was due")
    reader = _Reader(payload[1:])
    reader.take(16)  # cookie
    lists = {name: reader.name_list() for name in KEX_LISTS}
    reader.byte()  # first_kex_packet_follows
    reader.uint32()  # reserved
    return lists


def read_kexinit(conn: Connection) -> Kexinit:
    """Exchange identifications and read the server's KEXINIT (SSH 2 only)."""
    identification, pre = _identify(conn)
    version = identification.split("-", 2)[1] if identification.count("-") >= 2 else ""
    if version.startswith("1.") and version != "1.99":
        raise OldProtocol(_printable(identification.encode()))
    if version not in ("2.0", "1.99"):
        raise ProtocolError(f"protocol version {version or '?'}: {_printable(identification.encode())}")
    return Kexinit(identification, pre, _parse_kexinit(conn.read_packet()))


# -- a key exchange started for its host key ----------------------------------------------------

_ECDH_CURVES = {"ecdh-sha2-nistp256": "SECP256R1", "ecdh-sha2-nistp384": "SECP384R1",
                "ecdh-sha2-nistp521": "SECP521R1"}  # fmt: skip
_X25519 = ("curve25519-sha256", "curve25519-sha256@libssh.org")
# Fixed groups (RFC 3526, 8268): their size is all a random element needs.
_DH_BITS = {"diffie-hellman-group1-sha1": 1024, "diffie-hellman-group14-sha1": 2048,
            "diffie-hellman-group14-sha256": 2048, "diffie-hellman-group15-sha512": 3072,
            "diffie-hellman-group16-sha512": 4096, "diffie-hellman-group17-sha512": 6144,
            "diffie-hellman-group18-sha512": 8192}  # fmt: skip
_GEX = ("diffie-hellman-group-exchange-sha256", "diffie-hellman-group-exchange-sha1")
_RSA_KEX = ("rsa2048-sha256", "rsa1024-sha1")
# The order in which a key exchange is chosen for a host-key handshake: cheapest first.
KEX_WE_SPEAK = (*_X25519, *_ECDH_CURVES, *_DH_BITS, *_GEX, *_RSA_KEX)


def _random_element(bits: int) -> int:
    # Below every safe prime of that size used in SSH (their top 64 bits are all ones), with
    # many bits set, as servers check (OpenSSH's dh_pub_is_valid).
    return int.from_bytes(os.urandom((bits - 8) // 8), "big") | (1 << (bits - 9)) | 1


def _ecdh_point(kex: str) -> bytes:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415 - only for NIST curves
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415

    key = ec.generate_private_key(getattr(ec, _ECDH_CURVES[kex])())
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def host_key(host: str, port: int, algorithm: str, timeout: float) -> HostKey:
    """The host key the server uses for ``algorithm``, on a connection of its own."""
    with Connection(Dial(host, port, timeout)) as conn:
        return handshake(conn, read_kexinit(conn).lists, algorithm)


def _send_kexinit(conn: Connection, server: dict[str, tuple[str, ...]], kex: str, algorithm: str) -> None:
    conn.send_packet(
        bytes([_MSG_KEXINIT])
        + os.urandom(16)
        + _names([kex])
        + _names([algorithm])
        # Ciphers, MACs and compression: the server's own first choices, so that negotiation
        # succeeds; they are never used.
        + b"".join(_names(server[n][:1] or ("none",)) for n in KEX_LISTS[2:8])
        + _names([])
        + _names([])
        + b"\x00"  # first_kex_packet_follows
        + b"\x00\x00\x00\x00"
    )


def handshake(conn: Connection, server: dict[str, tuple[str, ...]], algorithm: str) -> HostKey:
    """On a connection whose server KEXINIT (``server``) was read, the host key for ``algorithm``
    from a key exchange stopped at the server's reply."""
    kex = next((k for k in KEX_WE_SPEAK if k in server["kex"]), None)
    if kex is None:
        raise ProtocolError("no key exchange this scanner can start (" + ",".join(server["kex"][:4]) + ")")
    _send_kexinit(conn, server, kex, algorithm)
    blob = _exchange(conn, kex)
    kind, bits, key = _key_size(blob)
    return HostKey(algorithm, kind, bits, key)


# What a group-exchange probe asks for (RFC 4419 min, n, max): any group under 2048 bits. OpenSSH
# 7.x+ refuses such a request (its DH_GRP_MIN is 2048); servers that hand one out are weak.
GEX_PROBE = (512, 1024, 2047)


def gex_group_bits(conn: Connection, server: dict[str, tuple[str, ...]], kex: str) -> int | None:
    """On a connection whose server KEXINIT was read: the size of the group the server hands out
    for the group exchange ``kex`` when asked for one under 2048 bits; None when it refuses
    (closes or disconnects). Nothing is computed: the exchange stops at the group."""
    _send_kexinit(conn, server, kex, server["host_key"][0])
    conn.send_packet(bytes([_GEX_REQUEST]) + struct.pack("!III", *GEX_PROBE))
    try:
        group = _expect(conn, _GEX_GROUP)
    except Closed:
        return None
    return group.mpint().bit_length()


def _exchange(conn: Connection, kex: str) -> bytes:
    """Send the client's first key-exchange message and return ``K_S`` from the reply."""
    if kex in _RSA_KEX:
        # RFC 4432: the server speaks first, with its host key and a transient RSA key.
        return _expect(conn, _KEXRSA_PUBKEY).string()
    if kex in _X25519:
        # Any 32 bytes are an X25519 public value; the exchange is never finished.
        conn.send_packet(bytes([_KEX_INIT]) + _string(os.urandom(32)))
        return _expect(conn, _KEX_REPLY).string()
    if kex in _ECDH_CURVES:
        conn.send_packet(bytes([_KEX_INIT]) + _string(_ecdh_point(kex)))
        return _expect(conn, _KEX_REPLY).string()
    if kex in _DH_BITS:
        conn.send_packet(bytes([_KEX_INIT]) + _mpint(_random_element(_DH_BITS[kex])))
        return _expect(conn, _KEX_REPLY).string()
    # Group exchange (RFC 4419): ask for a group, answer with an element of it.
    conn.send_packet(bytes([_GEX_REQUEST]) + struct.pack("!III", 2048, 3072, 8192))
    group = _expect(conn, _GEX_GROUP)
    prime = group.mpint()
    if not 1024 <= prime.bit_length() <= 16384:
        raise ProtocolError(f"a group-exchange prime of {prime.bit_length()} bits")
    conn.send_packet(bytes([_GEX_INIT]) + _mpint(_random_element(prime.bit_length())))
    return _expect(conn, _GEX_REPLY).string()


def _expect(conn: Connection, message: int) -> _Reader:
    payload = conn.read_packet()
    if payload[0] == _MSG_KEXINIT:
        raise ProtocolError("a second KEXINIT where the key exchange reply was due")
    if payload[0] != message:
        raise ProtocolError(f"message {payload[0]} where {message} was due")
    return _Reader(payload[1:])


# ECDSA curves by the name or the ASCII OID a key blob gives them (RFC 5656 §6.1, §10).
EC_BITS = {
    b"nistp256": 256, b"1.2.840.10045.3.1.7": 256, b"nistp384": 384, b"1.3.132.0.34": 384,
    b"nistp521": 521, b"1.3.132.0.35": 521, b"nistp192": 192, b"1.2.840.10045.3.1.1": 192,
    b"nistp224": 224, b"1.3.132.0.33": 224, b"nistk163": 163, b"1.3.132.0.1": 163,
    b"nistb163": 163, b"1.3.132.0.15": 163, b"nistk233": 233, b"1.3.132.0.26": 233,
    b"nistb233": 233, b"1.3.132.0.27": 233, b"nistk283": 283, b"1.3.132.0.16": 283,
    b"nistk409": 409, b"1.3.132.0.36": 409, b"nistb409": 409, b"1.3.132.0.37": 409,
    b"nistt571": 571, b"1.3.132.0.38": 571,
}  # fmt: skip
_CERT = b"-cert-v01@openssh.com"


def _key_size(blob: bytes) -> tuple[str, int, bytes]:
    """(key type, bits, public key) of a public key blob (RFC 4253 §6.6, RFC 5656, RFC 8709,
    OpenSSH certificates). The type is printable text whatever the server sent; the bits are 0
    for a type or curve this scanner cannot size. A certificate's public key is the certified
    key, whose fingerprint ``ssh-keygen -l`` prints for it."""
    reader = _Reader(blob)
    raw = reader.string()
    certificate = raw.endswith(_CERT)
    if certificate:
        reader.string()  # nonce; the certified key's fields follow, as in the plain key
    base = raw.removesuffix(_CERT)
    start = reader.at
    bits = _key_fields(reader, base)
    key = _string(base) + blob[start : reader.at] if certificate and bits is not None else blob
    return _printable(raw), bits or 0, key


def _key_fields(reader: _Reader, base: bytes) -> int | None:
    """Read the fields of a ``base`` key: its bits, 0 for an unknown curve or a key no client
    takes (a modulus or prime that is not positive, an EdDSA key of the wrong length), None for
    an unknown type."""
    if base == b"ssh-rsa":
        e, n = reader.mpint(), reader.mpint()
        return n.bit_length() if e > 0 and n > 0 else 0
    if base == b"ssh-dss":
        p = reader.mpint()
        for _ in range(3):  # q, g, y
            reader.mpint()
        return p.bit_length() if p > 0 else 0
    if base.startswith((b"ecdsa-sha2-", b"sk-ecdsa-sha2-")):
        curve = reader.string()
        bits = EC_BITS.get(curve, 0)
        reader.string()  # Q
        named = base.removeprefix(b"sk-").removeprefix(b"ecdsa-sha2-").partition(b"@")[0]
        if curve != named and bits >= 256:  # a key no client takes; a small one stays small
            bits = 0
    elif base in (b"ssh-ed25519", b"sk-ssh-ed25519@openssh.com", b"ssh-ed448"):
        size, bits = (57, 456) if base == b"ssh-ed448" else (32, 256)
        bits = bits if len(reader.string()) == size else 0  # the public key
    else:
        return None
    if base.startswith(b"sk-"):
        reader.string()  # application
    return bits
