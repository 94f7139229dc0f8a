"""`scan tls`: protocol versions, key exchange and ciphers, and the certificate of an endpoint.

Every TLS <= 1.2 cipher suite the local OpenSSL knows is offered on its own and, when accepted,
classified by key exchange: any RSA key exchange is reported, even where a scanner that looks
only for "some forward-secret suite" would say forward secrecy is fine. Legacy protocols are
judged only after checking, on a loopback pair, that this machine's OpenSSL can still offer them
(OpenSSL 3 needs ``@SECLEVEL=0``); when it cannot, the verdict is ``unknown``, never ``pass``.
Probes run concurrently. ``--starttls`` speaks the MySQL and PostgreSQL SSL requests first.
"""

from __future__ import annotations

import datetime as dt
import functools
import ipaddress
import socket
import ssl
import struct
import tempfile
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from .findings import CheckResult

__all__ = ["VERSIONS", "local_support", "scan_tls"]

VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1.0": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_LEGACY = ("TLSv1.0", "TLSv1.1")
_EXPIRING_DAYS = 30


class NoTLS(OSError):
    """The server answered the STARTTLS request with "no TLS here"."""


def _pin(ctx: ssl.SSLContext, version: ssl.TLSVersion) -> ssl.SSLContext:
    # Python deprecates pinning the legacy versions; probing them is the point here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    return ctx


def _probe_context(version: ssl.TLSVersion, ciphers: str = "ALL:@SECLEVEL=0") -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    _pin(ctx, version)
    if version is not ssl.TLSVersion.TLSv1_3:
        ctx.set_ciphers(ciphers)
    return ctx


# -- transport --------------------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    name: str
    starttls: str | None = None
    timeout: float = 5.0

    def handshake(self, ctx: ssl.SSLContext) -> tuple[str, str, bytes]:
        """(protocol, cipher, peer certificate DER) of a completed handshake; raises when refused."""
        with (
            connect(self.host, self.port, self.starttls, self.timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=self.name) as tls,
        ):
            cipher = tls.cipher()
            return str(tls.version()), cipher[0] if cipher else "", tls.getpeercert(binary_form=True) or b""


# -- what this machine can offer ----------------------------------------------------------------


