"""Backup and restore of the vault's database, with the key material handled explicitly.

A backup holds tokens, blind indexes, ciphertexts and the *wrapped* data keys: never the KEK that
unwraps them. Without its KEK a backup is useless by design, which is what makes it safe to keep
on ordinary backup storage; the KEK is kept somewhere else (docs/operations.md, "Backups").

SQLite is copied with its online backup API, consistent while the server writes. PostgreSQL is
backed up with ``pg_dump`` and restored with ``pg_restore``: sendvault says so and checks the file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .._fs import check_replaceable
from ..config import Settings
from ..crypto import KeyProvider
from ..errors import KeyProviderError, SendvaultError, StoreError
from ..store.sqlite import SQLiteStore
from .service import Vault

__all__ = ["BackupError", "backup", "describe_kek", "is_postgres", "restore"]


class BackupError(SendvaultError):
    """A backup or restore that cannot be done as asked; nothing was changed."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


_PG_HINT = "back up PostgreSQL with pg_dump: pg_dump --format=custom --file=OUT DATABASE_URL"


def is_postgres(settings: Settings) -> bool:
    """Whether the vault's database is PostgreSQL."""
    return settings.database_url.startswith(("postgresql://", "postgres://"))


def describe_kek(provider: KeyProvider) -> str:
    """The KEK a backup needs, named without revealing it."""
    fingerprint = getattr(provider, "fingerprint", None)
    if fingerprint:
        return f"{provider.name} KEK {fingerprint}"
    key = getattr(provider, "key", "?")
    client = getattr(provider, "client", None)
    where = getattr(client, "url", "?")
    return f"transit key {key!r} at {where}"


@contextlib.contextmanager
def _sqlite(path: Path, *, read_only: bool = False) -> Iterator[sqlite3.Connection]:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro" if read_only else path, uri=read_only)
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from None
    try:
        yield conn
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: {exc}") from None
    finally:
        conn.close()


def backup(
    settings: Settings, vault: Vault, out: Path, progress: Callable[[int, int], None] | None = None
) -> dict[str, Any]:
    """Copy the SQLite database to ``out`` (mode 0600), whole or not at all; what was copied."""
    if is_postgres(settings):
        raise BackupError("the database is PostgreSQL: sendvault does not copy it", hint=_PG_HINT)
    store = vault.store
    assert isinstance(store, SQLiteStore)
    if os.path.lexists(out):  # a dangling link too: it would be replaced
        raise BackupError(f"{out} exists; give a new file name", hint="backups never overwrite")
    partial = out.with_name(f".{out.name}.partial")
    try:
        check_replaceable(partial)  # a device, FIFO or folder there is not an earlier partial copy
        partial.unlink(missing_ok=True)
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        raise BackupError(f"cannot write {out} ({exc.strerror}{where})") from None
    try:
        store.backup(partial, progress)
        kek = describe_kek(vault.provider) if vault.provider is not None else "unknown"
        with _sqlite(partial) as conn:
            (check,) = conn.execute("PRAGMA integrity_check").fetchone()
            if check != "ok":
                raise StoreError(f"the copy failed its integrity check ({check})")  # noqa: TRY301
            conn.execute(
                "INSERT INTO meta (name, value) VALUES ('backup:kek', ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (kek,),
            )
            conn.commit()
            (rows,) = conn.execute("SELECT count(*) FROM contacts").fetchone()
        partial.replace(out)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {"file": str(out), "tokens": int(rows), "bytes": out.stat().st_size, "kek": kek}


def _check_pg_dump(source: Path) -> str:
    try:
        with source.open("rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise BackupError(f"cannot read {source} ({exc.strerror})") from None
    if head.startswith(b"PGDMP"):
        return f"pg_restore --clean --if-exists --dbname=DATABASE_URL {source}"
    if b"PostgreSQL database dump" in head:
        return f"psql DATABASE_URL --file={source}"
    raise BackupError(f"{source} is not a pg_dump file", hint=_PG_HINT)


def restore(
    settings: Settings, provider: KeyProvider, source: Path, *, force: bool = False
) -> dict[str, Any]:
    """Replace the SQLite database with the backup at ``source``, after checking that the
    configured KEK opens the backup's keys; what was restored.

    The copy goes through SQLite's backup API into the live file: other connections see the old
    database or the restored one, never a mix. Stop the server first all the same: its caches
    (keys, clients) describe the old database.
    """
    if is_postgres(settings):
        command = _check_pg_dump(source)
        raise BackupError(
            "the database is PostgreSQL: restore the pg_dump file with PostgreSQL's own tool",
            hint=f"{command}  (then start sendvault with the KEK the dump was made under)",
        )
    if not source.is_file():
        raise BackupError(f"{source} is not a file")
    with _sqlite(source, read_only=True) as src:
        try:
            (check,) = src.execute("PRAGMA integrity_check").fetchone()
            keys = src.execute("SELECT id, purpose, provider, wrapped FROM data_keys ORDER BY id").fetchall()
            (rows,) = src.execute("SELECT count(*) FROM contacts").fetchone()
            made_under = src.execute("SELECT value FROM meta WHERE name = 'backup:kek'").fetchone()
        except sqlite3.Error:
            raise BackupError(f"{source} is not a sendvault backup") from None
        if check != "ok":
            raise StoreError(f"{source} failed its integrity check ({check})")
        # sendvault's schema has no trigger and no view: in a backup they can only be added by
        # hand, and a trigger runs inside every later write (one that copies OLD.value_ct aside
        # on UPDATE would keep every erased value). A backup is not authenticated: refuse them.
        code = src.execute(
            "SELECT type, name FROM sqlite_master WHERE type IN ('trigger', 'view') ORDER BY name"
        ).fetchall()
        if code:
            shown = ", ".join(f"{kind} {name!r}" for kind, name in code[:5])
            raise BackupError(
                f"{source} holds objects sendvault never creates ({shown}): it was altered after the backup",
                hint="restore another backup; keep backups where only sendvault's operators can write",
            )
        needed = made_under[0] if made_under else "the KEK it was made under"
        refused = KeyProviderError(
            f"the configured KEK ({describe_kek(provider)}) does not open this backup's keys; "
            f"it needs {needed}"
        )
        for key_id, purpose, key_provider, wrapped in keys:
            if key_provider != provider.name:
                raise refused
            try:
                provider.unwrap(str(purpose), int(key_id), bytes(wrapped))
            except KeyProviderError:
                raise refused from None
        target = settings.sqlite_path
        if target.exists() and not force:
            with _sqlite(target, read_only=True) as current:
                (live,) = current.execute("SELECT count(*) FROM contacts").fetchone()
            if live:
                raise BackupError(
                    f"{target} holds {live} token(s)",
                    hint="stop sendvault, then run again with --force",
                )
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not target.exists():
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        with _sqlite(target) as dest:
            dest.execute("PRAGMA busy_timeout = 10000")
            src.backup(dest)
            dest.execute("DELETE FROM meta WHERE name = 'backup:kek'")
            dest.commit()
            dest.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"file": str(target), "tokens": int(rows), "kek": describe_kek(provider)}
