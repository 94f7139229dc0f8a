"""`scan tls`: protocol versions, key exchange and ciphers, and the certificate of an endpoint.

Every TLS <= 1.2 cipher suite the local OpenSSL knows (NULL and anonymous suites included) is
offered until the server refuses, and each accepted one is classified by key exchange: any RSA
key exchange is reported, even where a scanner that looks only for "some forward-secret suite"
would say forward secrecy is fine. The suites OpenSSL 3 has dropped (RC4, DES, 3DES, export) are
offered in a hand-built ClientHello (``_wire``). Legacy protocols are judged only after checking,
on a loopback pair, that this machine's OpenSSL can still offer them (OpenSSL 3 needs
``@SECLEVEL=0``); when it cannot, the verdict is ``unknown``, never ``pass``, and so it is when no
version completes a handshake at all. Probes run concurrently. ``--starttls`` speaks the MySQL
and PostgreSQL SSL requests first.
"""

from __future__ import annotations

import _ssl
import contextlib
import dataclasses
import datetime as dt
import functools
import ipaddress
import os
import socket
import ssl
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._certs import Cert, Reading, judge
from ._probe import CERT_PEM, KEY_PEM
from ._wire import LEGACY_SUITES, NoTLS, connect, server_choice
from .findings import CheckResult

__all__ = ["VERSIONS", "load_ca", "local_support", "scan_tls"]

VERSIONS: dict[str, ssl.TLSVersion] = {
    "TLSv1.0": ssl.TLSVersion.TLSv1,
    "TLSv1.1": ssl.TLSVersion.TLSv1_1,
    "TLSv1.2": ssl.TLSVersion.TLSv1_2,
    "TLSv1.3": ssl.TLSVersion.TLSv1_3,
}
_LEGACY = ("TLSv1.0", "TLSv1.1")
_SUITE_VERSIONS = ("TLSv1.0", "TLSv1.1", "TLSv1.2")  # TLS 1.3 suites are all AEAD and ECDHE/DHE
_WIRE_VERSIONS = {"TLSv1.0": 0x0301, "TLSv1.1": 0x0302, "TLSv1.2": 0x0303}
# ALL leaves out the NULL suites (eNULL); COMPLEMENTOFALL brings them back, so a server that
# accepts NULL-SHA256 is seen doing so. SECLEVEL=0 lets OpenSSL 3 offer SHA-1 and small keys.
_PROBE_CIPHERS = "ALL:COMPLEMENTOFALL:@SECLEVEL=0"


def load_ca(ca_file: str | None = None) -> ssl.SSLContext:
    """A verifying client context trusting ``ca_file`` (else the system store).

    Raises ValueError, with the reason in one line, when the file cannot be read or holds no
    certificate.
    """
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise ValueError(f"the CA file {ca_file} cannot be loaded ({reason})") from None


def _pin(ctx: ssl.SSLContext, version: ssl.TLSVersion, ciphers: str = _PROBE_CIPHERS) -> ssl.SSLContext:
    # Python deprecates pinning the legacy versions; probing them is the point here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = version
        ctx.maximum_version = version
    if version is not ssl.TLSVersion.TLSv1_3:
        ctx.set_ciphers(ciphers)
    return ctx


def _probe_context(version: ssl.TLSVersion, ciphers: str = _PROBE_CIPHERS) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return _pin(ctx, version, ciphers)


def _sni(name: str) -> str | bytes:
    # The ssl module IDNA-encodes a str name, which costs a CLI run the import of the IDNA codec;
    # an ASCII name is its own IDNA form, so it goes as bytes and only others are encoded.
    return name.encode() if name.isascii() else name


@dataclass(frozen=True, slots=True)
class _Target:
    host: str
    port: int
    name: str
    starttls: str | None = None
    timeout: float = 5.0

    @contextlib.contextmanager
    def _session(self, ctx: ssl.SSLContext) -> Iterator[ssl.SSLSocket]:
        with (
            connect(self.host, self.port, self.starttls, self.timeout) as raw,
            ctx.wrap_socket(raw, server_hostname=_sni(self.name)) as tls,
        ):
            yield tls

    def handshake(self, ctx: ssl.SSLContext) -> tuple[str, str, bytes]:
        """(protocol, cipher, peer certificate DER) of a completed handshake; raises when refused."""
        with self._session(ctx) as tls:
            cipher = tls.cipher()
            return str(tls.version()), cipher[0] if cipher else "", tls.getpeercert(binary_form=True) or b""

    def chain(self, ctx: ssl.SSLContext) -> list[bytes]:
        """The DER certificates the server sent (leaf first); raises when refused or unverified."""
        with self._session(ctx) as tls:
            return _sent_chain(tls)


