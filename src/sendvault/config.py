"""Every setting sendvault reads, typed and checked once at start.

Settings come from three layers, later layers winning:

1. the defaults declared on :class:`Settings`;
2. a TOML file: ``--config FILE``, else ``$SENDVAULT_CONFIG``, else
   ``$SENDVAULT_HOME/sendvault.toml`` when it exists;
3. ``SENDVAULT_<NAME>`` environment variables (``SENDVAULT_TOKEN_DOMAIN`` sets ``token_domain``).

A bad value stops start-up with one :class:`~sendvault.errors.ConfigError` naming the setting and
never echoing the value. ``docs/configuration.md`` is generated from the descriptions below
(``python -m sendvault.config``) and a test keeps it current.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit

import msgspec

from ._pglink import masked
from ._pglink import problem as pg_problem
from .errors import ConfigError

__all__ = [
    "ENV_PREFIX",
    "ExchangeJob",
    "ExchangeRemote",
    "ExchangeSettings",
    "Settings",
    "Sources",
    "allowed_text",
    "config_file_for",
    "load_settings",
    "load_settings_with_sources",
    "settings_reference",
    "unknown_environment",
]

ENV_PREFIX = "SENDVAULT_"
_CONFIG_FILE_NAME = "sendvault.toml"
# Settings that are secrets: never printed by `config show`, and recommended via env only.
_SECRET_SETTINGS = frozenset(
    {"master_key", "audit_key", "master_passphrase", "transit_token", "audit_transit_token"}
)


def _doc(
    text: str,
    *,
    allowed: str | None = None,
    check: Callable[[Any], None] | None = None,
    **constraints: Any,
) -> msgspec.Meta:
    """A setting's description and constraints.

    ``allowed`` says in words what the setting accepts (it is derived from the type and bounds
    when not given); ``check`` validates what a type cannot express (a list of networks, a key)
    and raises :class:`_Bad` with the problem, never echoing the value.
    """
    extra: dict[str, Any] = {}
    if allowed is not None:
        extra["allowed"] = allowed
    if check is not None:
        extra["check"] = check
    return msgspec.Meta(description=text, extra=extra or None, **constraints)


class _Bad(ValueError):
    """A value a setting's ``check`` refuses; the message is the problem, without the value."""


_HOST_NAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def _check_networks(text: str) -> None:
    items = text.replace(",", " ").split()
    for position, item in enumerate(items, start=1):
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise _Bad(f"entry {position} of {len(items)} is not an IP network") from None


def _check_address(text: str) -> None:
    if not text:
        raise _Bad("is empty")
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not _HOST_NAME.match(text):
            raise _Bad("is neither an IP address nor a host name") from None


def _check_optional_address(text: str | None) -> None:
    if text is not None:
        _check_address(text)


def _check_key(text: str | None) -> None:
    if text is None:
        return
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _Bad("is not base64") from None
    if len(raw) != 32:
        raise _Bad(f"decodes to {len(raw)} bytes, not 32")


def _check_passphrase(text: str | None) -> None:
    if text is not None and len(text) < 12:
        raise _Bad("is shorter than 12 characters")


def _check_path(text: str | None) -> None:
    if text is not None and (not text.strip() or "\0" in text):
        raise _Bad("is not a usable path")


def _check_http_url(text: str | None) -> None:
    if text is not None and not re.fullmatch(r"https?://[^\s/]+(/\S*)?", text):
        raise _Bad("is not an http(s):// URL")


def _check_transit_name(text: str | None) -> None:
    if text is not None and not re.fullmatch(r"[A-Za-z0-9_.-]{1,128}", text):
        raise _Bad("is not a transit key name")


def _check_token(text: str | None) -> None:
    if text is not None and (not text or any(c.isspace() or not c.isprintable() for c in text)):
        raise _Bad("is not a token")


def _check_witnesses(text: str) -> None:
    for url in text.split():
        if not url.startswith(("file:///", "postgresql://", "postgres://", "syslog://")):
            # Not echoed: a witness URL may hold a password.
            raise _Bad("holds a URL that is not file:///, postgresql:// or syslog://")
        if url.startswith(("postgresql://", "postgres://")):
            try:
                _check_database_url(url)
            except _Bad as exc:
                raise _Bad(f"holds a postgresql:// URL that {exc}") from None


def _check_database_url(text: str) -> None:
    if text.startswith(("postgresql://", "postgres://")):
        # Messages never quote the URL: it may hold a password (pg_problem masks what libpq quotes).
        wrong = pg_problem(text)
        if wrong is not None:
            raise _Bad(wrong)
        try:
            url = urlsplit(text)
            host = url.hostname
        except ValueError:
            raise _Bad("is not a valid PostgreSQL URL") from None
        if not url.path.strip("/") and not host and "host=" not in url.query:
            raise _Bad("names no host or database")


_ADDRESS = "an IP address (`0.0.0.0` or `::` for every interface) or a host name"
_PEM = "the path of a PEM file"
_NETWORKS = (
    "space-separated IP networks in CIDR form, e.g. `10.0.0.0/8 2001:db8::/32` (a bare address is one host)"
)
_KEY = "base64 of 32 random bytes, e.g. the output of `openssl rand -base64 32`"


