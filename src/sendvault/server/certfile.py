"""The HTTPS certificate and key as files: read them, match them, say when they expire.

Start-up, ``config check``, ``sendvault status``, the metrics and the reload watch all read the
certificate through here, so they agree on what is being served and when it runs out.
"""

from __future__ import annotations

import datetime as dt
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ..crypto.pairs import is_key_of
from ..errors import ConfigError

__all__ = ["CertFacts", "file_stamp", "read_certificate"]

_ISSUE_HINT = (
    "for production use a certificate from a public CA (docs/operations.md); "
    "`sendvault certs server NAME` issues one from the local CA for tests"
)


@dataclass(frozen=True, slots=True)
class CertFacts:
    """What an operator needs to know about the server certificate."""

    path: Path
    subject: str
    issuer: str
    names: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    serial: int

    def seconds_left(self, now: dt.datetime | None = None) -> float:
        """Seconds until it expires (negative once it has)."""
        return (self.not_after - (now or dt.datetime.now(dt.UTC))).total_seconds()

    def validity_problem(self, now: dt.datetime | None = None) -> str | None:
        """Why callers would refuse it today (expired, or not valid yet), or None."""
        now = now or dt.datetime.now(dt.UTC)
        if now > self.not_after:
            return f"expired on {self.not_after:%Y-%m-%d %H:%M}Z"
        if now < self.not_before:
            return f"is not valid until {self.not_before:%Y-%m-%d %H:%M}Z"
        return None

    @property
    def self_issued(self) -> bool:
        """Issued by sendvault's local CA (or by itself): Marketing Cloud will not trust it."""
        return self.issuer in (self.subject, "sendvault local CA")


def _common_name(name: x509.Name) -> str:
    found = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(found[0].value) if found else name.rfc4514_string()


def read_certificate(cert_path: Path, key_path: Path | None = None) -> CertFacts:
    """Read the first certificate of a PEM chain (and check ``key_path`` belongs to it).

    Raises :class:`ConfigError` naming ``tls_cert_file`` or ``tls_key_file``, with what to run.
    """
    try:
        pem = cert_path.read_bytes()
    except FileNotFoundError:
        raise ConfigError("tls_cert_file", f"{cert_path} does not exist", hint=_ISSUE_HINT) from None
    except OSError as exc:
        raise ConfigError("tls_cert_file", f"{cert_path} cannot be read ({exc.strerror})") from None
    try:
        cert = x509.load_pem_x509_certificates(pem)[0]
    except ValueError:
        raise ConfigError(
            "tls_cert_file",
            f"{cert_path} holds no PEM certificate",
            allowed="a PEM file starting with -----BEGIN CERTIFICATE-----, server certificate first",
        ) from None
    if key_path is not None:
        _check_key(cert, key_path, cert_path)
    names: tuple[str, ...] = ()
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = tuple(
            [str(v) for v in alt.get_values_for_type(x509.DNSName)]
            + [str(v) for v in alt.get_values_for_type(x509.IPAddress)]
        )
    except x509.ExtensionNotFound:
        pass
    return CertFacts(
        cert_path,
        _common_name(cert.subject),
        _common_name(cert.issuer),
        names,
        cert.not_valid_before_utc,
        cert.not_valid_after_utc,
        cert.serial_number,
    )


def _check_key(cert: x509.Certificate, key_path: Path, cert_path: Path) -> None:
    try:
        mode = key_path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError("tls_key_file", f"{key_path} does not exist", hint=_ISSUE_HINT) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            "tls_key_file",
            f"{key_path} is accessible by group or others (mode {stat.S_IMODE(mode):o}); chmod 600 it",
            hint=f"run: chmod 600 {key_path}",
        )
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError("tls_key_file", f"{key_path} cannot be read ({exc.strerror})") from None
    except (ValueError, TypeError):
        raise ConfigError(
            "tls_key_file",
            f"{key_path} holds no unencrypted PEM private key",
            allowed="a PEM private key without a passphrase, mode 0600",
        ) from None
    if not is_key_of(key, cert):
        raise ConfigError(
            "tls_key_file",
            f"{key_path} is not the key of the certificate in {cert_path}",
            hint="install the key and certificate of the same issuance (a renewal changes both)",
        )


def file_stamp(*paths: Path | None) -> tuple[tuple[int, int, int, int], ...]:
    """What changes when any of ``paths`` is replaced or rewritten: inode, size, mtime."""
    stamps = []
    for path in paths:
        if path is None:
            continue
        try:
            st = path.stat()
        except OSError:
            stamps.append((0, 0, 0, 0))
            continue
        stamps.append((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(stamps)
