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

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import urlsplit, urlunsplit

import msgspec

from .errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "load_settings", "settings_reference"]

ENV_PREFIX = "SENDVAULT_"
_CONFIG_FILE_NAME = "sendvault.toml"
# Settings that are secrets: never printed by `config show`, and recommended via env only.
_SECRET_SETTINGS = frozenset({"master_key", "audit_key"})


def _doc(text: str, **constraints: Any) -> msgspec.Meta:
    return msgspec.Meta(description=text, **constraints)


class Settings(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """The validated settings of one sendvault process."""

    home: Annotated[
        str,
        _doc(
            "Data directory: the SQLite database, local key files, certificates. "
            "Relative paths are taken from the working directory."
        ),
    ] = "./.sendvault"
    database_url: Annotated[
        str,
        _doc(
            "Where tokens live. Empty means the embedded SQLite database `$SENDVAULT_HOME/sendvault.db`; "
            "`sqlite:///PATH` names another SQLite file; `postgresql://USER@HOST:PORT/DB` uses PostgreSQL "
            "(needs the `postgres` extra), shared by any number of replicas.",
            pattern=r"^$|^sqlite:///.+|^postgres(ql)?://.+",
        ),
    ] = ""
    key_provider: Annotated[
        Literal["local"],
        _doc(
            "Who holds the key-encryption key. `local`: `SENDVAULT_MASTER_KEY` if set, else the file "
            "`$SENDVAULT_HOME/keys/master.key` (created on first use, mode 0600)."
        ),
    ] = "local"
    master_key: Annotated[
        str | None,
        _doc(
            "Base64 of a 32-byte key-encryption key. Set it in the environment, not in a file others "
            "can read. When unset, the local key file is used."
        ),
    ] = None
    token_domain: Annotated[
        str,
        _doc(
            "Domain of email tokens. Use a domain you own with a null MX (RFC 7505); the default is "
            "under the reserved `.invalid` TLD and suits development only.",
            pattern=r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$",
        ),
    ] = "tokens.sendvault.invalid"
    mobile_token_prefix: Annotated[
        str,
        _doc(
            "Leading digits of every mobile token. The default 999 is a country code the ITU has not "
            "assigned, so a token can never be a subscriber's number.",
            pattern=r"^[0-9]{1,6}$",
        ),
    ] = "999"
    mobile_token_digits: Annotated[
        int,
        _doc(
            "Random digits after the prefix. 29 digits carry 96 bits of entropy, the minimum.",
            ge=29,
            le=40,
        ),
    ] = 29
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
            "spaces, brackets or a leading 0). Digits-only input is always read as E.164 without `+`."
        ),
    ] = None
    sqlite_busy_timeout_ms: Annotated[
        int,
        _doc("How long a SQLite writer waits for another process's write lock.", ge=100, le=600_000),
    ] = 10_000

    sqlite_mmap_mb: Annotated[
        int,
        _doc("Megabytes of the SQLite file read through mmap (0 turns it off).", ge=0, le=1_048_576),
    ] = 1024

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
            "master key: whoever holds it can read audited payloads."
        ),
    ] = None

    # -- server ------------------------------------------------------------------------------
    host: Annotated[str, _doc("Address the HTTPS and HTTP listeners bind to (0.0.0.0 for all).")] = (
        "127.0.0.1"
    )
    https_port: Annotated[int, _doc("HTTPS port of the token API.", ge=1, le=65535)] = 8443
    http_port: Annotated[
        int,
        _doc("Plain HTTP port that answers every request with 308 to HTTPS; 0 turns it off.", ge=0, le=65535),
    ] = 8080
    admin_host: Annotated[str, _doc("Address of the admin listener (Prometheus metrics).")] = "127.0.0.1"
    admin_port: Annotated[int, _doc("Admin listener port; 0 turns it off.", ge=0, le=65535)] = 9464
    workers: Annotated[int, _doc("Worker processes sharing the HTTPS socket and the store.", ge=1, le=64)] = 1
    public_host: Annotated[
        str | None,
        _doc("Host name used in 308 redirects; when unset, the request's Host header (validated) is used."),
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
        _doc("PEM certificate chain of the HTTPS listener (default: `$SENDVAULT_HOME/certs/server.pem`)."),
    ] = None
    tls_key_file: Annotated[
        str | None,
        _doc(
            "PEM private key of the HTTPS listener, mode 0600 (default: `$SENDVAULT_HOME/certs/server.key`)."
        ),
    ] = None
    tls_min_version: Annotated[
        Literal["1.2", "1.3"], _doc("Oldest TLS version accepted. Below 1.2 is refused at start-up.")
    ] = "1.2"
    tls_client_ca_file: Annotated[
        str | None, _doc("PEM CA bundle for client certificates (mutual TLS); set with `tls_client_cert`.")
    ] = None
    tls_client_cert: Annotated[
        Literal["none", "optional", "required"], _doc("Whether callers must present a client certificate.")
    ] = "none"
    allow_cidrs: Annotated[
        str,
        _doc("Server-wide allowlist of caller networks (space-separated CIDRs); empty allows any address."),
    ] = ""
    trusted_proxies: Annotated[
        str,
        _doc(
            "Load balancers whose X-Forwarded-For is believed (space-separated CIDRs); the caller is the "
            "right-most address not in this list."
        ),
    ] = ""
    max_batch: Annotated[int, _doc("Most items in one call; more gets 413.", ge=1, le=100_000)] = 500
    max_body_bytes: Annotated[int, _doc("Largest request body; more gets 413.", ge=1024)] = 4 * 1024 * 1024
    max_inflight: Annotated[
        int, _doc("Requests one worker serves at once; more get 503 with Retry-After.", ge=1)
    ] = 256
    retry_after_seconds: Annotated[int, _doc("Retry-After of 503 answers.", ge=1, le=3600)] = 5
    token_lifetime_seconds: Annotated[int, _doc("Lifetime of OAuth access tokens.", ge=60, le=86_400)] = 3600
    auth_cache_seconds: Annotated[
        float,
        _doc("How long a successful Basic check and a client record are cached per worker.", ge=0, le=600),
    ] = 30.0
    auth_max_failures: Annotated[
        int, _doc("Failed authentications per client id or address before 429.", ge=1)
    ] = 10
    auth_failure_window_seconds: Annotated[int, _doc("Window of `auth_max_failures`.", ge=1)] = 300
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

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked, for `sendvault config show`."""
        out = msgspec.structs.asdict(self)
        for name in _SECRET_SETTINGS:
            if out.get(name) is not None:
                out[name] = "***"
        url = urlsplit(self.database_url)
        if url.password:
            host = url.netloc.rpartition("@")[2]
            out["database_url"] = urlunsplit(url._replace(netloc=f"{url.username}:***@{host}"))
        return out


def _field_types() -> dict[str, Any]:
    return {f.name: f.type for f in msgspec.structs.fields(Settings)}


def _base_type(annotation: Any) -> Any:
    """Strip ``Annotated[...]`` to the type a setting holds."""
    if get_origin(annotation) is Annotated:
        return get_args(annotation)[0]
    return annotation


def _coerce_env(name: str, raw: str, annotation: Any) -> Any:
    """Turn an environment string into the type a setting wants; msgspec checks the rest."""
    kind = _base_type(annotation)
    if kind is bool:
        lowered = raw.strip().lower()
        if lowered in {"1", "true", "yes", "on"}:
            return True
        if lowered in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(name, "expected a boolean (true/false)")
    if raw == "" and type(None) in get_args(kind):
        return None
    return raw


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError("config", f"file not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        # TOMLDecodeError names the line and column, never the offending value.
        raise ConfigError("config", f"{path} is not valid TOML ({exc})") from None


_MSGSPEC_PATH = re.compile(r"at `\$\.(\w+)")
_QUOTED = re.compile(r"'[^']*'")


def load_settings(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build :class:`Settings` from defaults, the TOML file, the environment and ``overrides``.

    ``overrides`` are command-line options (``--https-port``); they win over everything else and
    are checked like the rest. Raises :class:`ConfigError` naming the first bad setting.
    """
    env = os.environ if env is None else env
    types = _field_types()
    data: dict[str, Any] = {}

    home = env.get(ENV_PREFIX + "HOME") or Settings.__struct_defaults__[0]
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    if config_file is None:
        candidate = Path(home).expanduser() / _CONFIG_FILE_NAME
        config_file = candidate if candidate.is_file() else None
    if config_file is not None:
        data.update(_read_toml(config_file))

    for name, annotation in types.items():
        raw = env.get(ENV_PREFIX + name.upper())
        if raw is not None:
            data[name] = _coerce_env(name, raw, annotation)
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return msgspec.convert(data, Settings, strict=False)
    except msgspec.ValidationError as exc:
        message = str(exc)
        match = _MSGSPEC_PATH.search(message)
        if match:
            setting = match.group(1)
            problem = message.split(" - at ", 1)[0]
        else:
            setting, problem = "config", message
        # msgspec quotes rejected enum values; drop every quoted part so no value is echoed.
        problem = _QUOTED.sub("", problem).strip()
        allowed = _allowed_values(types.get(setting))
        if setting == "tls_min_version" and str(data.get(setting, "")).strip() in ("1", "1.0", "1.1"):
            problem = "TLS below 1.2 is refused"
        if allowed:
            # The allowed values are part of the documentation, never the caller's data.
            problem += f" (allowed: {', '.join(allowed)})"
        raise ConfigError(setting, problem) from None


def _allowed_values(annotation: Any) -> list[str]:
    """The choices of a ``Literal`` setting (also inside ``Optional``), else nothing."""
    kind = _base_type(annotation)
    if get_origin(kind) is Literal:
        return [str(v) for v in get_args(kind)]
    for arm in get_args(kind) if get_origin(kind) in (Union, UnionType) else ():
        if get_origin(arm) is Literal:
            return [str(v) for v in get_args(arm)]
    return []


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
    lines.append("")
    return "\n".join(lines)


def _schema_type(spec: dict[str, Any]) -> str:
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
