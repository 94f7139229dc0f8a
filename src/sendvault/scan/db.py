"""`scan db`: does a MySQL/MariaDB or PostgreSQL server offer TLS, require it, and accept your files?

Maropost's notice (000) asks for database links with TLS, a CA, a client certificate and a key.
This check answers, without credentials: does the server offer TLS (the protocol's own SSL
request, spoken directly), does it refuse a plain login (a login attempt with a made-up user:
the server's answer shows whether it got past the transport check), which versions and ciphers
it accepts (the ``scan tls`` probes over STARTTLS), and whether the given CA, certificate and key
complete a verified handshake.
"""

from __future__ import annotations

import socket
import ssl
import struct

from cryptography.hazmat.primitives import hashes

from ._wire import NoTLS, connect, recv_exact
from .findings import CheckResult
from .tls import load_ca, scan_tls

__all__ = ["scan_db"]

_PROBE_USER = b"sendvault_scan"
# ER_SECURE_TRANSPORT_REQUIRED: 3159 in MySQL, 4151 in MariaDB.
_MYSQL_TLS_REQUIRED = {3159, 4151}
_MYSQL_ACCESS_DENIED = 1045


def _native_password(password: bytes, scramble: bytes) -> bytes:
    """mysql_native_password: SHA1(pw) XOR SHA1(scramble + SHA1(SHA1(pw)))."""
    if not password:
        return b""
    one = _sha1(password)
    two = _sha1(scramble + _sha1(one))
    return bytes(a ^ b for a, b in zip(one, two, strict=True))


def _sha1(data: bytes) -> bytes:
    digest = hashes.Hash(hashes.SHA1())  # noqa: S303 - the MySQL protocol's own scheme, not our choice
    digest.update(data)
    return digest.finalize()


def _scramble(greeting: bytes) -> bytes:
    end = greeting.index(b"\0", 1)
    part1 = greeting[end + 5 : end + 13]
    rest = greeting[end + 13 + 1 + 2 + 1 + 2 + 2 :]
    length = max(13, rest[0] - 8) if rest else 13
    return part1 + rest[11 : 11 + length].rstrip(b"\0")


def _mysql_login(
    host: str, port: int, timeout: float, user: bytes, password: bytes, *, tls: bool
) -> tuple[int, str]:
    """One login attempt: (0, "") on success, else (error code, message). Never sends a query."""
    with socket.create_connection((host, port), timeout=timeout) as raw:
        header = recv_exact(raw, 4)
        greeting = recv_exact(raw, int.from_bytes(header[:3], "little"))
        seq = header[3] + 1
        flags = 0x0200 | 0x8000 | 0x00080000  # PROTOCOL_41, SECURE_CONNECTION, PLUGIN_AUTH
        sock: socket.socket | ssl.SSLSocket = raw
        if tls:
            flags |= 0x0800  # CLIENT_SSL: the SSL request, then the same response inside TLS
            request = struct.pack("<IIB23s", flags, 16 * 1024 * 1024, 45, b"\0" * 23)
            raw.sendall(len(request).to_bytes(3, "little") + bytes([seq]) + request)
            seq += 1
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # only the transport matters for this probe
            sock = ctx.wrap_socket(raw, server_hostname=host)
        try:
            auth = _native_password(password, _scramble(greeting))
            body = (
                struct.pack("<IIB23s", flags, 16 * 1024 * 1024, 45, b"\0" * 23)
                + user + b"\0" + bytes([len(auth)]) + auth + b"mysql_native_password\0"
            )  # fmt: skip
            sock.sendall(len(body).to_bytes(3, "little") + bytes([seq]) + body)
            reply_header = recv_exact(sock, 4)
            reply = recv_exact(sock, int.from_bytes(reply_header[:3], "little"))
        finally:
            if sock is not raw:
                sock.close()
    if reply[:1] == b"\x00":
        return 0, ""
    if reply[:1] != b"\xff":
        return -1, "authentication continued"
    message = reply[9:] if reply[3:4] == b"#" else reply[3:]
    return int.from_bytes(reply[1:3], "little"), message.decode("utf-8", "replace")