class ExchangeRemote(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """An SFTP server of the file exchange: ``[exchange.remotes.NAME]``."""

    url: Annotated[
        str,
        _doc(
            "`sftp://user@host[:port]/folder` (no password in it).", pattern=r"^sftp://[^:@/]+(:[^@/]*)?@?.+"
        ),
    ]
    identity_file: Annotated[str | None, _doc("Private key file for the login.")] = None
    password_env: Annotated[
        str | None, _doc("Environment variable that holds the password (never the password itself).")
    ] = None
    known_hosts: Annotated[str | None, _doc("known_hosts file (default `~/.ssh/known_hosts`).")] = None
    host_key_fingerprint: Annotated[
        str | None, _doc("Pinned `SHA256:...` host key fingerprint, instead of known_hosts.")
    ] = None


class ExchangeJob(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """A job `sendvault serve` runs on a schedule: ``[[exchange.schedule]]``."""

    job: Annotated[Literal["pull", "sweep", "status"], _doc("What to run.")]
    every_minutes: Annotated[int, _doc("Interval; the first run is at start-up.", ge=1, le=10_080)] = 60
    remote: Annotated[str | None, _doc("Name of a remote in `exchange.remotes` (default: every remote).")] = (
        None
    )
    local_dir: Annotated[str | None, _doc("Where `pull` puts files (required for pull).")] = None

    def __post_init__(self) -> None:
        if self.job == "pull" and not self.local_dir:
            raise ValueError("a pull job needs local_dir")


class ExchangeSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The ``[exchange]`` table: retention, folders, SFTP remotes and scheduled jobs."""

    retention_days: Annotated[
        float, _doc("Files older than this are deleted by `exchange sweep`; the platform's period.", ge=0)
    ] = 10.0
    warn_days: Annotated[
        float, _doc("`exchange status` warns about unpulled files this close to the deadline.", ge=0)
    ] = 2.0
    local_dirs: Annotated[list[str], _doc("Local exchange folders swept (recursively).")] = []
    remotes: Annotated[dict[str, ExchangeRemote], _doc("SFTP remotes by name.")] = {}
    schedule: Annotated[list[ExchangeJob], _doc("Jobs `sendvault serve` runs.")] = []

    def __post_init__(self) -> None:
        for job in self.schedule:
            if job.remote is not None and job.remote not in self.remotes:
                raise ValueError(f"schedule names the remote {job.remote}, which is not in exchange.remotes")
            if job.job in ("pull", "status") and not self.remotes:
                raise ValueError(f"a {job.job} job needs at least one remote in exchange.remotes")


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The validated settings of one sendvault process."""

    home: Annotated[
        str,
        _doc(
            "Data directory: the SQLite database, local key files, certificates. "
            "Relative paths are taken from the working directory.",
            allowed="a directory path (created with mode 0700 when missing)",
            check=_check_path,
        ),
    ] = "./.sendvault"
    database_url: Annotated[
        str,
        _doc(
            "Where tokens live. Empty means the embedded SQLite database `$SENDVAULT_HOME/sendvault.db`; "
            "`sqlite:///PATH` names another SQLite file; `postgresql://USER@HOST:PORT/DB` uses PostgreSQL "
            "(needs the `postgres` extra), shared by any number of replicas.",
            pattern=r"^$|^sqlite:///.+|^postgres(ql)?://.+",
            allowed="empty, `sqlite:///PATH` or `postgresql://USER@HOST:PORT/DB`",
            check=_check_database_url,
        ),
    ] = ""
    database_read_url: Annotated[
        str,
        _doc(
            "A PostgreSQL streaming standby for resolve traffic, e.g. `postgresql://USER@STANDBY:5432/DB`. "
            "A token the standby does not have yet is read from `database_url`, so a token handed out a "
            "moment ago always resolves; a standby that is down or cannot answer sends reads to "
            "`database_url` until it answers again. Empty: every read goes to `database_url`.",
            pattern=r"^$|^postgres(ql)?://.+",
            allowed="empty or `postgresql://USER@HOST:PORT/DB`",
            check=_check_database_url,
        ),
    ] = ""
    database_ssl_ca_file: Annotated[
        str | None,
        _doc(
            "CA certificate that issued the PostgreSQL server's certificate. When set, every database "
            "link uses `sslmode=verify-full` (TLS, chain and host name checked) unless the URL names "
            "another `sslmode`. Same as `sslrootcert=` in the URL.",
            allowed=_PEM,
            check=_check_path,
        ),
    ] = None
    database_ssl_cert_file: Annotated[
        str | None,
        _doc(
            "Client certificate for the database link (its CN is the database user, for `cert` rules "
            "in pg_hba.conf); `sendvault certs client USER` issues one. Same as `sslcert=` in the URL.",
            allowed=_PEM,
            check=_check_path,
        ),
    ] = None
    database_ssl_key_file: Annotated[
        str | None,
        _doc(
            "Private key of `database_ssl_cert_file` (mode 0600 or stricter). Same as `sslkey=` in the URL.",
            allowed=_PEM,
            check=_check_path,
        ),
    ] = None
    key_provider: Annotated[
        Literal["local", "sealed", "transit"],
        _doc(
            "Who holds the key-encryption key (KEK). `local`: `SENDVAULT_MASTER_KEY` if set, else the file "
            "`$SENDVAULT_HOME/keys/master.key` (created on first use, mode 0600). `sealed`: the file "
            "`$SENDVAULT_HOME/keys/master.sealed`, the KEK sealed under a passphrase (scrypt) from "
            "`SENDVAULT_MASTER_PASSPHRASE` or a prompt. `transit`: OpenBao or HashiCorp Vault's transit "
            "engine (`transit_*` settings; needs the `openbao` extra); the KEK never leaves it."
        ),
    ] = "local"
    master_passphrase: Annotated[
        str | None,
        _doc(
            "Passphrase of the sealed KEK file (`key_provider = sealed`). Set it in the environment; when "
            "unset, commands run at a terminal prompt for it.",
            allowed="any text of 12 characters or more",
            check=_check_passphrase,
        ),
    ] = None
    transit_url: Annotated[
        Annotated[str, msgspec.Meta(pattern=r"^https?://.+")] | None,
        _doc(
            "Address of the OpenBao or Vault server (`key_provider = transit`), e.g. "
            "`https://bao.example.com:8200`.",
            allowed="an http:// or https:// URL, or empty",
        ),
    ] = None
    transit_token: Annotated[
        Annotated[str, msgspec.Meta(pattern=r"^\S{1,4096}$")] | None,
        _doc(
            "Token sendvault presents to OpenBao/Vault; its policy needs only encrypt, decrypt and rewrap "
            "on `transit_key` (plus read, for `keys status`). Set it in the environment.",
            allowed="an OpenBao/Vault token (no spaces), or empty",
        ),
    ] = None
    transit_key: Annotated[
        str,
        _doc(
            "Name of the transit key that wraps sendvault's data keys (an `aes256-gcm96` key).",
            pattern=r"^[A-Za-z0-9_.-]{1,128}$",
            allowed="1 to 128 letters, digits, `_`, `.` or `-`",
        ),
    ] = "sendvault"
    transit_mount: Annotated[
        str,
        _doc(
            "Mount path of the transit engine.",
            pattern=r"^[A-Za-z0-9_./-]{1,128}$",
            allowed="a mount path such as `transit`",
        ),
    ] = "transit"
    transit_ca_file: Annotated[
        str | None,
        _doc(
            "CA certificate (PEM) that signed the OpenBao/Vault server's certificate; empty uses the "
            "system's trusted CAs.",
            allowed=_PEM + ", or empty",
            check=_check_path,
        ),
    ] = None
    master_key: Annotated[
        str | None,
        _doc(
            "Base64 of a 32-byte key-encryption key. Set it in the environment, not in a file others "
            "can read. When unset, the local key file is used.",
            allowed=_KEY,
            check=_check_key,
        ),
    ] = None
    token_domain: Annotated[
        str,
        _doc(
            "Domain of email tokens. Use a domain you own with a null MX (RFC 7505); the default is "
            "under the reserved `.invalid` TLD and suits development only.",
            pattern=r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
            allowed="a lowercase domain name of two labels or more, e.g. `tokens.example.com`",
        ),
    ] = "tokens.sendvault.invalid"
    mobile_token_prefix: Annotated[
        str,
        _doc(
            "Leading digits of every prefix-style mobile token. The default 999 is a country code the "
            "ITU has not assigned, so a token can never be a subscriber's number. A prefix under an "
            "assigned code is allowed only if its tokens are checked not to be valid numbers.",
            pattern=r"^[1-9][0-9]{0,5}$",
            allowed="1 to 6 digits not starting with 0, e.g. `999`",
        ),
    ] = "999"
    mobile_token_digits: Annotated[
        int,
        _doc(
            "Random digits after the prefix. Prefix and digits make at most 15 digits (E.164, which "
            "Marketing Cloud's SMS side requires); 9 is the least (10^9 distinct tokens).",
            ge=9,
            le=14,
        ),
    ] = 12
    mobile_token_style: Annotated[
        Literal["prefix", "keep-country"],
        _doc(
            "`prefix`: `mobile_token_prefix` then random digits. `keep-country`: numbers of the calling "
            "codes in `mobile_token_country_codes` get tokens under their own country code, in ranges "
            "phonenumbers judges possible but not valid (unassigned); other numbers get prefix tokens."
        ),
    ] = "prefix"
    mobile_token_country_codes: Annotated[
        str,
        _doc(
            "Country calling codes that keep their country under `keep-country` (e.g. `1 44 49`). "
            "Start-up refuses a code whose unassigned ranges hold fewer than 10^9 tokens.",
            pattern=r"^[0-9 ,+]*$",
            allowed="space-separated country calling codes, e.g. `1 44 49`, or empty",
        ),
    ] = ""
    email_keep_local_case: Annotated[
        bool,
        _doc(
            "Keep the case of an email's local part instead of lowercasing it. Fixed when the vault "
            "is created: changing it later would give the same address two tokens, so start-up refuses."
        ),
    ] = False
    default_region: Annotated[
        Annotated[str, msgspec.Meta(pattern=r"^[A-Z]{2}$")] | None,
        _doc(
            "Two-letter region (e.g. `US`, `GB`) for mobile numbers written in national form (with "
            "spaces, brackets or a leading 0). Digits-only input is always read as E.164 without `+`.",
            allowed="a two-letter region code in capitals, e.g. `US` or `GB`, or empty",
        ),
    ] = None
    sqlite_busy_timeout_ms: Annotated[
        int,
        _doc("How long a SQLite writer waits for another process's write lock.", ge=100, le=600_000),
    ] = 10_000

    sqlite_bulk_lock_seconds: Annotated[
        float,
        _doc(
            "About how long a bulk job (`csv tokenize`) holds the SQLite write lock per transaction; "
            "a Get Token that creates a token waits at most about this long behind it (and never longer "
            "than a quarter of `sqlite_busy_timeout_ms`). Longer transactions convert new values faster, "
            "up to 250,000 rows a transaction (about 10 s on 2 cores): a migration with no API traffic "
            "can take 15 with `sqlite_busy_timeout_ms` 60000 in every process using the store.",
            ge=0.1,
            le=60.0,
        ),
    ] = 2.0

    sqlite_mmap_mb: Annotated[
        int,
        _doc("Megabytes of the SQLite file read through mmap (0 turns it off).", ge=0, le=1_048_576),
    ] = 1024

    reencrypt_share: Annotated[
        float,
        _doc(
            "Share of time `serve` spends moving rows to the current data key after `keys rotate dek` "
            "(in the background, in batches; the rest is the API's). 0 turns the background run off: "
            "then run `sendvault keys reencrypt`. The default keeps resolve throughput at about 70% or "
            "more of idle on 2 cores (benchmarks/bench_keys.py) and moves a million rows in minutes.",
            ge=0.0,
            le=1.0,
        ),
    ] = 0.15

    audit: Annotated[
        Literal["on", "off"],
        _doc(
            "Record every API call in the audit log. Marketing Cloud requires the log; `off` exists only "
            "to measure its cost (benchmarks/bench_api_resolve.py) and is announced at start-up."
        ),
    ] = "on"
    audit_key: Annotated[
        str | None,
        _doc(
            "Base64 of the 32-byte key that seals clear values inside audit records. When unset, "
            "`$SENDVAULT_HOME/keys/audit.key` (created on first use, mode 0600). Keep it apart from the "
            "master key: whoever holds it can read audited payloads.",
            allowed=_KEY,
            check=_check_key,
        ),
    ] = None
    audit_public_key: Annotated[
        str | None,
        _doc(
            "PEM file of the Ed25519 public key that audit heads must verify under. `audit verify` and "
            "`audit head` trust only this key (or `--public-key`), never the one beside the log; a "
            "writer whose signing key differs refuses to start. Keep the file where the log's writers "
            "cannot change it.",
            allowed=_PEM + " holding an Ed25519 public key (the audit signing key's), or empty",
            check=_check_path,
        ),
    ] = None
    audit_checkpoint_records: Annotated[
        int,
        _doc(
            "Most records between two audit checkpoints (signed heads kept for good and sent to the "
            "witnesses).",
            ge=1,
            le=1_000_000,
        ),
    ] = 1000
    audit_checkpoint_seconds: Annotated[
        float,
        _doc(
            "Most seconds a record waits for an audit checkpoint: the window within which a holder of "
            "the signing key could still rewrite records unseen by the witnesses.",
            gt=0,
            le=86_400,
        ),
    ] = 5.0

    audit_signer: Annotated[
        Literal["local", "transit"],
        _doc(
            "Who signs audit heads. `local`: the file `$SENDVAULT_HOME/keys/audit-signing.key` (the "
            "development default; a production start warns when sendvault's own user can read it). "
            "`transit`: an ed25519 key in OpenBao/HashiCorp Vault transit (`audit_transit_*`); sendvault "
            "asks it to sign each head and never holds the private key."
        ),
    ] = "local"
    audit_transit_url: Annotated[
        str | None,
        _doc(
            "OpenBao/Vault address for `audit_signer = transit`, e.g. `https://bao.example.com:8200`.",
            allowed="an https:// or http:// URL, or empty",
            check=_check_http_url,
        ),
    ] = None
    audit_transit_key: Annotated[
        str | None,
        _doc(
            "Name of the ed25519 transit key that signs audit heads.",
            allowed="a transit key name (letters, digits, `-`, `_`, `.`), or empty",
            check=_check_transit_name,
        ),
    ] = None
    audit_transit_token: Annotated[
        str | None,
        _doc(
            "Token for the audit transit key; give it a policy that allows only `sign` (and `read`) on "
            "that key. Set it in the environment (`SENDVAULT_AUDIT_TRANSIT_TOKEN`), not in a file.",
            allowed="an OpenBao/Vault token (no spaces), or empty",
            check=_check_token,
        ),
    ] = None
    audit_transit_mount: Annotated[
        str,
        _doc(
            "Mount path of the transit engine.",
            allowed="a mount path (letters, digits, `-`, `_`, `.`, `/`)",
            pattern=r"^[A-Za-z0-9_./-]{1,128}$",
        ),
    ] = "transit"
    audit_transit_ca_file: Annotated[
        str | None,
        _doc(
            "CA bundle that verifies the OpenBao/Vault server (default: the system's).",
            allowed=_PEM,
            check=_check_path,
        ),
    ] = None
    audit_witness: Annotated[
        str,
        _doc(
            "Where every audit checkpoint (a signed, dated head) is also written, space-separated: "
            "`file:///PATH` (an append-only file on another mount or host), `postgresql://...` (a table "
            "`sendvault_audit_witness` on another server; give the user INSERT and SELECT only), "
            "`syslog://HOST:PORT` (UDP, to a SIEM; write-only). `audit verify --witness` checks the log "
            "against what a witness holds. A witness that cannot be written stops the log (503) until "
            "it can.",
            allowed="space-separated `file:///PATH`, `postgresql://...` or `syslog://HOST:PORT` URLs, "
            "or empty",
            check=_check_witnesses,
        ),
    ] = ""

    # -- server ------------------------------------------------------------------------------
    host: Annotated[
        str,
        _doc(
            "Address the HTTPS and HTTP listeners bind to (0.0.0.0 for all).",
            allowed=_ADDRESS,
            check=_check_address,
        ),
    ] = "127.0.0.1"
    https_port: Annotated[int, _doc("HTTPS port of the token API.", ge=1, le=65535)] = 8443
    http_port: Annotated[
        int,
        _doc("Plain HTTP port that answers every request with 308 to HTTPS; 0 turns it off.", ge=0, le=65535),
    ] = 8080
    admin_host: Annotated[
        str,
        _doc("Address of the admin listener (Prometheus metrics).", allowed=_ADDRESS, check=_check_address),
    ] = "127.0.0.1"
    admin_port: Annotated[int, _doc("Admin listener port; 0 turns it off.", ge=0, le=65535)] = 9464
    workers: Annotated[int, _doc("Worker processes sharing the HTTPS socket and the store.", ge=1, le=64)] = 1
    public_host: Annotated[
        str | None,
        _doc(
            "Host name used in 308 redirects. When unset, the request's Host header is used only if it "
            "is one of the listener's own names (the certificate's names and addresses, the address "
            "reached); otherwise the address the caller reached.",
            allowed="a host name or IP address, e.g. `api.example.com`, or empty",
            check=_check_optional_address,
        ),
    ] = None
    public_https_port: Annotated[
        int,
        _doc(
            "HTTPS port named in 308 redirects when callers reach the server through a port mapping "
            "(e.g. 443 published for https_port 8443); 0 means https_port.",
            ge=0,
            le=65535,
        ),
    ] = 0
    tls_cert_file: Annotated[
        str | None,
        _doc(
            "PEM certificate chain of the HTTPS listener (default: `$SENDVAULT_HOME/certs/server.pem`). "
            "A renewed file is served without a restart (see `tls_reload_seconds`).",
            allowed=_PEM,
            check=_check_path,
        ),
    ] = None
    tls_key_file: Annotated[
        str | None,
        _doc(
            "PEM private key of the HTTPS listener, mode 0600 (default: `$SENDVAULT_HOME/certs/server.key`).",
            allowed=_PEM,
            check=_check_path,
        ),
    ] = None
    tls_min_version: Annotated[
        Literal["1.2", "1.3"], _doc("Oldest TLS version accepted. Below 1.2 is refused at start-up.")
    ] = "1.2"
    tls_client_ca_file: Annotated[
        str | None,
        _doc(
            "PEM CA bundle for client certificates (mutual TLS); set with `tls_client_cert`.",
            allowed=_PEM,
            check=_check_path,
        ),
    ] = None
    tls_client_cert: Annotated[
        Literal["none", "optional", "required"], _doc("Whether callers must present a client certificate.")
    ] = "none"
    allow_cidrs: Annotated[
        str,
        _doc(
            "Server-wide allowlist of caller networks (space-separated CIDRs, or a TOML list); empty allows "
            "any address.",
            allowed=_NETWORKS + ", or empty",
            check=_check_networks,
        ),
    ] = ""
    trusted_proxies: Annotated[
        str,
        _doc(
            "Load balancers whose X-Forwarded-For is believed (space-separated CIDRs); the caller is the "
            "right-most address not in this list.",
            allowed=_NETWORKS + ", or empty",
            check=_check_networks,
        ),
    ] = ""
    max_batch: Annotated[int, _doc("Most items in one call; more gets 413.", ge=1, le=100_000)] = 500
    max_body_bytes: Annotated[int, _doc("Largest request body; more gets 413.", ge=1024)] = 4 * 1024 * 1024
    max_inflight: Annotated[
        int, _doc("Requests one worker serves at once; more get 503 with Retry-After.", ge=1)
    ] = 256
    header_timeout_seconds: Annotated[
        float,
        _doc(
            "Time a caller has to complete the TLS handshake, and then each request's head (request "
            "line and headers, at most 16 KiB), from the connection's start or the first byte of a "
            "kept-alive connection's next request; later gets 408 and the connection closed. The plain "
            "HTTP listener gives each connection as long for its one head.",
            ge=0.5,
            le=300,
        ),
    ] = 10.0
    body_timeout_seconds: Annotated[
        float,
        _doc("Time a caller has to send a whole request body; then its connection closes.", ge=1),
    ] = 60.0
    body_min_bytes_per_second: Annotated[
        int,
        _doc(
            "Slowest average rate a request body may arrive at, measured from 2 s after its head, "
            "while the server reads; slower closes the connection. 0 turns the check off.",
            ge=0,
        ),
    ] = 8192
    keep_alive_seconds: Annotated[
        int,
        _doc(
            "How long an idle kept-alive connection stays open. Keep it above the idle timeout of a "
            "load balancer in front.",
            ge=1,
            le=3600,
        ),
    ] = 75
    max_connections_per_address: Annotated[
        int,
        _doc(
            "Open connections one caller address may hold per worker (not counted for "
            "`trusted_proxies`). At the cap a new connection pushes out that address's oldest "
            "connection that is not inside a request; if all are busy it gets 503. The plain HTTP "
            "listener applies it, and `max_connections`, to its own connections.",
            ge=1,
        ),
    ] = 128
    max_connections: Annotated[
        int,
        _doc("Open connections per worker, all callers together; handled like the cap per address.", ge=1),
    ] = 4096
    retry_after_seconds: Annotated[int, _doc("Retry-After of 503 answers.", ge=1, le=3600)] = 5
    token_lifetime_seconds: Annotated[int, _doc("Lifetime of OAuth access tokens.", ge=60, le=86_400)] = 3600
    auth_cache_seconds: Annotated[
        float,
        _doc(
            "How long a successful Basic check and a client record are cached per worker: a client "
            "added, changed or removed on one replica is honoured by every replica within this.",
            ge=0,
            le=600,
        ),
    ] = 0.5
    auth_max_failures: Annotated[
        int,
        _doc(
            "Failed authentications from one address (an IPv6 /64) within the window after which its "
            "checks are slowed: one at a time, `auth_failure_spacing_seconds` apart. Never a refusal: "
            "a correct secret or a valid token is always accepted.",
            ge=1,
        ),
    ] = 10
    auth_failure_window_seconds: Annotated[int, _doc("Window of `auth_max_failures`.", ge=1)] = 300
    auth_failure_spacing_seconds: Annotated[
        float,
        _doc(
            "Least time between two checks of an address past `auth_max_failures` (per worker). "
            "Bounds its guessing rate; a right credential from that address waits at most this long "
            "per check queued before it.",
            ge=0,
            le=10,
        ),
    ] = 0.1
    hsts_max_age: Annotated[
        int, _doc("Strict-Transport-Security max-age on every HTTPS answer (with includeSubDomains).", ge=0)
    ] = 63_072_000
    compat_echo_token: Annotated[bool, _doc("Compatibility: also return `token` in each resolved item.")] = (
        False
    )
    compat_status_code: Annotated[
        bool,
        _doc("Compatibility: add top-level `statusCode` (and resolve counts) to Marketing Cloud answers."),
    ] = False

    # -- operations ----------------------------------------------------------------------------
    tls_reload_seconds: Annotated[
        int,
        _doc(
            "How often the certificate, key and client CA files are checked for a change; a changed, "
            "valid set is served to new connections without a restart (open ones keep theirs). "
            "0 turns the watch off; `kill -HUP` reloads at any time.",
            ge=0,
            le=86_400,
        ),
    ] = 60
    cert_warn_days: Annotated[
        int,
        _doc(
            "`sendvault status` exits 1 (and the start-up log warns) when the server certificate "
            "expires within this many days.",
            ge=1,
            le=365,
        ),
    ] = 21
    log_format: Annotated[
        Literal["text", "json"],
        _doc("Log lines on stderr: `text` for people, `json` (one object per line) for log collectors."),
    ] = "text"
    log_level: Annotated[
        Literal["debug", "info", "warning", "error"],
        _doc("Least severe log level written. Access lines are `info`."),
    ] = "info"
    access_log: Annotated[
        bool,
        _doc(
            "One `info` line per API call: method, route, status, items, latency, client id and "
            "caller address; never a token, a value or a secret."
        ),
    ] = True

    exchange: Annotated[
        ExchangeSettings,
        _doc(
            "File exchange: the `[exchange]` table of the config file (retention, folders, SFTP remotes, "
            "scheduled jobs); see the tables below and docs/exchange.md. Config file only.",
            allowed="a table of retention_days, warn_days, local_dirs, remotes, schedule (docs/exchange.md)",
        ),
    ] = msgspec.field(default_factory=ExchangeSettings)

    @property
    def home_path(self) -> Path:
        """The data directory as an absolute path."""
        return Path(self.home).expanduser().absolute()

    @property
    def cert_path(self) -> Path:
        """The HTTPS certificate file."""
        return Path(self.tls_cert_file) if self.tls_cert_file else self.home_path / "certs" / "server.pem"

    @property
    def key_path(self) -> Path:
        """The HTTPS private key file."""
        return Path(self.tls_key_file) if self.tls_key_file else self.home_path / "certs" / "server.key"

    @property
    def sqlite_path(self) -> Path:
        """The SQLite file this process uses."""
        if not self.database_url:
            return self.home_path / "sendvault.db"
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///")).expanduser().absolute()
        raise ConfigError("database_url", "is not a SQLite URL")

    def bulk_lock_warning(self) -> str | None:
        """Why ``sqlite_bulk_lock_seconds`` does not take effect in full on SQLite (a bulk
        transaction holds the lock a quarter of ``sqlite_busy_timeout_ms`` at most: the rule
        ``SQLiteStore.__init__`` applies); else None."""
        if self.database_url.startswith(("postgresql://", "postgres://")):
            return None
        lock, busy = self.sqlite_bulk_lock_seconds, self.sqlite_busy_timeout_ms
        held = busy / 4000
        if lock <= held:
            return None
        need = math.ceil(lock * 4) * 1000  # whole seconds, rounded up
        return (
            f"sqlite_bulk_lock_seconds {lock:.10g} takes effect as {held:.10g} s, a quarter of "
            f"sqlite_busy_timeout_ms ({busy}); for {lock:.10g} s set SENDVAULT_SQLITE_BUSY_TIMEOUT_MS={need} "
            "(and at least that in every process using the store)"
        )

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked, for `sendvault config show`."""
        out = msgspec.structs.asdict(self)
        for name in _SECRET_SETTINGS:
            if out.get(name) is not None:
                out[name] = "***"
        # Passwords in both of libpq's forms: user:PASSWORD@ and password= (or sslpassword=),
        # in a URL's query or a key=value string.
        for name in ("database_url", "database_read_url"):
            out[name] = masked(out[name])
        out["audit_witness"] = " ".join(masked(w) for w in self.audit_witness.split())
        return out


def _field_types() -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(Settings)}


def _base_type(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` to the type a setting holds."""
    if get_origin(annotation) is Annotated:
        return get_args(annotation)[0]
    return annotation


def _metas(annotation: Any) -> list[msgspec.Meta]:
    """Every ``msgspec.Meta`` on a setting, outer first, including those inside ``Optional``."""
    found: list[msgspec.Meta] = []
    if get_origin(annotation) is Annotated:
        found += [m for m in get_args(annotation)[1:] if isinstance(m, msgspec.Meta)]
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, UnionType):
        for arm in get_args(annotation):
            found += _metas(arm)
    return found


def _extra(annotation: Any, key: str) -> Any:
    for meta in _metas(annotation):
        if meta.extra and key in meta.extra:
            return meta.extra[key]
    return None


def allowed_text(name: str) -> str:
    """What setting ``name`` accepts, in words: written beside every error about it."""
    annotation = _field_types()[name]
    explicit = _extra(annotation, "allowed")
    if explicit is None:
        kind = _base_type(annotation)
        optional = get_origin(kind) in (Union, UnionType) and type(None) in get_args(kind)
        arms = [a for a in get_args(kind) if a is not type(None)] if optional else [kind]
        explicit = _describe(_base_type(arms[0]), _metas(annotation)) + (", or empty" if optional else "")
    # Written in Markdown for the reference; a terminal line reads better without the backticks.
    return str(explicit).replace("`", "")


def _describe(kind: Any, metas: list[msgspec.Meta]) -> str:
    if get_origin(kind) is Literal:
        choices = [str(v) for v in get_args(kind)]
        return " or ".join(choices) if len(choices) <= 2 else "one of " + ", ".join(choices)
    if kind is bool:
        return "`true` or `false`"
    low = next((m.ge for m in metas if m.ge is not None), None)
    high = next((m.le for m in metas if m.le is not None), None)
    noun = "a whole number" if kind is int else "a number"
    if low is not None and high is not None:
        return f"{noun} from {_num(low)} to {_num(high)}"
    if low is not None:
        return f"{noun} of at least {_num(low)}"
    if high is not None:
        return f"{noun} of at most {_num(high)}"
    return noun if kind in (int, float) else "text"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _coerce_env(name: str, raw: str, annotation: Any) -> Any:
    """Turn an environment string into the type a setting wants; the checks do the rest."""
    kind = _base_type(annotation)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(name, "is not a boolean", allowed="true or false (also 1/0, yes/no, on/off)")
    if raw == "" and type(None) in get_args(kind):
        return None
    return raw


# A settings file is a few kilobytes; reading stops past this (--config /dev/zero read for ever).
_MAX_CONFIG_BYTES = 1 << 20


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = fh.read(_MAX_CONFIG_BYTES + 1)
        if len(data) > _MAX_CONFIG_BYTES:
            raise ConfigError("config", f"{path} is over {_MAX_CONFIG_BYTES >> 20} MiB: not a settings file")
        return tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            "config", f"file not found: {path}", hint="give an existing TOML file with --config FILE"
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            "config", f"{path} is a directory", hint="give a TOML file with --config FILE"
        ) from None
    except PermissionError:
        raise ConfigError("config", f"{path} is not readable by this user") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            "config",
            f"{path} is not UTF-8 text (byte {exc.start + 1} cannot be read)",
            hint="give a TOML file saved as UTF-8 with --config FILE",
        ) from None
    except tomllib.TOMLDecodeError as exc:
        # TOMLDecodeError names the line and column, never the offending value.
        raise ConfigError(
            "config",
            f"{path} is not valid TOML ({exc})",
            hint='write one `name = value` per line, text in quotes: token_domain = "tokens.example.com"',
        ) from None


