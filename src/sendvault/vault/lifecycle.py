"""The key lifecycle: status, KEK rotation, online re-encryption, retirement.

Data keys rotate without a single token changing: a token's row keeps its token, its blind
index and its kind; only the ciphertexts of its value and attributes are opened and sealed again
under the newest data key, in batches, each batch one short transaction that records how far
the run got (``reencrypt:cursor`` in the vault's meta table). A run that is killed resumes from
there; a row changed by someone else since it was read (attributes set meanwhile) is skipped and
picked up by the next pass. A run is complete when one full pass over the table finds no row
left under an older key; only then may the older keys be retired.

The blind-index key rotates the same way (``keys rotate index``): each row names the index key
its ``bidx`` was computed under; while two index keys exist, every lookup asks for both (one
query), new rows carry the new one, and :func:`reindex` moves the rows in batches (open the
value, compute its index under the new key, swap it in only where the row still holds the old
one; ``reindex:cursor`` records how far). When one full pass finds no row left under the old
index key, the run retires that key itself, in the same guarded transaction as ``keys retire``.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..crypto import CIPHERTEXT_VERSION, KeyProvider, LocalKeyProvider
from ..crypto._aead import new_key
from ..crypto.keys import load_key
from ..crypto.providers import (
    SealedKeyProvider,
    TransitKeyProvider,
    kek_files,
    passphrase,
    seal_kek,
)
from ..errors import ConfigError, CryptoError, KeyProviderError, StaleKeys
from .service import Vault

__all__ = [
    "REENCRYPT_CURSOR",
    "REENCRYPT_DONE",
    "REINDEX_CURSOR",
    "REINDEX_DONE",
    "BackgroundReencryption",
    "ReencryptReport",
    "ReindexReport",
    "key_status",
    "reencrypt",
    "reindex",
    "retire_key",
    "rotate_kek",
]

REENCRYPT_CURSOR = "reencrypt:cursor"
REENCRYPT_DONE = "reencrypt:done"
REINDEX_CURSOR = "reindex:cursor"
REINDEX_DONE = "reindex:done"
_HEADER = struct.Struct(">BI")


@dataclass(slots=True)
class ReencryptReport:
    """What one re-encryption run did."""

    key_id: int
    changed: int = 0
    unreadable: int = 0
    passes: int = 0
    complete: bool = False
    seconds: float = 0.0


def _cursor(vault: Vault, key_id: int) -> str:
    """Where an earlier run for ``key_id`` stopped ("" to start at the first token)."""
    recorded = vault.store.get_meta(REENCRYPT_CURSOR) or ""
    owner, sep, token = recorded.partition(":")
    return token if sep and owner == str(key_id) else ""


def stale_rows(vault: Vault) -> int:
    """Live rows with a ciphertext under a data key older than the current one (a full read)."""
    current = vault.keyring.current_key_id
    return sum(n for key_id, n in vault.store.key_usage().items() if key_id != current)


def reencrypt(
    vault: Vault,
    *,
    batch_rows: int = 1000,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    pause: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ReencryptReport:
    """Move every live row to the current data key, batch by batch, resuming a killed run.

    ``progress`` receives the rows changed by each batch; ``pause`` the seconds a batch took
    (the server's background run sleeps there to leave the API its share); ``should_stop``
    ends the run between batches (it resumes from the recorded cursor next time).
    """
    started = clock()
    vault.refresh_keys()
    store = vault.store
    key_id = vault.keyring.current_key_id
    header = _HEADER.pack(CIPHERTEXT_VERSION, key_id)
    report = ReencryptReport(key_id)
    after = _cursor(vault, key_id)
    full_pass = after == ""
    found_in_pass = unreadable_in_pass = 0
    while True:
        if should_stop is not None and should_stop():
            break
        began = clock()
        rows = store.scan_stale(after, header, batch_rows)
        if not rows:
            report.passes += 1
            if full_pass and found_in_pass == 0:
                # The last pass saw every row: what did not open then is what is left unreadable.
                report.unreadable = unreadable_in_pass
                report.complete = True
                store.set_meta(REENCRYPT_DONE, str(key_id))
                break
            # Rows written under an older key behind the cursor (by a process that had not yet
            # loaded the new key) are found by one more pass from the start.
            after, full_pass, found_in_pass, unreadable_in_pass = "", True, 0, 0
            continue
        items, unreadable = vault.reseal(rows)
        try:
            changed = store.replace_ciphertexts(items, (REENCRYPT_CURSOR, f"{key_id}:{rows[-1][0]}"))
        except StaleKeys:
            vault.refresh_keys()
            continue
        unreadable_in_pass += unreadable
        after = rows[-1][0]
        found_in_pass += len(items)
        report.changed += changed
        if progress is not None:
            progress(changed)
        if pause is not None:
            pause(clock() - began)
    report.seconds = clock() - started
    return report


@dataclass(slots=True)
class ReindexReport:
    """What one re-indexing run did (``key_id``: the new blind-index key)."""

    key_id: int
    changed: int = 0
    unreadable: int = 0
    passes: int = 0
    complete: bool = False
    retired: list[int] = field(default_factory=list)
    seconds: float = 0.0


def unindexed_rows(vault: Vault) -> int:
    """Live rows whose blind index is under an older blind-index key (a full read)."""
    current = vault.index_key_ids[-1]
    return sum(n for key_id, n in vault.store.index_usage().items() if key_id != current)


def reindex(
    vault: Vault,
    *,
    batch_rows: int = 1000,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    pause: Callable[[float], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> ReindexReport:
    """Move every live row to the newest blind-index key, batch by batch, resuming a killed run;
    when a full pass finds none left under the old key, retire it (see the module docstring).

    Same batches, cursor and callbacks as :func:`reencrypt`. A vault with one index key has
    nothing to move: the report is complete at once.
    """
    started = clock()
    vault.refresh_keys()
    store = vault.store
    ids = vault.index_key_ids
    key_id = ids[-1]
    report = ReindexReport(key_id)
    if len(ids) == 1:
        report.complete = True
        return report
    recorded = store.get_meta(REINDEX_CURSOR) or ""
    owner, sep, token = recorded.partition(":")
    after = token if sep and owner == str(key_id) else ""
    full_pass = after == ""
    found_in_pass = unreadable_in_pass = 0
    while True:
        if should_stop is not None and should_stop():
            break
        began = clock()
        rows = store.scan_unindexed(after, key_id, batch_rows)
        if not rows:
            report.passes += 1
            if full_pass and found_in_pass == 0:
                report.unreadable = unreadable_in_pass
                report.complete = True
                for old in ids[:-1]:
                    # Counted again inside the retiring transaction: kept if any row still uses it.
                    if store.retire_key(old) == 0:
                        report.retired.append(old)
                # The server's background run stops here until the next rotation (a key kept
                # for unreadable rows is the operator's to look at, not a loop's).
                store.set_meta(REINDEX_DONE, str(key_id))
                vault.refresh_keys()
                break
            # New rows always carry the new key (the store refuses any other), so a second pass
            # finds only rows that did not open, or that a resumed run had not seen.
            after, full_pass, found_in_pass, unreadable_in_pass = "", True, 0, 0
            continue
        items, unreadable = vault.reindex(rows)
        try:
            changed = store.replace_indexes(items, key_id, (REINDEX_CURSOR, f"{key_id}:{rows[-1][0]}"))
        except StaleKeys:
            vault.refresh_keys()
            if vault.index_key_ids[-1] != key_id:
                break  # another index rotation finished meanwhile; nothing of ours to move
            continue
        unreadable_in_pass += unreadable
        after = rows[-1][0]
        found_in_pass += len(items)
        report.changed += changed
        if progress is not None:
            progress(changed)
        if pause is not None:
            pause(clock() - began)
    report.seconds = clock() - started
    return report


def rotate_index_key(vault: Vault) -> int:
    """Add a new blind-index key (refused while an earlier rotation still has rows to move)."""
    vault.refresh_keys()
    if len(vault.index_key_ids) > 1:
        raise CryptoError(
            f"blind-index key {vault.index_key_ids[-1]} is still being moved to; "
            "finish it first: sendvault keys reencrypt"
        )
    return vault.rotate_index_key()


def retire_key(vault: Vault, key_id: int) -> int:
    """Destroy data key ``key_id`` when no row uses it; the rows still using it (0: destroyed)."""
    return vault.store.retire_key(key_id)


class BackgroundReencryption:
    """The server's re-encryption: whenever the current data key has rows left under older keys,
    move them in the background, working ``share`` of the time (the rest is the API's)."""

    def __init__(
        self, vault: Vault, *, share: float = 0.5, batch_rows: int = 5000, poll_seconds: float = 5.0
    ) -> None:
        self._vault = vault
        self._share = share
        self._batch = batch_rows
        self._poll = poll_seconds
        self._stop = threading.Event()
        self.last: ReencryptReport | None = None
        self.last_index: ReindexReport | None = None
        # What the server audits of its own key work (key:reencrypt, key:retire), if anything.
        self.on_index_done: Callable[[ReindexReport], None] | None = None
        self._thread = threading.Thread(target=self._run, name="sendvault-reencrypt", daemon=True)

    def start(self) -> BackgroundReencryption:
        """Start the thread; returns self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop after the current batch (the cursor is recorded; the next start resumes)."""
        self._stop.set()
        self._thread.join(timeout=60)

    def _sleep(self, busy: float) -> None:
        self._stop.wait(busy * (1 - self._share) / self._share)

    def _run(self) -> None:
        import logging  # noqa: PLC0415

        log = logging.getLogger("sendvault.keys")
        failing = False
        while not self._stop.is_set():
            try:
                self._vault.refresh_keys()
                current = self._vault.keyring.current_key_id
                reencrypted_under = self._vault.store.get_meta(REENCRYPT_DONE)
                if reencrypted_under != str(current):
                    self.last = reencrypt(
                        self._vault, batch_rows=self._batch, should_stop=self._stop.is_set, pause=self._sleep
                    )
                    if self.last.complete:
                        # A store's first pass that moved nothing (a new store's first start) is
                        # not news; after a rotation the line says the old key can be retired.
                        news = self.last.changed or reencrypted_under is not None
                        log.log(
                            logging.INFO if news else logging.DEBUG,
                            "re-encryption under data key %d complete: %d rows moved",
                            current,
                            self.last.changed,
                            extra={
                                "fields": {"event": "reencrypt", "key_id": current, "rows": self.last.changed}
                            },
                        )
                index_keys = self._vault.index_key_ids
                if (
                    len(index_keys) > 1
                    and not self._stop.is_set()
                    and self._vault.store.get_meta(REINDEX_DONE) != str(index_keys[-1])
                ):
                    self.last_index = reindex(
                        self._vault, batch_rows=self._batch, should_stop=self._stop.is_set, pause=self._sleep
                    )
                    if self.last_index.complete:
                        done = self.last_index
                        log.info(
                            "re-indexing under blind-index key %d complete: %d rows moved, retired %s",
                            done.key_id,
                            done.changed,
                            done.retired or "none",
                            extra={
                                "fields": {
                                    "event": "reindex",
                                    "key_id": done.key_id,
                                    "rows": done.changed,
                                    "retired": done.retired,
                                }
                            },
                        )
                        if self.on_index_done is not None:
                            self.on_index_done(done)
                failing = False
            except Exception as exc:  # noqa: BLE001 - a background job reports and tries again later
                if not failing:
                    log.warning("background re-encryption paused: %s", exc)
                failing = True
            self._stop.wait(self._poll)


# -- KEK ---------------------------------------------------------------------------------------


def _write_private(path: Path, content: bytes) -> None:
    """Write a secret file with mode 0600, whole or not at all (temporary file, then rename)."""
    temp = path.with_name(path.name + ".tmp")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(content)
        fh.flush()
        os.fsync(fh.fileno())
    temp.replace(path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _meta_keys(vault: Vault) -> dict[str, str]:
    """Shared secrets kept wrapped in the meta table (``key:jwt`` ...): a KEK rotation rewraps them."""
    return {k: v for k, v in vault.store.describe().meta.items() if k.startswith("key:")}


def rotate_kek(settings: Settings, vault: Vault, *, new_master_key: str | None = None) -> dict[str, Any]:
    """Rewrap every data key (and shared secret) under a new KEK; no row is touched.

    ``transit``: OpenBao/Vault rewraps each key under its newest key version (rotate the key on
    the OpenBao side first). ``local`` and ``sealed`` files: a new random KEK replaces the file.
    ``local`` with ``master_key`` set: the new KEK is ``new_master_key`` (from
    ``SENDVAULT_NEW_MASTER_KEY``), and the operator then moves it into ``SENDVAULT_MASTER_KEY``.
    """
    provider = vault.provider
    if provider is None:
        raise CryptoError("this vault was opened without a key provider")
    keys = vault.store.load_keys()
    meta = _meta_keys(vault)
    if isinstance(provider, TransitKeyProvider):
        items = [(k.id, k.wrapped, provider.name, provider.rewrap(k.wrapped)) for k in keys]
        meta_items = [
            (name, old, base64.b64encode(provider.rewrap(base64.b64decode(old))).decode())
            for name, old in meta.items()
        ]
        vault.store.rewrap_keys(items, meta_items)
        latest = provider.client.read_key(provider.key).latest_version
        return {
            "provider": "transit",
            "rewrapped": len(items) + len(meta_items),
            "kek": f"{provider.key} v{latest}",
        }

    files = kek_files(settings)
    if files is None:
        if new_master_key is None:
            raise ConfigError(
                "master_key",
                "is given in the environment, so the new KEK must be too",
                hint="set SENDVAULT_NEW_MASTER_KEY to a new key (openssl rand -base64 32) and run again",
            )
        new_kek = load_key(
            settings.home_path / "keys" / "master.key", new_master_key, "SENDVAULT_NEW_MASTER_KEY"
        )
    else:
        new_kek = new_key()
    new_provider: LocalKeyProvider = (
        SealedKeyProvider(new_kek) if settings.key_provider == "sealed" else LocalKeyProvider(new_kek)
    )
    items = [
        (
            k.id,
            k.wrapped,
            new_provider.name,
            new_provider.wrap(k.purpose, k.id, provider.unwrap(k.purpose, k.id, k.wrapped)),
        )
        for k in keys
    ]
    meta_items = []
    for name, old in meta.items():
        purpose = name.removeprefix("key:")
        raw = provider.unwrap(purpose, 0, base64.b64decode(old))
        meta_items.append((name, old, base64.b64encode(new_provider.wrap(purpose, 0, raw)).decode()))
    content = b""
    if files is not None:
        if settings.key_provider == "sealed":
            new_secret = os.environ.get("SENDVAULT_NEW_MASTER_PASSPHRASE") or passphrase(settings)
            if len(new_secret) < 12:
                # The settings refuse a master_passphrase this short: sealing under it would lock
                # the vault out for good. Refused before anything is written.
                raise ConfigError(
                    "master_passphrase",
                    "is shorter than 12 characters",
                    allowed="any text of 12 characters or more",
                    source="environment SENDVAULT_NEW_MASTER_PASSPHRASE",
                )
            content = seal_kek(new_kek, new_secret)
        else:
            content = base64.b64encode(new_kek) + b"\n"
        # First the new KEK on disk, then the rewrap: a crash between leaves a file that opens
        # the keys (the vault finishes the rename at its next start), never keys without a KEK.
        _write_private(files.next, content)
    vault.store.rewrap_keys(items, meta_items)
    if files is not None:
        _write_private(files.current, content)
        files.next.unlink(missing_ok=True)
    return {
        "provider": new_provider.name,
        "rewrapped": len(items) + len(meta_items),
        "kek": new_provider.fingerprint,
        "move_to_environment": files is None,
    }


# -- status ------------------------------------------------------------------------------------


def _age_days(created: float, now: float) -> float:
    return round(max(0.0, now - created) / 86400, 1)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _transit_time(text: str) -> float | None:
    if text.isdigit():
        return float(text)
    try:
        return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _kek_status(
    settings: Settings, provider: KeyProvider, wrapped: list[bytes], now: float
) -> dict[str, Any]:
    doc: dict[str, Any] = {"kind": "kek", "provider": provider.name}
    if isinstance(provider, TransitKeyProvider):
        from ..crypto.transit import ciphertext_version  # noqa: PLC0415

        key = provider.client.read_key(provider.key)
        created = _transit_time(key.versions.get(key.latest_version, ""))
        in_use = sorted({ciphertext_version(w.decode("ascii", "replace")) for w in wrapped})
        doc.update(
            id=f"{provider.client.url}/{provider.client.mount}/{provider.key} v{key.latest_version}",
            versions_in_use=in_use,
            rewrap_needed=bool(in_use) and in_use != [key.latest_version],
        )
        if created is not None:
            doc.update(created=_iso(created), age_days=_age_days(created, now))
        return doc
    assert isinstance(provider, LocalKeyProvider)
    doc["id"] = provider.fingerprint
    files = kek_files(settings)
    if files is None:
        doc["source"] = "master_key (environment)"
    else:
        doc["source"] = str(files.current)
        try:
            created = files.current.stat().st_mtime
        except OSError:
            pass
        else:
            doc.update(created=_iso(created), age_days=_age_days(created, now))
    return doc


def key_status(
    settings: Settings,
    vault: Vault,
    *,
    audit_keys: Callable[[Settings], list[dict[str, Any]]] | None = None,
    now: float | None = None,
) -> dict[str, Any]:
    """Every key: the KEK, data keys, blind-index keys (and audit keys, when the audit package
    describes them), each with its id, age, provider and the rows it protects."""
    now = time.time() if now is None else now
    store = vault.store
    keys = store.load_keys()
    usage = store.key_usage()
    index_usage = store.index_usage()
    current = max((k.id for k in keys if k.purpose == "data"), default=0)
    current_index = max((k.id for k in keys if k.purpose == "bidx"), default=0)
    provider = vault.provider
    if provider is None:
        raise KeyProviderError("this vault was opened without a key provider")
    rows: list[dict[str, Any]] = [_kek_status(settings, provider, [k.wrapped for k in keys], now)]
    for k in keys:
        doc: dict[str, Any] = {
            "kind": "data" if k.purpose == "data" else "blind-index",
            "id": k.id,
            "provider": k.provider,
            "created": _iso(k.created_at),
            "age_days": _age_days(k.created_at, now),
            "rows": usage.get(k.id, 0) if k.purpose == "data" else index_usage.get(k.id, 0),
        }
        if k.purpose == "data":
            doc["current"] = k.id == current
        else:
            doc["current"] = k.id == current_index
        rows.append(doc)
    if audit_keys is not None:
        rows.extend(audit_keys(settings))
    stale = sum(n for key_id, n in usage.items() if key_id != current)
    unindexed = sum(n for key_id, n in index_usage.items() if key_id != current_index)
    older_index = [k.id for k in keys if k.purpose == "bidx" and k.id != current_index]
    return {
        "keys": rows,
        "reencryption": {
            "current_data_key": current,
            "rows_under_older_keys": stale,
            "complete": stale == 0,
        },
        "reindexing": {
            "current_index_key": current_index,
            "older_index_keys": older_index,
            "rows_under_older_index_keys": unindexed,
            "complete": not older_index,
        },
    }