@functools.cache
def local_support() -> dict[str, bool]:
    """Which versions this machine's OpenSSL can offer; TLS 1.0/1.1 are proven on loopback."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(hours=1)).sign(key, hashes.SHA256())
    )  # fmt: skip
    support: dict[str, bool] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cert_file, key_file = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        # Only the legacy versions need the proof: a refused TLS 1.2 or 1.3 yields no finding, so
        # a local stack unable to offer them cannot turn into a false pass.
        with ThreadPoolExecutor(max_workers=len(_LEGACY)) as pool:
            proofs = dict(
                zip(
                    _LEGACY,
                    pool.map(lambda v: _loopback(VERSIONS[v], cert_file, key_file), _LEGACY),
                    strict=True,
                )
            )
        for label in VERSIONS:
            support[label] = proofs.get(label, True)
    return support


def _loopback(version: ssl.TLSVersion, cert_file: Path, key_file: Path) -> bool:
    try:
        server_ctx = _pin(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), version)
        if version is not ssl.TLSVersion.TLSv1_3:
            server_ctx.set_ciphers("ALL:@SECLEVEL=0")
        server_ctx.load_cert_chain(cert_file, key_file)
        client_ctx = _probe_context(version)
    except (ssl.SSLError, ValueError):
        return False
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def accept() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError):
                pass
            finally:
                conn.close()

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            _Target("127.0.0.1", port, "localhost").handshake(client_ctx)
        except (ssl.SSLError, OSError):
            return False
        finally:
            thread.join(timeout=5)
    return True


# -- the scan -----------------------------------------------------------------------------------


def _candidate_ciphers(version: ssl.TLSVersion) -> list[dict[str, object]]:
    ctx = _probe_context(version)
    return [dict(c) for c in ctx.get_ciphers() if c.get("protocol") != "TLSv1.3"]


def _weakness(cipher: dict[str, object]) -> str | None:
    name = str(cipher["name"])
    if not cipher.get("aead"):
        return "not AEAD (CBC or stream cipher)"
    if "NULL" in name or "RC4" in name or "DES" in name:
        return "broken cipher"
    return None


def scan_tls(
    host: str,
    port: int = 443,
    *,
    sni: str | None = None,
    starttls: str | None = None,
    ca_file: str | None = None,
    timeout: float = 5.0,
    workers: int = 16,
    now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
) -> CheckResult:
    """Scan one endpoint; every judgement lands in the result as a finding, a pass or unknown."""
    target = _Target(host, port, sni or host, starttls, timeout)
    result = CheckResult("tls", f"{host}:{port}" + (f" (starttls {starttls})" if starttls else ""))
    support = local_support()
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        accepted = _protocols(target, support, result, pool)
        if not accepted:
            return result
        _ciphers(target, accepted, result, pool)
        _certificate(target, ca_file, now(), result)
    finally:
        pool.shutdown(wait=True)
    return result


def _protocols(
    target: _Target, support: dict[str, bool], result: CheckResult, pool: ThreadPoolExecutor
) -> list[str]:
    def probe(label: str) -> tuple[str, bool | None, str]:
        if not support[label]:
            return label, None, "this machine's OpenSSL cannot offer it"
        try:
            target.handshake(_probe_context(VERSIONS[label]))
        except NoTLS as exc:
            return label, None, str(exc)
        except ssl.SSLError:
            return label, False, ""
        except OSError as exc:
            return label, None, f"connection failed ({type(exc).__name__})"
        return label, True, ""

    accepted = []
    for label, ok, why in pool.map(probe, list(VERSIONS)):
        result.facts[label] = {True: "accepted", False: "refused", None: "unknown"}[ok]
        if ok is None:
            result.cannot(f"{label}: {why}")
            if label in _LEGACY:
                result.fail("tls.unknown", f"{label} could not be checked: {why}")
        elif ok:
            accepted.append(label)
            if label in _LEGACY:
                result.fail("tls.legacy-protocol", f"{label} accepted")
            else:
                result.ok()
        else:
            result.ok()
    return accepted


def _ciphers(target: _Target, accepted: list[str], result: CheckResult, pool: ThreadPoolExecutor) -> None:
    def enumerate_version(label: str) -> list[tuple[str, dict[str, object]]]:
        # Offer every remaining suite at once; the server picks one, which is recorded and
        # removed, until the server refuses what is left: accepted + 1 handshakes per version
        # instead of one per suite OpenSSL knows.
        remaining = {str(c["name"]): c for c in _candidate_ciphers(VERSIONS[label])}
        found: list[tuple[str, dict[str, object]]] = []
        while remaining:
            try:
                ctx = _probe_context(VERSIONS[label], ":".join(remaining) + ":@SECLEVEL=0")
                _, chosen, _ = target.handshake(ctx)
            except (ssl.SSLError, OSError):
                break
            cipher = remaining.pop(chosen, None)
            if cipher is None:  # the server chose something we did not offer: stop, never loop
                break
            found.append((label, cipher))
        return found

    versions = [label for label in accepted if label != "TLSv1.3"]
    accepted_ciphers = [pair for pairs in pool.map(enumerate_version, versions) for pair in pairs]

    seen: dict[str, list[str]] = {}
    rsa: set[str] = set()
    weak: set[str] = set()
    for label, cipher in accepted_ciphers:
        cipher_name = str(cipher["name"])
        seen.setdefault(label, []).append(cipher_name)
        if cipher.get("kea") == "kx-rsa":
            rsa.add(cipher_name)
        why = _weakness(cipher)
        if why:
            weak.add(f"{cipher_name} ({why})")
    result.facts["ciphers"] = seen
    if rsa:
        result.fail("tls.rsa-key-exchange", "RSA key exchange accepted: " + ", ".join(sorted(rsa)))
    else:
        result.ok()
    if weak:
        result.fail("tls.weak-cipher", "accepted: " + ", ".join(sorted(weak)))
    else:
        result.ok()


def _names_match(cert: x509.Certificate, name: str) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        ip = None
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    wanted = name.lower().rstrip(".")
    for dns in san.get_values_for_type(x509.DNSName):
        pattern = dns.lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def _certificate(target: _Target, ca_file: str | None, now: dt.datetime, result: CheckResult) -> None:
    name = target.name
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        _, _, der = target.handshake(ctx)
        cert = x509.load_der_x509_certificate(der)
    except (ssl.SSLError, OSError, ValueError) as exc:
        result.cannot(f"certificate: {type(exc).__name__}")
        result.fail("tls.unknown", "certificate could not be read")
        return
    expires = cert.not_valid_after_utc
    result.facts["certificate"] = {"subject": cert.subject.rfc4514_string(), "not_after": expires.isoformat()}
    if expires <= now or cert.not_valid_before_utc > now:
        result.fail("tls.cert-expired", f"valid {cert.not_valid_before_utc:%Y-%m-%d} to {expires:%Y-%m-%d}")
    elif expires - now < dt.timedelta(days=_EXPIRING_DAYS):
        result.fail("tls.cert-expiring", f"expires {expires:%Y-%m-%d} ({(expires - now).days} days)")
    else:
        result.ok()
    if _names_match(cert, name):
        result.ok()
    else:
        result.fail("tls.cert-hostname", f"certificate does not name {name}")
    verify = ssl.create_default_context(cafile=ca_file)
    verify.check_hostname = False
    try:
        target.handshake(verify)
    except ssl.SSLCertVerificationError as exc:
        if "expired" in str(exc.verify_message or ""):
            result.ok()  # already reported as tls.cert-expired
        else:
            result.fail("tls.cert-untrusted", f"chain not trusted ({exc.verify_message})")
    except (ssl.SSLError, OSError) as exc:
        result.cannot(f"chain: {type(exc).__name__}")
    else:
        result.ok()
