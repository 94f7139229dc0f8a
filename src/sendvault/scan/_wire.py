"""TLS on the wire: a connection ready for a handshake (after STARTTLS), and a hand-built ClientHello.

OpenSSL 3 has dropped RC4, single and triple DES, IDEA, SEED and the export suites, so no
handshake of ours can show that a server still accepts them; yet such servers exist and are
exactly what a scan must report. Which suite a server picks is visible in its ServerHello, before
any of the missing cryptography is needed: :func:`server_choice` sends the ClientHello itself,
reads the answer and stops there. An alert, or a close before any answer, means refused (as an
OpenSSL handshake counts it); anything else is left unknown.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Sequence

__all__ = ["LEGACY_SUITES", "NoTLS", "connect", "recv_exact", "server_choice"]


class NoTLS(OSError):
    """The server answered the STARTTLS request with "no TLS here"."""


def recv_exact(sock: socket.socket, size: int) -> bytes:
    """Exactly ``size`` bytes from ``sock``; ConnectionError if it closes first."""
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return data


def _starttls_postgres(sock: socket.socket) -> None:
    sock.sendall(struct.pack("!II", 8, 80877103))  # SSLRequest
    if recv_exact(sock, 1) != b"S":
        raise NoTLS("PostgreSQL server does not offer TLS")


_MYSQL_CLIENT_SSL = 0x0800
_MYSQL_PROTOCOL_41 = 0x0200
_MYSQL_SECURE_CONNECTION = 0x8000


def _starttls_mysql(sock: socket.socket) -> None:
    header = recv_exact(sock, 4)
    payload = recv_exact(sock, int.from_bytes(header[:3], "little"))
    if not payload or payload[0] != 10:
        raise ConnectionError("not a MySQL protocol 10 greeting")
    end = payload.index(b"\0", 1)
    offset = end + 1 + 4 + 8 + 1
    capabilities = int.from_bytes(payload[offset : offset + 2], "little")
    if not capabilities & _MYSQL_CLIENT_SSL:
        raise NoTLS("MySQL server does not offer TLS")
    flags = _MYSQL_CLIENT_SSL | _MYSQL_PROTOCOL_41 | _MYSQL_SECURE_CONNECTION
    body = struct.pack("<IIB23s", flags, 16 * 1024 * 1024, 45, b"\0" * 23)
    sock.sendall(len(body).to_bytes(3, "little") + bytes([header[3] + 1]) + body)


def connect(host: str, port: int, starttls: str | None, timeout: float) -> socket.socket:
    """A TCP connection ready for a TLS handshake (after STARTTLS when asked)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        if starttls == "postgres":
            _starttls_postgres(sock)
        elif starttls == "mysql":
            _starttls_mysql(sock)
    except BaseException:
        sock.close()
        raise
    return sock


# -- the suites OpenSSL 3 cannot offer ----------------------------------------------------------


# By IANA code, each described as ``SSLContext.get_ciphers()`` describes the suites it knows.
LEGACY_SUITES: dict[int, dict[str, object]] = {
    code: {
        "id": 0x03000000 | code,
        "name": name,
        "kea": f"kx-{kea}",
        "auth": f"auth-{auth}",
        "symmetric": symmetric,
        "aead": False,
    }
    for code, name, kea, auth, symmetric in (
        (0x0003, "EXP-RC4-MD5", "rsa", "rsa", "rc4-40"),
        (0x0004, "RC4-MD5", "rsa", "rsa", "rc4"),
        (0x0005, "RC4-SHA", "rsa", "rsa", "rc4"),
        (0x0006, "EXP-RC2-CBC-MD5", "rsa", "rsa", "rc2-40"),
        (0x0007, "IDEA-CBC-SHA", "rsa", "rsa", "idea-cbc"),
        (0x0008, "EXP-DES-CBC-SHA", "rsa", "rsa", "des-40"),
        (0x0009, "DES-CBC-SHA", "rsa", "rsa", "des-cbc"),
        (0x000A, "DES-CBC3-SHA", "rsa", "rsa", "des-ede3-cbc"),
        (0x0012, "EDH-DSS-DES-CBC-SHA", "dhe", "dss", "des-cbc"),
        (0x0013, "DHE-DSS-DES-CBC3-SHA", "dhe", "dss", "des-ede3-cbc"),
        (0x0014, "EXP-EDH-RSA-DES-CBC-SHA", "dhe", "rsa", "des-40"),
        (0x0015, "EDH-RSA-DES-CBC-SHA", "dhe", "rsa", "des-cbc"),
        (0x0016, "DHE-RSA-DES-CBC3-SHA", "dhe", "rsa", "des-ede3-cbc"),
        (0x0018, "ADH-RC4-MD5", "dhe", "null", "rc4"),
        (0x001B, "ADH-DES-CBC3-SHA", "dhe", "null", "des-ede3-cbc"),
        (0x0096, "SEED-SHA", "rsa", "rsa", "seed-cbc"),
        (0x009A, "DHE-RSA-SEED-SHA", "dhe", "rsa", "seed-cbc"),
        (0xC007, "ECDHE-ECDSA-RC4-SHA", "ecdhe", "ecdsa", "rc4"),
        (0xC008, "ECDHE-ECDSA-DES-CBC3-SHA", "ecdhe", "ecdsa", "des-ede3-cbc"),
        (0xC011, "ECDHE-RSA-RC4-SHA", "ecdhe", "rsa", "rc4"),
        (0xC012, "ECDHE-RSA-DES-CBC3-SHA", "ecdhe", "rsa", "des-ede3-cbc"),
        (0xC016, "AECDH-RC4-SHA", "ecdhe", "null", "rc4"),
        (0xC017, "AECDH-DES-CBC3-SHA", "ecdhe", "null", "des-ede3-cbc"),
    )
}