def _sent_chain(tls: ssl.SSLSocket) -> list[bytes]:
    # Python 3.13 makes get_unverified_chain public (DER bytes); 3.10-3.12 have it on the
    # internal object, as certificate objects. The leaf alone is the last resort.
    getter = getattr(tls, "get_unverified_chain", None) or getattr(
        getattr(tls, "_sslobj", None), "get_unverified_chain", None
    )
    certs: list[Any] = list(getter() or []) if getter is not None else []
    ders = [c if isinstance(c, bytes) else c.public_bytes(_ssl.ENCODING_DER) for c in certs]
    return ders or [tls.getpeercert(binary_form=True) or b""]


# -- what this machine can offer ----------------------------------------------------------------


@contextlib.contextmanager
def _probe_pem() -> Iterator[str]:
    """A path to the probe certificate and key (one PEM file), gone when the block ends."""
    # On Linux an anonymous memory file serves: no disk write, and no import of tempfile, which
    # is a few percent of a CI scan's whole run. Elsewhere, or without /proc, a temporary file.
    if hasattr(os, "memfd_create"):
        fd = os.memfd_create("sendvault-probe", os.MFD_CLOEXEC)
        try:
            os.write(fd, CERT_PEM + KEY_PEM)
            path = f"/proc/self/fd/{fd}"
            if Path(path).exists():
                yield path
                return
        finally:
            os.close(fd)
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "probe.pem"
        file.write_bytes(CERT_PEM + KEY_PEM)
        yield str(file)


@functools.cache
def local_support() -> dict[str, bool]:
    """Which versions this machine's OpenSSL can offer; TLS 1.0/1.1 are proven on loopback."""
    support: dict[str, bool] = {}
    with _probe_pem() as pem:
        # Only the legacy versions need the proof: a refused TLS 1.2 or 1.3 yields no finding, so
        # a local stack unable to offer them cannot turn into a false pass.
        with ThreadPoolExecutor(max_workers=len(_LEGACY)) as pool:
            proofs = dict(zip(_LEGACY, pool.map(lambda v: _loopback(VERSIONS[v], pem), _LEGACY), strict=True))
        for label in VERSIONS:
            support[label] = proofs.get(label, True)
    return support


def _loopback(version: ssl.TLSVersion, pem: str) -> bool:
    try:
        server_ctx = _pin(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), version, "ALL:@SECLEVEL=0")
        server_ctx.load_cert_chain(pem)
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


@functools.cache
def _candidate_ciphers(version: ssl.TLSVersion) -> tuple[dict[str, object], ...]:
    # Cached: both kinds of suite probe of a version ask, and the answer never changes.
    ctx = _probe_context(version)
    return tuple(dict(c) for c in ctx.get_ciphers() if c.get("protocol") != "TLSv1.3")


_BROKEN_CIPHERS = ("rc4", "rc2", "des", "idea", "seed")


def _weakness(cipher: dict[str, object]) -> str | None:
    """Why an accepted TLS <= 1.2 suite is weak (every reason, most serious first); None if not."""
    name = str(cipher["name"])
    symmetric = cipher.get("symmetric")
    reasons = []
    if symmetric is None or "NULL" in name.split("-"):
        reasons.append("no encryption")
    if cipher.get("auth") == "auth-null":
        reasons.append("no authentication")
    if str(symmetric or "").startswith(_BROKEN_CIPHERS) or name.startswith("EXP-"):
        reasons.append("broken cipher")
    if not reasons and not cipher.get("aead"):
        reasons.append("not AEAD (CBC or stream cipher)")
    return ", ".join(reasons) or None


