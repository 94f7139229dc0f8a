"""The TLS policy of the HTTPS listener, in one function.

Mozilla's server-side guidance, tightened: TLS 1.2 minimum (1.3 on), TLS 1.2 suites with ECDHE
key exchange and AEAD ciphers only (no RSA key exchange, no CBC), no compression, no
renegotiation, server cipher preference. Refused handshakes are counted by reason
(``sendvault_tls_handshake_failures``) so an operator sees which clients the policy turns away.
"""

from __future__ import annotations

import ssl
import stat
from collections.abc import Callable
from pathlib import Path

from ..errors import ConfigError

__all__ = ["TLS12_CIPHERS", "ReloadableContext", "handshake_reason", "server_context"]

# OpenSSL cipher string for TLS <= 1.2. TLS 1.3 suites are all AEAD with (EC)DHE and stay on.
TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!PSK:!SRP:!DSS"

_REASONS = {
    "UNSUPPORTED_PROTOCOL": "protocol-too-old",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol-too-old",
    "WRONG_VERSION_NUMBER": "not-tls",
    "HTTP_REQUEST": "plain-http",
    "NO_SHARED_CIPHER": "no-shared-cipher",
    "NO_CIPHERS_AVAILABLE": "no-shared-cipher",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "client-certificate-missing",
    "CERTIFICATE_VERIFY_FAILED": "client-certificate-invalid",
}


def handshake_reason(exc: ssl.SSLError) -> str:
    """A short, bounded label for why a handshake failed."""
    return _REASONS.get(str(exc.reason or ""), "other")


def _why(exc: OSError | ssl.SSLError) -> str:
    """A short reason: the OS's words for a file problem, OpenSSL's reason for a bad PEM."""
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or "not PEM").replace("_", " ").lower()
    return exc.strerror or type(exc).__name__


def _check_private_key(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError("tls_key_file", f"{path} does not exist") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            "tls_key_file",
            f"{path} is accessible by group or others (mode {stat.S_IMODE(mode):o}); chmod 600 it",
        )


def server_context(
    cert_file: Path,
    key_file: Path,
    *,
    min_version: str = "1.2",
    client_ca_file: Path | None = None,
    client_cert: str = "none",
    on_failure: Callable[[str], None] | None = None,
) -> ssl.SSLContext:
    """An SSLContext for the HTTPS listener; refuses unsafe settings with a ConfigError."""
    if min_version not in ("1.2", "1.3"):
        raise ConfigError("tls_min_version", "TLS below 1.2 is refused")
    _check_private_key(key_file)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2 if min_version == "1.2" else ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            "tls_cert_file",
            f"{cert_file} and {key_file} could not be loaded together ({_why(exc)})",
            allowed="a PEM certificate chain, server certificate first, and its unencrypted key",
        ) from None
    if client_cert != "none":
        if client_ca_file is None:
            raise ConfigError("tls_client_ca_file", "needed when tls_client_cert is optional or required")
        try:
            ctx.load_verify_locations(str(client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "tls_client_ca_file",
                f"{client_ca_file} could not be loaded ({_why(exc)})",
                allowed="a PEM file of the CA certificates that issue client certificates",
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED if client_cert == "required" else ssl.CERT_OPTIONAL
    ctx.set_alpn_protocols(["http/1.1"])
    if on_failure is not None:
        ctx.sslobject_class = _counting_sslobject(on_failure)
    return ctx


def _counting_sslobject(on_failure: Callable[[str], None]) -> type[ssl.SSLObject]:
    class CountingSSLObject(ssl.SSLObject):
        """Reports why a handshake failed; asyncio otherwise logs it only in debug mode."""

        def do_handshake(self) -> None:
            try:
                super().do_handshake()
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                raise
            except ssl.SSLError as exc:
                on_failure(handshake_reason(exc))
                raise

    return CountingSSLObject


class ReloadableContext:
    """A listener's SSLContext whose certificate can be replaced while it serves.

    The listener keeps ``base``; each new handshake is moved to the newest context built by
    :meth:`reload` (OpenSSL's server-name callback runs for every ClientHello, with or without
    SNI). Connections already open keep the context they started with, so a keep-alive client
    is never cut off by a renewal.
    """

    def __init__(self, build: Callable[[], ssl.SSLContext]) -> None:
        self._build = build
        self.base = build()
        self._current = self.base
        self.base.sni_callback = self._select

    def _select(self, conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, ctx: ssl.SSLContext) -> None:
        current = self._current
        if current is not ctx:
            conn.context = current

    def reload(self) -> None:
        """Build a context from the files as they are now; raises ConfigError and keeps the old one."""
        self._current = self._build()