_HANDSHAKE, _ALERT = 22, 21
_CLIENT_HELLO, _SERVER_HELLO = 1, 2
# x25519, secp256r1, secp384r1, secp521r1: without them a server cannot pick an ECDHE suite.
_GROUPS = (0x001D, 0x0017, 0x0018, 0x0019)
# RSA PKCS#1 and ECDSA with SHA-256/384/512 and SHA-1, and RSA-PSS: what TLS 1.2 servers sign with.
_SIGNATURES = (0x0401, 0x0501, 0x0601, 0x0403, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0201, 0x0203)


def _vector(data: bytes, width: int) -> bytes:
    return len(data).to_bytes(width, "big") + data


def _codes(values: Sequence[int]) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in values)


def _extension(kind: int, data: bytes) -> bytes:
    return kind.to_bytes(2, "big") + _vector(data, 2)


def client_hello(version: int, suites: Sequence[int], server_name: bytes | None) -> bytes:
    """One TLS record holding a ClientHello for ``version`` (0x0301..0x0303) offering ``suites``."""
    extensions = _extension(0x000A, _vector(_codes(_GROUPS), 2)) + _extension(0x000B, b"\x01\x00")
    if version >= 0x0303:
        extensions += _extension(0x000D, _vector(_codes(_SIGNATURES), 2))
    if server_name:
        extensions += _extension(0x0000, _vector(b"\x00" + _vector(server_name, 2), 2))
    body = (
        version.to_bytes(2, "big")
        + os.urandom(32)
        + b"\x00"  # no session id
        + _vector(_codes(suites), 2)
        + b"\x01\x00"  # compression: none
        + _vector(extensions, 2)
    )
    return bytes([_HANDSHAKE]) + b"\x03\x01" + _vector(bytes([_CLIENT_HELLO]) + _vector(body, 3), 2)


def server_choice(
    sock: socket.socket, version: int, suites: Sequence[int], server_name: bytes | None
) -> int | None:
    """The suite the server picks from ``suites`` at ``version``; None when it refuses them all.

    An alert, or a close before any answer, is a refusal, as it is for an OpenSSL handshake
    (``SSLEOFError``). Raises ConnectionError when the connection breaks otherwise, and
    ValueError when the answer is not a ServerHello: neither says whether the suites were refused.
    """
    sock.sendall(client_hello(version, suites, server_name))
    data = b""
    while True:
        first = sock.recv(1)
        if not first:
            if data:
                raise ConnectionError("connection closed inside the ServerHello")
            return None
        header = first + recv_exact(sock, 4)
        payload = recv_exact(sock, int.from_bytes(header[3:5], "big"))
        if header[0] == _ALERT:
            return None
        if header[0] != _HANDSHAKE:
            raise ValueError(f"TLS record type {header[0]} before the ServerHello")
        data += payload
        if data[:1] != bytes([_SERVER_HELLO]):
            raise ValueError("the first handshake message is not a ServerHello")
        # type (1), length (3), version (2), random (32), session id (1 + n), then the suite (2)
        if len(data) < 39 or len(data) < 39 + data[38] + 2:
            continue  # the ServerHello goes on in the next record
        if int.from_bytes(data[4:6], "big") != version:
            return None  # the server chose another version: the suites are not accepted at this one
        return int.from_bytes(data[39 + data[38] : 41 + data[38]], "big")