_TYPE_WORDS = {
    "str": "text",
    "int": "a whole number",
    "float": "a number",
    "bool": "a boolean",
    "array": "a list",
    "object": "a table",
    "null": "nothing",
}
_GOT = re.compile(r"got `(\w+)`")


def _problem(message: str, annotation: Any) -> str:
    """msgspec's complaint about one value, in words that do not echo the value."""
    got = _GOT.search(message)
    if got:
        return f"is {_TYPE_WORDS.get(got.group(1), got.group(1))}, which this setting does not take"
    if "Invalid enum value" in message:
        return "is not one of the choices"
    if "matching regex" in message:
        return "is not in the expected form"
    if ">=" in message or ">" in message:
        return "is too small"
    if "<=" in message or "<" in message:
        return "is too large"
    if "length" in message:
        return "has the wrong length"
    return "is not valid"


class Sources(dict[str, str]):
    """Where each setting's effective value came from: ``default``, ``file PATH``,
    ``environment SENDVAULT_NAME`` or ``flag --name``."""


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, the TOML file, the environment and ``overrides``.

    ``overrides`` are command-line options (``--https-port``); they win over everything else and
    are checked like the rest. Raises :class:`ConfigError` naming the first bad setting, where its
    value came from and what it accepts.
    """
    return load_settings_with_sources(config_file, env, overrides)[0]


def config_file_for(config_file: Path | None, env: Mapping[str, str]) -> Path | None:
    """The TOML file that applies: ``config_file``, ``$SENDVAULT_CONFIG``, else the home's file."""
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    if config_file is None:
        home = env.get(ENV_PREFIX + "HOME") or Settings.__struct_defaults__[0]
        candidate = Path(home).expanduser() / _CONFIG_FILE_NAME
        config_file = candidate if candidate.is_file() else None
    return config_file


