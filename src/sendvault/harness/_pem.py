"""The files of ``--ca``, ``--client-cert`` and ``--client-key``, checked before any connection.

OpenSSL says "PEM lib" for a certificate without its key, a key that is not a PEM and a file of
junk alike, and prompts on the terminal for an encrypted key's passphrase. These files are read
here first with ``cryptography``, so each mistake gets a line of its own and a hint.
"""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from ..crypto.pairs import is_key_of

__all__ = ["TlsFileError", "check_client_pair", "check_file", "no_passphrase"]

# A CA bundle of every public CA is about 200 KiB; a client certificate and key a few KiB.
_MAX_BYTES = 4 * 1024 * 1024

_BOTH = "give --client-key KEY, or a PEM that holds both the certificate and its key"
_CA_HINT = "--ca takes the PEM file of the CA that signed the server's certificate"
_DECRYPT = "decrypt it first (openssl pkey -in KEY -out KEY.plain; keep that file mode 600)"


class TlsFileError(ValueError):
    """A TLS file that cannot serve: the message names it, ``hint`` says what to give instead."""

    def __init__(self, message: str, hint: str = _CA_HINT) -> None:
        super().__init__(message)
        self.hint = hint


def no_passphrase() -> bytes:
    """The password callback for ``load_cert_chain``: never prompt, refuse an encrypted key."""
    raise TlsFileError("the client key is encrypted with a passphrase", _DECRYPT)


def check_file(path: str, option: str) -> None:
    """TlsFileError unless ``path`` is a regular file of a PEM's size: a device (``/dev/zero``)
    would be read until memory runs out, a named pipe would wait forever."""
    try:
        info = Path(path).stat()
    except OSError as exc:
        raise TlsFileError(
            f"{option} {path} cannot be read ({exc.strerror or type(exc).__name__})",
            f"give {option} a readable PEM file",
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise TlsFileError(
            f"{option} {path} is not a regular file (a directory, device, pipe or socket)",
            f"give {option} a PEM file",
        )
    if info.st_size > _MAX_BYTES:
        raise TlsFileError(
            f"{option} {path} is {info.st_size} bytes, too large for a PEM file (at most {_MAX_BYTES})",
            f"give {option} a PEM file",
        )


def _read(path: str, option: str) -> bytes:
    check_file(path, option)
    try:
        with Path(path).open("rb") as fh:
            return fh.read(_MAX_BYTES + 1)
    except OSError as exc:
        raise TlsFileError(
            f"{option} {path} cannot be read ({exc.strerror or type(exc).__name__})",
            f"give {option} a readable PEM file",
        ) from None


def check_client_pair(cert_path: str, key_path: str | None) -> None:
    """TlsFileError unless ``cert_path`` holds a certificate and ``key_path`` (or it) its key."""
    try:
        cert = x509.load_pem_x509_certificates(_read(cert_path, "--client-cert"))[0]
    except ValueError as exc:
        if isinstance(exc, TlsFileError):
            raise
        raise TlsFileError(
            f"--client-cert {cert_path} holds no PEM certificate",
            "give the client certificate as PEM (-----BEGIN CERTIFICATE-----), "
            "with --client-key KEY or its key in the same file",
        ) from None
    option, path = ("--client-key", key_path) if key_path else ("--client-cert", cert_path)
    data = _read(path, option)
    if b"PRIVATE KEY-----" not in data:
        if key_path is None:
            raise TlsFileError(f"--client-cert {cert_path} holds a certificate but no private key", _BOTH)
        raise TlsFileError(
            f"--client-key {key_path} holds no PEM private key",
            "give --client-key the certificate's private key as PEM (-----BEGIN PRIVATE KEY-----), "
            "or a PEM that holds both",
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise TlsFileError(
            f"{option} {path}: the private key is encrypted with a passphrase", _DECRYPT
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise TlsFileError(
            f"{option} {path}: the private key cannot be read (damaged PEM or an unknown kind of key)",
            "give the certificate's private key as PEM (RSA, EC or Ed25519)",
        ) from None
    if not is_key_of(key, cert):
        raise TlsFileError(
            f"{option} {path} is not the key of the certificate in --client-cert {cert_path}",
            "give the key made with this certificate (a renewal changes both), or a PEM that holds both",
        )