def _is_rsa_key_exchange(cipher: dict[str, object]) -> bool:
    # kx-rsa and kx-rsa-psk: the premaster secret travels encrypted to the server's RSA key.
    return str(cipher.get("kea", "")).startswith("kx-rsa")


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
    """Scan one endpoint; every judgement lands in the result as a finding, a pass or unknown.

    A ``ca_file`` that cannot be loaded leaves the chain unknown (``tls.unknown``); the rest of
    the scan goes on.
    """
    target = _Target(host, port, sni or host, starttls, timeout)
    result = CheckResult("tls", f"{host}:{port}" + (f" (starttls {starttls})" if starttls else ""))
    trust = _trust(ca_file, result)
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        # Everything independent starts at once: the local proof, the protocol probes, the suites
        # of each TLS <= 1.2 version and the certificate. The suites of a version the server
        # refuses cost one refused handshake and are dropped. The hand-built ClientHellos go
        # only to versions the server accepts, while OpenSSL's suites are still being offered.
        support = pool.submit(local_support)
        suites = {label: pool.submit(_suites, target, label) for label in _SUITE_VERSIONS}
        certificate = pool.submit(_read_certificate, target, trust)
        accepted = _protocols(target, result, pool, support)
        if not accepted:
            return result
        dropped = {a: pool.submit(_dropped_suites, target, a) for a in accepted if a in suites}
        found: list[tuple[str, dict[str, object]]] = []
        for label, hand_built in dropped.items():
            more, problem = hand_built.result()
            found += [(label, c) for c in [*suites[label].result(), *more]]
            if problem:
                result.cannot(f"{label} RC4/DES/3DES/export suites: {problem}")
                result.fail("tls.unknown", f"{label} RC4, DES, 3DES and export suites: {problem}")
        _ciphers(found, result)
        reading = certificate.result()
        if not reading.chain:
            # That reading offers TLS 1.2+ with today's suites; a server accepting only older
            # ones shows its certificate in a handshake pinned to the newest version it accepted.
            reading = _read_certificate(target, trust, VERSIONS[accepted[-1]])
        judge(reading, target.name, now(), result)
    finally:
        pool.shutdown(wait=True)
    return result


def _trust(ca_file: str | None, result: CheckResult) -> Callable[[], ssl.SSLContext] | None:
    """What verifies the chain: the system store, ``ca_file``, or None when it does not load."""
    if ca_file is None:
        return ssl.create_default_context  # loaded in a worker, beside the probes
    try:
        load_ca(ca_file)  # here, so that a bad file is this target's unknown, not a worker's crash
    except ValueError as exc:
        result.cannot(f"chain: {exc}")
        result.fail("tls.unknown", f"the chain could not be checked: {exc}")
        return None
    return functools.partial(load_ca, ca_file)


def _protocols(
    target: _Target, result: CheckResult, pool: ThreadPoolExecutor, support: Future[dict[str, bool]]
) -> list[str]:
    # A refusal counts only where the loopback proof of what this machine can offer holds, and
    # only when some version completed: refusals from a port that speaks no TLS prove nothing.
    # An accepted handshake proves itself.
    def probe(label: str) -> tuple[str, bool | None, str]:
        try:
            target.handshake(_probe_context(VERSIONS[label]))
        except NoTLS as exc:
            return label, None, str(exc)
        except ssl.SSLError as exc:
            return label, False, str(exc.reason or type(exc).__name__)
        except ValueError as exc:
            return label, False, type(exc).__name__
        except OSError as exc:
            return label, None, f"connection failed ({type(exc).__name__})"
        return label, True, ""

    probes = list(pool.map(probe, list(VERSIONS)))
    if not any(ok for _, ok, _ in probes):
        reasons = "; ".join(sorted({why for _, _, why in probes}))
        for label, _, _ in probes:
            result.facts[label] = "unknown"
        result.cannot(f"no TLS handshake completed: {reasons}")
        result.fail("tls.unknown", f"no TLS handshake completed ({reasons})")
        return []
    can_offer = support.result()
    accepted = []
    for label, outcome, reason in probes:
        ok, why = outcome, reason
        if ok is False and not can_offer[label]:
            ok, why = None, "this machine's OpenSSL cannot offer it"
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


