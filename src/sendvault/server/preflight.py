"""The checks start-up runs, and ``sendvault config check`` runs the very same ones.

One list of checks: the data directory, the certificate and its key, the key-encryption key and
the audit keys, the database (reachable, schema, keys that open, settings fixed at creation,
API clients), the audit log's signed head, and the ports. Each yields :class:`Finding` lines;
an ``error`` finding carries the exception start-up raises. The checks only read: what a first
start creates (the database, key files) is reported as a ``note``, and ``serve`` creates it
after the checks pass.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import urlsplit

from ..config import Settings
from ..errors import ConfigError, KeyProviderError, KeyProviderUnavailable, SendvaultError, StoreError
from ..store.migrations import check_upgrade

if TYPE_CHECKING:
    from ..crypto.keys import KeyProvider
    from ..store.base import Store, StoreFacts

__all__ = [
    "Finding",
    "bind",
    "database_label",
    "open_keys",
    "open_store_for_reading",
    "preflight",
    "read_kek",
    "run_checks",
]

Level = Literal["ok", "note", "warning", "error"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of a check's report; ``error`` holds what start-up raises for it."""

    check: str
    level: Level
    message: str
    error: SendvaultError | None = field(default=None, compare=False)


def bind(host: str, port: int, setting: str = "https_port") -> socket.socket:
    """A listening TCP socket (IPv6 when ``host`` is an IPv6 address); ``setting`` names the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = (
            "another process listens there (`ss -ltnp` names it); if it is this sendvault, running, "
            "`config check --no-ports` skips this check"
            if exc.errno in (98, 48)  # EADDRINUSE on Linux, macOS
            else "ports below 1024 need root or CAP_NET_BIND_SERVICE (see docs/operations.md)"
            if exc.errno == 13
            else None
        )
        raise ConfigError(
            setting,
            f"cannot listen on {host}:{port} ({exc.strerror})",
            allowed="a port no other process listens on (0 turns an optional listener off)",
            hint=hint,
        ) from None
    except (socket.gaierror, OverflowError, UnicodeError) as exc:
        sock.close()
        host_setting = "admin_host" if setting == "admin_port" else "host"
        raise ConfigError(host_setting, f"cannot bind to {host} ({exc})") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


# -- the checks ------------------------------------------------------------------------------


def _error(check: str, exc: SendvaultError) -> Finding:
    return Finding(check, "error", str(exc), exc)


def _environment() -> Iterator[Finding]:
    from ..config import unknown_environment  # noqa: PLC0415

    for line in unknown_environment():
        yield Finding("settings", "warning", line)


def _bulk_lock(settings: Settings) -> Iterator[Finding]:
    warning = settings.bulk_lock_warning()
    if warning is not None:
        yield Finding("settings", "warning", warning)


def _data_directory(settings: Settings, _dev: bool) -> Iterator[Finding]:
    home = settings.home_path
    if home.exists():
        if not home.is_dir():
            yield _error("data directory", ConfigError("home", f"{home} is not a directory"))
        elif not os.access(home, os.W_OK | os.X_OK):
            yield _error("data directory", ConfigError("home", f"{home} is not writable by this user"))
        else:
            yield Finding("data directory", "ok", str(home))
        return
    parent = home.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        yield _error(
            "data directory",
            ConfigError("home", f"{home} does not exist and {parent} is not writable by this user"),
        )
    else:
        yield Finding("data directory", "note", f"{home} will be created (mode 0700)")


def _token_shapes(settings: Settings) -> Iterator[Finding]:
    # Start-up refuses mobile token shapes with fewer than 10^9 tokens, and keep-country codes
    # without that many unassigned numbers (phonenumbers decides, so it cannot be a parser check).
    from ..vault.formats import TokenFormat, parse_country_codes  # noqa: PLC0415 - phonenumbers

    try:
        shape = TokenFormat(
            settings.token_domain,
            settings.mobile_token_prefix,
            settings.mobile_token_digits,
            mobile_style=settings.mobile_token_style,
            mobile_country_codes=parse_country_codes(settings.mobile_token_country_codes),
        )
    except ConfigError as exc:
        yield _error("token shapes", exc)
        return
    kept = f"; keep country for {' '.join(shape.keeps_country)}" if shape.keeps_country else ""
    yield Finding(
        "token shapes",
        "ok",
        f"mobile {shape.mobile_prefix} + {shape.mobile_digits} random digits{kept}",
    )


def _certificate(settings: Settings, dev: bool) -> Iterator[Finding]:
    from .certfile import read_certificate  # noqa: PLC0415 - cryptography's x509 loads only here
    from .tls import server_context  # noqa: PLC0415

    default_files = settings.tls_cert_file is None
    if dev and default_files and not (settings.cert_path.exists() and settings.key_path.exists()):
        yield Finding("certificate", "note", "serve --dev issues one for localhost from the local CA")
        return
    try:
        facts = read_certificate(settings.cert_path, settings.key_path)
        # The TLS policy itself (versions, ciphers, client CA) as the listener will load it.
        server_context(
            settings.cert_path,
            settings.key_path,
            min_version=settings.tls_min_version,
            client_ca_file=Path(settings.tls_client_ca_file) if settings.tls_client_ca_file else None,
            client_cert=settings.tls_client_cert,
        )
    except ConfigError as exc:
        yield _error("certificate", exc)
        return
    days = facts.seconds_left() / 86400
    yield Finding(
        "certificate",
        "ok",
        f"{facts.path}: {facts.subject} (names {', '.join(facts.names) or 'none'}), issued by "
        f"{facts.issuer}, expires {facts.not_after:%Y-%m-%d} ({days:.0f} days)",
    )
    if days < 0:
        yield Finding("certificate", "warning", "has EXPIRED: callers refuse it; install a renewed one")
    elif (problem := facts.validity_problem()) is not None:
        yield Finding("certificate", "warning", f"{problem}: callers refuse it until then")
    elif days < settings.cert_warn_days:
        yield Finding(
            "certificate", "warning", f"expires in {days:.1f} days (cert_warn_days {settings.cert_warn_days})"
        )
    if facts.self_issued and not dev:
        yield Finding(
            "certificate",
            "warning",
            "is issued by the local CA, which Marketing Cloud does not trust; use a public CA's "
            "certificate in production (docs/operations.md)",
        )
    if settings.public_host and facts.names and settings.public_host not in facts.names:
        wildcard = "*." + settings.public_host.split(".", 1)[-1]
        if wildcard not in facts.names:
            yield Finding("certificate", "warning", f"does not name public_host {settings.public_host}")


@dataclass(slots=True)
class _State:
    """What one check learns for the next ones."""

    provider: KeyProvider | None = None
    kek_file_missing: Path | None = None
    facts: StoreFacts | None = None
    store: Store | None = None


def _key_file(path: Path, setting: str) -> bytes | None:
    """The key in an existing key file (mode and format checked), or None when there is none."""
    from ..crypto.keys import load_key  # noqa: PLC0415

    if not path.exists():
        return None
    return load_key(path, None, setting)


def read_kek(settings: Settings) -> KeyProvider | None:
    """The key provider the vault would use (never creating a KEK file), or None without one."""
    from ..crypto.providers import read_provider  # noqa: PLC0415

    return read_provider(settings)


def _keys(settings: Settings, state: _State) -> Iterator[Finding]:  # noqa: PLR0912 - a branch per provider
    from ..crypto.keys import load_key  # noqa: PLC0415

    home = settings.home_path
    parts = []
    try:
        if settings.key_provider == "transit":
            state.provider = read_kek(settings)
            parts.append(f"master key in transit key {settings.transit_key!r} at {settings.transit_url}")
        elif settings.key_provider == "sealed":
            path = home / "keys" / "master.sealed"
            state.provider = read_kek(settings)
            if state.provider is None:
                state.kek_file_missing = path
                parts.append(f"sealed master key {path} will be created")
            else:
                parts.append(f"sealed master key {path}")
        elif settings.master_key is not None:
            state.provider = read_kek(settings)
            parts.append("master key given in master_key (SENDVAULT_MASTER_KEY)")
        else:
            path = home / "keys" / "master.key"
            if path.exists():
                _key_file(path, "master_key")
            state.provider = read_kek(settings)
            if state.provider is None:
                state.kek_file_missing = path
                parts.append(f"master key {path} will be created")
            else:
                parts.append(f"master key {path}")
        if settings.audit == "on":
            if settings.audit_key is not None:
                load_key(home / "keys" / "audit.key", settings.audit_key, "audit_key")
                parts.append("audit key given in audit_key (SENDVAULT_AUDIT_KEY)")
            else:
                path = home / "keys" / "audit.key"
                parts.append(
                    f"audit key {path}" + ("" if _key_file(path, "audit_key") else " will be created")
                )
    except SendvaultError as exc:
        yield _error("keys", exc)
        return
    yield Finding("keys", "ok" if state.provider is not None else "note", "; ".join(parts))


def open_store_for_reading(settings: Settings) -> Store | None:
    """The configured store for reading, or None when its SQLite file does not exist yet."""
    from ..vault.factory import open_store  # noqa: PLC0415

    if not settings.database_url.startswith(("postgresql://", "postgres://")):
        path = settings.sqlite_path
        if not path.exists():
            return None
    return open_store(settings, migrate=False)


def _database(settings: Settings, state: _State, dev: bool) -> Iterator[Finding]:  # noqa: PLR0912
    where = database_label(settings)
    try:
        store = open_store_for_reading(settings)
        if store is None:
            yield Finding("database", "note", f"{where} will be created")
            if not dev:
                yield _no_clients()
            return
        state.store = store
        facts = state.facts = store.describe()
    except StoreError as exc:
        yield _error("database", _unreachable(settings, exc))
        return
    except ConfigError as exc:  # the database link's TLS files, checked before connecting
        yield _error("database", exc)
        return
    try:
        check_upgrade(where, facts.schema, facts.latest_schema, upgrade=dev)
    except StoreError as exc:
        yield _error("database", exc)
        return
    schema = (
        f"schema {facts.schema}"
        if facts.schema == facts.latest_schema
        else f"schema {facts.schema}, migrated to {facts.latest_schema} at start (dev mode)"
        if facts.schema
        else "empty, set up at start"
    )
    recorded = facts.meta.get("email_keep_local_case")
    wanted = "true" if settings.email_keep_local_case else "false"
    if recorded is not None and recorded != wanted:
        yield _error(
            "database",
            ConfigError(
                "email_keep_local_case",
                f"this vault was created with {recorded}; changing it would give one address two tokens",
                allowed=recorded,
            ),
        )
        return
    opened = 0
    if facts.keys:
        if state.provider is None and state.kek_file_missing is None:
            pass  # the key check has already said why the master key does not load
        elif state.provider is None:
            yield _error(
                "keys",
                KeyProviderError(
                    f"the vault holds data keys but {state.kek_file_missing} is missing: restore it "
                    "from backup, or set SENDVAULT_MASTER_KEY"
                ),
            )
            return
        else:
            try:
                opened = open_keys(facts, state.provider, settings)
            except KeyProviderError as exc:
                yield _error("keys", exc)
                return
    keys = (
        f"{opened} data key(s) open with the master key"
        if opened
        else "data keys not opened (see keys)"
        if facts.keys
        else "data keys are made at first start"
    )
    yield Finding("database", "ok", f"{where}: {schema}; {keys}")
    yield from _standby(settings, store)
    if not dev:
        try:
            count = len(store.list_clients()) if facts.schema >= 2 else 0
        except StoreError as exc:
            yield _error("database", exc)
            return
        yield Finding("clients", "ok", f"{count} API client(s)") if count else _no_clients()


def _standby(settings: Settings, store: Store) -> Iterator[Finding]:
    """The read standby: a warning, not an error, when it does not answer (reads then go to the
    primary, and to the standby once it answers)."""
    if not settings.database_read_url:
        return
    from ..store.postgres import PostgresStore  # noqa: PLC0415 - psycopg is an optional extra

    if not isinstance(store, PostgresStore):
        return
    url = urlsplit(settings.database_read_url)
    where = f"standby {url.hostname or 'localhost'}:{url.port or 5432}"
    answers, said = store.check_standby()
    if answers:
        yield Finding("database", "ok", f"{where} {said}: resolve reads go to it")
    else:
        yield Finding(
            "database", "warning", f"{where} {said}; resolve reads go to the primary until it answers"
        )


def open_keys(facts: StoreFacts, provider: KeyProvider | None, settings: Settings | None = None) -> int:
    """Unwrap every stored data key with the configured provider; the number opened.

    A KEK rotation interrupted after its rewrap (the new KEK still in ``*.next``) counts as
    opened: the vault finishes it at start.
    """
    from ..crypto.providers import pending_provider  # noqa: PLC0415

    if not facts.keys:
        return 0
    if provider is None:
        raise KeyProviderError("the vault holds data keys but no master key is configured or on disk")
    try:
        _unwrap_all(facts, provider)
    except KeyProviderError as exc:
        if isinstance(exc, KeyProviderUnavailable) or settings is None:
            raise
        pending = pending_provider(settings)
        if pending is None:
            raise
        _unwrap_all(facts, pending)
    return len(facts.keys)


def _unwrap_all(facts: StoreFacts, provider: KeyProvider) -> None:
    for key in facts.keys:
        if key.provider != provider.name:
            raise KeyProviderError(
                f"data key {key.id} is held by key provider {key.provider!r}, "
                f"but {provider.name!r} is configured"
            )
        provider.unwrap(key.purpose, key.id, key.wrapped)


def _no_clients() -> Finding:
    return _error(
        "clients",
        ConfigError(
            "clients",
            "no API clients are configured",
            hint="add one with: sendvault clients add NAME (or run serve --dev)",
        ),
    )


def database_label(settings: Settings) -> str:
    if settings.database_url.startswith(("postgresql://", "postgres://")):
        url = urlsplit(settings.database_url)
        return f"PostgreSQL {url.hostname or 'localhost'}:{url.port or 5432}{url.path or ''}"
    return f"SQLite {settings.sqlite_path}"


def _unreachable(settings: Settings, exc: StoreError) -> SendvaultError:
    if settings.database_url.startswith(("postgresql://", "postgres://")):
        return ConfigError(
            "database_url",
            str(exc),
            hint="check that PostgreSQL runs and that the URL's host, port, user and database are right "
            "(psql with the same URL tells the same)",
        )
    return ConfigError(
        "database_url" if settings.database_url else "home", f"{database_label(settings)}: {exc}"
    )


def _audit(settings: Settings, dev: bool) -> Iterator[Finding]:
    if settings.audit == "off":
        yield Finding("audit log", "warning", "audit is off: API calls are not recorded")
        return
    from ..audit import (  # noqa: PLC0415
        ChainBroken,
        open_audit_reader,
        signed_head,
        signing_key_warning,
        writer_public_key,
    )

    path = settings.home_path / "audit.db"
    try:
        key = writer_public_key(settings)
    except SendvaultError as exc:
        yield _error("audit log", exc)
        return
    if not dev and (warning := signing_key_warning(settings)) is not None:
        yield Finding("audit log", "warning", warning)
    if not path.exists():
        yield Finding("audit log", "note", f"{path} will be created")
        return
    if key is None:
        yield _error(
            "audit log",
            KeyProviderError(
                f"{path} exists but the audit signing key keys/audit-signing.key is missing: restore the "
                "keys directory from backup"
            ),
        )
        return
    try:
        store = open_audit_reader(settings, key)  # read-only: a check never writes
    except SendvaultError as exc:
        yield _error("audit log", exc)
        return
    try:
        head = signed_head(store)
    except ChainBroken as broken:
        yield Finding(
            "audit log",
            "warning",
            f"signed head does not verify ({broken.reason}): run sendvault audit verify",
        )
        return
    except Exception as exc:  # noqa: BLE001 - an unreadable log is reported, not raised
        yield _error("audit log", StoreError(f"{path} cannot be read ({type(exc).__name__})"))
        return
    finally:
        store.close()
    when = dt.datetime.fromtimestamp(head.ts_us / 1e6, dt.UTC)
    yield Finding(
        "audit log", "ok", f"{path}: signed head at record {head.seq}, written {when:%Y-%m-%d %H:%M}Z"
    )


def _ports(settings: Settings) -> Iterator[Finding]:
    wanted = [(settings.host, settings.https_port, "https_port")]
    if settings.http_port:
        wanted.append((settings.host, settings.http_port, "http_port"))
    if settings.admin_port:
        wanted.append((settings.admin_host, settings.admin_port, "admin_port"))
    free = []
    for host, port, setting in wanted:
        try:
            bind(host, port, setting).close()
        except ConfigError as exc:
            yield _error("ports", exc)
            continue
        free.append(f"{host}:{port}")
    if free:
        yield Finding("ports", "ok", f"free: {', '.join(free)}")


def run_checks(
    settings: Settings, *, dev: bool = False, ports: bool = True
) -> Generator[Finding, None, None]:
    """Every start-up check, in order; later checks build on what earlier ones found."""
    state = _State()
    steps: list[Callable[[], Iterator[Finding]]] = [
        lambda: _data_directory(settings, dev),
        _environment,
        lambda: _bulk_lock(settings),
        lambda: _token_shapes(settings),
        lambda: _certificate(settings, dev),
        lambda: _keys(settings, state),
        lambda: _database(settings, state, dev),
        lambda: _audit(settings, dev),
    ]
    if ports:
        steps.append(lambda: _ports(settings))
    try:
        for step in steps:
            failed = False
            for finding in step():
                failed = failed or finding.level == "error"
                yield finding
            if failed and step is steps[0]:
                return  # everything else lives in the data directory: one error, not five
    finally:
        if state.store is not None:
            state.store.close()


def preflight(settings: Settings, *, dev: bool) -> list[Finding]:
    """Run the start-up checks (not the ports: serve binds them next); raise the first error.

    Returns the warnings and notes, for the start-up log.
    """
    said = []
    with contextlib.closing(run_checks(settings, dev=dev, ports=False)) as findings:
        for finding in findings:
            if finding.error is not None:
                raise finding.error
            if finding.level in ("warning", "note"):
                said.append(finding)
    return said
