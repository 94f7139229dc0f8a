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

__all__ = ["TLS12_CIPHERS", "handshake_reason", "server_context"]

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
            "tls_cert_file", f"certificate or key could not be loaded ({type(exc).__name__})"
        ) from None
    if client_cert != "none":
        if client_ca_file is None:
            raise ConfigError("tls_client_ca_file", "needed when tls_client_cert is optional or required")
        try:
            ctx.load_verify_locations(str(client_ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                "tls_client_ca_file", f"CA file could not be loaded ({type(exc).__name__})"
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