def _suites(target: _Target, label: str) -> list[dict[str, object]]:
    """The TLS <= 1.2 suites this machine's OpenSSL knows that ``target`` accepts with ``label``.

    Offer every remaining suite at once; the server picks one, which is recorded and removed,
    until the server refuses what is left: accepted + 1 handshakes per version instead of one
    per suite OpenSSL knows.
    """
    remaining = {str(c["name"]): c for c in _candidate_ciphers(VERSIONS[label])}
    found: list[dict[str, object]] = []
    while remaining:
        try:
            ctx = _probe_context(VERSIONS[label], ":".join(remaining) + ":@SECLEVEL=0")
            _, chosen, _ = target.handshake(ctx)
        except (ssl.SSLError, OSError, ValueError):
            break
        cipher = remaining.pop(chosen, None)
        if cipher is None:  # the server chose something we did not offer: stop, never loop
            break
        found.append(cipher)
    return found


def _dropped_suites(target: _Target, label: str) -> tuple[list[dict[str, object]], str | None]:
    """The suites OpenSSL here cannot offer that ``target`` accepts with ``label``, and why not
    all of them could be checked (None when they could).

    As in :func:`_suites`, every remaining suite is offered at once until the server refuses,
    but in a hand-built ClientHello whose ServerHello names the suite picked.
    """
    known = {c["id"] for c in _candidate_ciphers(VERSIONS[label])}
    remaining = {code: c for code, c in LEGACY_SUITES.items() if c["id"] not in known}
    name = _hello_name(target.name)
    found: list[dict[str, object]] = []
    while remaining:
        try:
            with connect(target.host, target.port, target.starttls, target.timeout) as sock:
                chosen = server_choice(sock, _WIRE_VERSIONS[label], list(remaining), name)
        except (OSError, ValueError) as exc:
            return found, f"{type(exc).__name__}: {exc}"
        if chosen is None:
            break
        suite = remaining.pop(chosen, None)
        if suite is None:
            return found, f"the server chose suite 0x{chosen:04x}, which was not offered"
        found.append(suite)
    return found, None


def _hello_name(name: str) -> bytes | None:
    """The SNI of a hand-built ClientHello: none for an IP address, as the ssl module does."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name.encode() if name.isascii() else name.encode("idna")
    return None


def _ciphers(accepted_ciphers: list[tuple[str, dict[str, object]]], result: CheckResult) -> None:
    seen: dict[str, list[str]] = {}
    rsa: set[str] = set()
    weak: set[str] = set()
    for label, cipher in accepted_ciphers:
        cipher_name = str(cipher["name"])
        seen.setdefault(label, []).append(cipher_name)
        if _is_rsa_key_exchange(cipher):
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


def _read_certificate(
    target: _Target, trust: Callable[[], ssl.SSLContext] | None, version: ssl.TLSVersion | None = None
) -> Reading:
    """The chain the target sends, and whether it verifies against ``trust``.

    With ``version`` every handshake is pinned to it and offers every suite, as the probes do (at
    security level 0). A chain whose only fault at the default level is a weak key is verified
    again at level 0: key strength is ``tls.weak-key``, never a trust problem.
    """
    untrusted: str | None = None
    chain_unknown: str | None = None
    lenient = version is not None
    if trust is not None:
        for level0 in (lenient, True):
            verify = trust()
            verify.check_hostname = False
            if version is not None:
                _pin(verify, version)
            elif level0:
                verify.set_ciphers("DEFAULT:@SECLEVEL=0")
            try:
                ders = target.chain(verify)
            except ssl.SSLCertVerificationError as exc:
                untrusted = str(exc.verify_message or "")
            except (ssl.SSLError, OSError) as exc:
                chain_unknown = type(exc).__name__
            else:
                return _parsed(ders, Reading(lenient=level0))
            if level0 or "key too weak" not in (untrusted or ""):
                break
            untrusted = None
    try:
        ders = target.chain(_probe_context(version) if version is not None else _unverified())
    except (ssl.SSLError, OSError, ValueError) as exc:
        return Reading(error=type(exc).__name__)
    return _parsed(
        ders, Reading(untrusted=untrusted, chain_unknown=chain_unknown, chain_skipped=trust is None)
    )


def _unverified() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _parsed(ders: list[bytes], reading: Reading) -> Reading:
    try:
        chain = tuple(Cert.from_der(der) for der in ders)
    except ValueError as exc:
        return Reading(error=f"unreadable certificate ({exc})")
    return dataclasses.replace(reading, chain=chain)
