"""Open a vault from settings: key provider, store, schema, keys, locked settings."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from ..config import Settings
from ..crypto import BlindIndex, KeyProvider, Keyring
from ..crypto._aead import new_key
from ..crypto.providers import build_provider, kek_files, pending_provider
from ..errors import ConfigError, KeyProviderError
from ..store.base import KeyRecord, Store
from ..store.sqlite import SQLiteStore
from .formats import RandomBelow, TokenFormat, parse_country_codes
from .normalize import Normalizer
from .service import Vault

__all__ = ["open_store", "open_vault"]

_BIDX_KEY_ID = 1
_FIRST_DATA_KEY_ID = 2


def open_store(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    migrate: bool = True,
    upgrade: bool = False,
) -> Store:
    """The store ``database_url`` names, with its schema checked (unless not ``migrate``).

    An empty database gets the current schema; an older one is upgraded only with ``upgrade``
    (``serve --dev``, ``db migrate``), else :class:`~sendvault.errors.SchemaOutdated` says to run
    ``sendvault db migrate``; a newer one is :class:`~sendvault.errors.SchemaTooNew`.
    """
    store: Store
    if settings.database_url.startswith(("postgresql://", "postgres://")):
        from ..store.postgres import PostgresStore, TLSFiles  # noqa: PLC0415 - psycopg is an optional extra

        tls = TLSFiles(
            settings.database_ssl_ca_file, settings.database_ssl_cert_file, settings.database_ssl_key_file
        )
        read_url = settings.database_read_url
        store = PostgresStore(settings.database_url, clock=clock, read_url=read_url, tls=tls)
    else:
        store = SQLiteStore(
            settings.sqlite_path,
            busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            mmap_mb=settings.sqlite_mmap_mb,
            bulk_lock_seconds=settings.sqlite_bulk_lock_seconds,
            clock=clock,
        )
    if not migrate:
        return store
    try:
        store.migrate(upgrade=upgrade)
    except BaseException:
        store.close()
        raise
    return store


def open_vault(
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    rng: RandomBelow = secrets.randbelow,
    upgrade: bool = False,
) -> Vault:
    """A ready vault; creates the data directory, KEK, schema and first keys on first use.

    ``rng`` draws new tokens (tests inject one to force collisions); ``clock`` stamps rows;
    ``upgrade`` migrates an older schema (else it is refused, see :func:`open_store`).
    """
    # The token format is checked first: a configuration that cannot make enough distinct mobile
    # tokens stops start-up before anything is created.
    token_format = TokenFormat(
        settings.token_domain,
        settings.mobile_token_prefix,
        settings.mobile_token_digits,
        mobile_style=settings.mobile_token_style,
        mobile_country_codes=parse_country_codes(settings.mobile_token_country_codes),
        rng=rng,
    )
    home = settings.home_path
    try:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise ConfigError("home", f"the data directory cannot be created ({exc.strerror})") from None
    provider = build_provider(settings)
    store = open_store(settings, clock=clock, upgrade=upgrade)
    try:
        _check_locked_settings(store, settings)
        provider = _finish_kek_rotation(store, provider, settings)
        indexes, keyring = _load_keys(store, provider)
    except BaseException:
        store.close()
        raise
    return Vault(
        store,
        keyring,
        indexes[-1][1],
        normalizer=Normalizer(settings.email_keep_local_case, settings.default_region),
        token_format=token_format,
        key_provider=provider,
        provider_factory=lambda: build_provider(settings),
        clock=clock,
        index_keys=indexes,
    )


def _check_locked_settings(store: Store, settings: Settings) -> None:
    # Normalization decides which blind index a value gets; changing it later would give one
    # address two tokens, so the first value recorded wins and a different one is refused.
    wanted = "true" if settings.email_keep_local_case else "false"
    recorded = store.claim_meta("email_keep_local_case", wanted)
    if recorded != wanted:
        raise ConfigError(
            "email_keep_local_case",
            f"this vault was created with {recorded}; changing it would give one address two tokens",
        )


def _finish_kek_rotation(store: Store, provider: KeyProvider, settings: Settings) -> KeyProvider:
    """The provider that opens the stored keys, finishing a KEK rotation that crashed.

    `keys rotate kek` writes the new KEK file (``*.next``) before it rewraps the keys and renames
    the file after; if it stopped in between, the keys open with one of the two files.
    """
    pending = pending_provider(settings)
    files = kek_files(settings)
    if pending is None or files is None:
        return provider
    keys = store.load_keys()
    if not keys:
        return provider
    probe = keys[0]
    try:
        pending.unwrap(probe.purpose, probe.id, probe.wrapped)
    except KeyProviderError:
        # The rewrap has not committed (or never will): the old file is still the KEK. The new
        # file is left alone: a rotation may be running now, and it writes the file it needs.
        return provider
    files.next.replace(files.current)
    return pending


def _load_keys(store: Store, provider: KeyProvider) -> tuple[list[tuple[int, BlindIndex]], Keyring]:
    def first_keys() -> list[KeyRecord]:
        return [
            KeyRecord(_BIDX_KEY_ID, "bidx", provider.name, provider.wrap("bidx", _BIDX_KEY_ID, new_key())),
            KeyRecord(
                _FIRST_DATA_KEY_ID,
                "data",
                provider.name,
                provider.wrap("data", _FIRST_DATA_KEY_ID, new_key()),
            ),
        ]

    records = store.ensure_keys(first_keys)
    for record in records:
        if record.provider != provider.name:
            raise KeyProviderError(
                f"data key {record.id} is held by key provider {record.provider!r}, "
                f"but {provider.name!r} is configured"
            )
    bidx_keys = [r for r in records if r.purpose == "bidx"]
    if len(bidx_keys) not in (1, 2):
        raise KeyProviderError("the vault must have one blind-index key, or two while it rotates")
    # Two while `keys rotate index` moves the rows: lookups ask for both, new rows carry the newest.
    indexes = [(r.id, BlindIndex(provider.unwrap("bidx", r.id, r.wrapped))) for r in bidx_keys]
    keyring = Keyring(
        (r.id, provider.unwrap("data", r.id, r.wrapped)) for r in records if r.purpose == "data"
    )
    return indexes, keyring