def _mysql_plain_refused(
    host: str, port: int, timeout: float, user: str | None = None, password: str | None = None
) -> tuple[bool | None, str]:
    name, secret = (user or _PROBE_USER.decode()).encode(), (password or "").encode()
    code, message = _mysql_login(host, port, timeout, name, secret, tls=False)
    if code in (0, -1):
        return (
            False,
            "a login without TLS succeeded" if code == 0 else "plain login went on to authentication",
        )
    if code in _MYSQL_TLS_REQUIRED or "secure transport" in message.lower():
        return True, f"error {code}: insecure transport refused"
    if code == _MYSQL_ACCESS_DENIED and user:
        # MariaDB answers a refused insecure transport with 1045 too: the same account over
        # TLS tells whether the transport or the credentials were refused.
        if _mysql_login(host, port, timeout, name, secret, tls=True)[0] == 0:
            return True, "the account logs in over TLS but not without it"
        return None, "the account was refused with and without TLS (check --user/--password)"
    if code == _MYSQL_ACCESS_DENIED:
        return None, "access denied to the probe user; give --user and --password to tell"
    return None, f"error {code}"


def _postgres_plain_refused(host: str, port: int, timeout: float) -> tuple[bool | None, str]:
    params = b"user\0" + _PROBE_USER + b"\0database\0postgres\0\0"
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
        kind = recv_exact(sock, 1)
        length = struct.unpack("!I", recv_exact(sock, 4))[0]
        payload = recv_exact(sock, min(length - 4, 65536))
    if kind != b"E":
        return False, "plain login went on to authentication"
    fields = {chunk[:1]: chunk[1:].decode("utf-8", "replace") for chunk in payload.split(b"\0") if chunk}
    message = fields.get(b"M", "").lower()
    refused = "ssl off" in message or "no encryption" in message
    return refused, f"SQLSTATE {fields.get(b'C', '?')}"


def scan_db(
    kind: str,
    host: str,
    port: int,
    *,
    ca_file: str | None = None,
    cert_file: str | None = None,
    key_file: str | None = None,
    user: str | None = None,
    password: str | None = None,
    timeout: float = 5.0,
) -> CheckResult:
    """Scan one database server; ``kind`` is ``mysql`` or ``postgres``.

    ``user``/``password`` (MySQL/MariaDB) make the plain-login probe a real login attempt, which
    is the only way to tell "TLS required" from "unknown user" on MariaDB. A ``ca_file`` that
    cannot be loaded leaves the given files untried (``db.unknown``); the rest of the scan goes on.
    """
    result = CheckResult("db", f"{kind} {host}:{port}")
    if not _loads(ca_file, result):
        ca_file = cert_file = key_file = None
    try:
        connect(host, port, kind, timeout).close()
        offered = True
    except NoTLS:
        offered = False
        result.fail("db.tls-unavailable", "the server does not offer TLS")
    except OSError as exc:
        result.cannot(f"connection: {type(exc).__name__}")
        result.fail("db.unknown", f"could not connect ({type(exc).__name__})")
        return result
    try:
        if kind == "mysql":
            refused, why = _mysql_plain_refused(host, port, timeout, user, password)
        else:
            refused, why = _postgres_plain_refused(host, port, timeout)
    except (OSError, struct.error, ValueError) as exc:
        result.cannot(f"plain login: {type(exc).__name__}")
    else:
        result.facts["plain_login"] = why
        if refused is None:
            result.cannot(f"plain login: {why}")
        elif refused:
            result.ok()
        else:
            result.fail("db.tls-not-required", f"a login without TLS is accepted ({why})")
    if not offered:
        return result
    tls = scan_tls(host, port, starttls=kind, ca_file=ca_file, timeout=timeout)
    result.findings.extend(
        f for f in tls.findings if f.rule not in ("tls.cert-hostname", "tls.cert-untrusted")
    )
    result.passed += tls.passed
    result.unknown.extend(tls.unknown)
    result.facts["tls"] = tls.facts
    if ca_file or cert_file:
        _files((kind, host, port, timeout), ca_file, cert_file, key_file, result)
    return result


def _loads(ca_file: str | None, result: CheckResult) -> bool:
    """Whether ``ca_file`` (if any) loads; when not, the files are this target's unknown."""
    if ca_file is None:
        return True
    try:
        load_ca(ca_file)
    except ValueError as exc:
        result.cannot(f"files: {exc}")
        result.fail("db.unknown", f"the given CA, certificate and key were not tried: {exc}")
        return False
    return True


def _files(
    where: tuple[str, str, int, float],
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    result: CheckResult,
) -> None:
    kind, host, port, timeout = where
    ctx = load_ca(ca_file)  # scan_db has made sure it loads
    ctx.check_hostname = False  # database links often use IPs; the chain is what is checked here
    try:
        if cert_file:
            ctx.load_cert_chain(cert_file, key_file)
        with connect(host, port, kind, timeout) as raw, ctx.wrap_socket(raw, server_hostname=host):
            pass
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "verify_message", None) or getattr(exc, "reason", None) or type(exc).__name__
        result.fail("db.tls-files-rejected", f"TLS with the given CA/certificate/key failed ({reason})")
    else:
        result.ok()