def load_settings_with_sources(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[Settings, Sources]:
    """:func:`load_settings`, plus where each setting's value came from."""
    env = os.environ if env is None else env
    types = _field_types()
    data: dict[str, Any] = {}
    sources = Sources(dict.fromkeys(types, "default"))

    config_file = config_file_for(config_file, env)
    if config_file is not None:
        for name, value in _read_toml(config_file).items():
            if name not in types:
                close = difflib.get_close_matches(name, list(types), n=1)
                raise ConfigError(
                    name,
                    "is not a setting",
                    hint=f"did you mean {close[0]}?" if close else "see docs/configuration.md",
                    source=f"file {config_file}",
                )
            data[name] = value
            sources[name] = f"file {config_file}"
    for name, annotation in types.items():
        variable = ENV_PREFIX + name.upper()
        raw = env.get(variable)
        if raw is not None:
            source = f"environment {variable}"
            try:
                data[name] = _coerce_env(name, raw, annotation)
            except ConfigError as exc:
                raise exc.with_source(source) from None
            sources[name] = source
    for name, value in (overrides or {}).items():
        if value is not None:
            data[name] = value
            sources[name] = f"flag --{name.replace('_', '-')}"

    for name, value in data.items():
        data[name] = _checked(name, value, types[name], sources[name])
    settings = msgspec.convert(data, Settings)
    _check_together(settings, sources)
    return settings, sources


def _checked(name: str, value: Any, annotation: Any, source: str) -> Any:
    """One setting's value converted to its type and checked; ConfigError otherwise."""
    networks = _extra(annotation, "check") is _check_networks
    if networks and isinstance(value, list) and all(isinstance(v, str) for v in value):
        # TOML lets an operator write a list of networks; it means the same as spaces.
        value = " ".join(value)
    if (
        isinstance(value, str)
        and _base_type(annotation) is not str
        and get_origin(_base_type(annotation)) is not Literal
    ):
        value = value.strip()  # "8443 " from a hand-edited environment file is 8443
    try:
        converted = msgspec.convert(value, annotation, strict=False)
    except msgspec.ValidationError as exc:
        problem = _problem(str(exc), annotation)
        if isinstance(_base_type(annotation), type) and issubclass(_base_type(annotation), msgspec.Struct):
            problem = _table_problem(str(exc), name, problem)
        if name == "tls_min_version" and str(value).strip() in ("1", "1.0", "1.1"):
            problem = "is below TLS 1.2, which is refused"
        raise ConfigError(name, problem, allowed=allowed_text(name), source=source) from None
    check = _extra(annotation, "check")
    if check is not None:
        try:
            check(converted)
        except _Bad as bad:
            raise ConfigError(name, str(bad), allowed=allowed_text(name), source=source) from None
    return converted


# SENDVAULT_* variables that are not settings: the config file's path, the scanner's secret,
# the test suite's switches, the new master key or passphrase of `keys rotate kek`.
_NOT_SETTINGS = ("SENDVAULT_SCAN_", "SENDVAULT_TEST_", "SENDVAULT_NEW_")


def unknown_environment(env: Mapping[str, str] | None = None) -> list[str]:
    """One line per ``SENDVAULT_*`` variable that is no setting (a typo is otherwise silently
    ignored), with the setting it probably meant."""
    env = os.environ if env is None else env
    known = {ENV_PREFIX + name.upper() for name in _field_types()} | {ENV_PREFIX + "CONFIG"}
    lines = []
    for variable in sorted(env):
        if not variable.startswith(ENV_PREFIX) or variable in known or variable.startswith(_NOT_SETTINGS):
            continue
        close = difflib.get_close_matches(variable, sorted(known), n=1)
        guess = f" (did you mean {close[0]}?)" if close else ""
        lines.append(f"environment variable {variable} is not a setting and is ignored{guess}")
    return lines


_AT = re.compile(r" - at `\$((?:\.\w+|\[\d+\])*)`")


def _table_problem(message: str, name: str, problem: str) -> str:
    """A problem inside a table setting: where (key names only) and, for the table's own checks, why."""
    where = _AT.search(message)
    at = f"{name}{where.group(1)}" if where else name
    own = message.split(" - at ", 1)[0]
    if not own.startswith(("Expected", "Invalid", "Object missing", "Object contains")):
        problem = own  # a check of the table itself (ExchangeJob, ExchangeSettings): no value in it
    elif own.startswith(("Object missing", "Object contains")):
        problem = own.replace("Object", "table", 1)
    return f"{problem} (at {at})"


def _check_together(settings: Settings, sources: Sources) -> None:
    """Settings that are fine alone but not together."""
    total = len(settings.mobile_token_prefix) + settings.mobile_token_digits
    if total > 15:
        raise ConfigError(
            "mobile_token_digits",
            f"with the prefix makes {total} digits; E.164 (Marketing Cloud's SMS side) allows at most 15",
            allowed=f"at most {15 - len(settings.mobile_token_prefix)} with this prefix, and at least 9",
            source=sources["mobile_token_digits"],
        )
    if settings.mobile_token_style == "keep-country" and not settings.mobile_token_country_codes.strip(" ,+"):
        raise ConfigError(
            "mobile_token_country_codes",
            "is needed when mobile_token_style is keep-country",
            allowed='country calling codes, e.g. "1 44 49"',
            source=sources["mobile_token_country_codes"],
        )
    if settings.tls_client_cert != "none" and not settings.tls_client_ca_file:
        raise ConfigError(
            "tls_client_ca_file",
            f"is needed when tls_client_cert is {settings.tls_client_cert}",
            allowed=_PEM + " of the CAs that issue client certificates",
            hint='set tls_client_ca_file, or tls_client_cert = "none"',
            source=sources["tls_client_cert"],
        )
    _check_database_link(settings, sources)
    ports = {"https_port": settings.https_port, "http_port": settings.http_port}
    if settings.admin_host == settings.host:
        ports["admin_port"] = settings.admin_port
    seen: dict[int, str] = {}
    for name, port in ports.items():
        if port and port in seen:
            raise ConfigError(
                name,
                f"is the same port as {seen[port]} ({port})",
                allowed="a port no other listener of this server uses",
                source=sources[name],
            )
        seen[port] = name


def _check_database_link(settings: Settings, sources: Sources) -> None:
    postgres = settings.database_url.startswith(("postgresql://", "postgres://"))
    if settings.database_read_url and not postgres:
        raise ConfigError(
            "database_read_url",
            "is a PostgreSQL standby, which needs database_url to name the PostgreSQL primary",
            allowed="empty, or a standby of the database_url primary",
            source=sources["database_read_url"],
        )
    tls = ("database_ssl_ca_file", "database_ssl_cert_file", "database_ssl_key_file")
    for name in tls:
        if getattr(settings, name) is not None and not postgres:
            raise ConfigError(
                name,
                "secures a PostgreSQL link, but database_url does not name PostgreSQL",
                hint=f"remove {name}, or set database_url to postgresql://...",
                source=sources[name],
            )
    cert, key = settings.database_ssl_cert_file, settings.database_ssl_key_file
    if (cert is None) != (key is None):
        missing = "database_ssl_key_file" if key is None else "database_ssl_cert_file"
        given = "database_ssl_cert_file" if key is None else "database_ssl_key_file"
        raise ConfigError(
            missing,
            f"is needed when {given} is set (a client certificate goes with its key)",
            allowed=_PEM,
            source=sources[given],
        )


def settings_reference() -> str:
    """Markdown reference of every setting: name, variable, type, default, meaning."""
    schema = msgspec.json.schema(Settings)
    props = schema["$defs"]["Settings"]["properties"]
    lines = [
        "# Configuration reference",
        "",
        "Generated by `python -m sendvault.config`; a test fails when this file is stale.",
        "",
        "Each setting can be given in the TOML file (`--config FILE`, `$SENDVAULT_CONFIG`, or",
        "`$SENDVAULT_HOME/sendvault.toml`) as `name = value`, or in the environment as",
        "`SENDVAULT_NAME`, which wins. A bad value stops start-up with one line naming the setting.",
        "",
        "| setting | environment | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, spec in props.items():
        kind = _schema_type(spec)
        default = spec.get("default")
        shown = (
            "(none)"
            if default is None
            else f"`{str(default).lower() if isinstance(default, bool) else default}`"
        )
        lines.append(
            f"| `{name}` | `{ENV_PREFIX}{name.upper()}` | {kind} | {shown} | {spec.get('description', '')} |"
        )
    for struct, title in (
        ("ExchangeSettings", "`[exchange]`"),
        ("ExchangeRemote", "`[exchange.remotes.NAME]`"),
        ("ExchangeJob", "`[[exchange.schedule]]`"),
    ):
        lines += ["", f"## {title}", "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for name, spec in schema["$defs"][struct]["properties"].items():
            default = spec.get("default")
            shown = (
                "(required)"
                if name in schema["$defs"][struct].get("required", [])
                else ("(none)" if default is None else f"`{default}`")
            )
            lines.append(f"| `{name}` | {_schema_type(spec)} | {shown} | {spec.get('description', '')} |")
    lines.append("")
    return "\n".join(lines)


def _schema_type(spec: dict[str, Any]) -> str:
    if "$ref" in spec:
        return "table"
    if spec.get("type") == "array":
        return f"array of {_schema_type(spec.get('items', {}))}"
    if spec.get("type") == "object" and "additionalProperties" in spec:
        return f"tables of {_schema_type(spec['additionalProperties'])}"
    if "anyOf" in spec:
        return " or ".join(_schema_type(s) for s in spec["anyOf"])
    if "enum" in spec:
        return " / ".join(f"`{v}`" for v in spec["enum"])
    kind = str(spec.get("type", "string"))
    bounds = []
    if "minimum" in spec:
        bounds.append(f">= {spec['minimum']}")
    if "maximum" in spec:
        bounds.append(f"<= {spec['maximum']}")
    return kind + (f" ({', '.join(bounds)})" if bounds else "")


if __name__ == "__main__":  # pragma: no cover - documentation generator
    import sys

    sys.stdout.write(settings_reference())
