"""Schema migrations: numbered SQL files, one folder per backend, applied in order.

A migration is ``NNNN_name.sql`` in both ``sqlite/`` and ``postgres/`` (same number, same name);
nothing else registers it. Each backend records what it applied in its history table
(``schema_migrations`` in SQLite, ``sv_schema_migrations`` in PostgreSQL, from version 4) with
the SHA-256 of the file as applied, and keeps its older version marker (SQLite's
``user_version``, PostgreSQL's ``sv_schema``) current as well, so an older sendvault still sees
that the database is newer than it knows.

``sendvault db status`` reads :class:`SchemaStatus`; ``sendvault db migrate`` applies what is
pending. ``serve`` and the other commands create the schema of an empty database themselves but
refuse an older one (:class:`~sendvault.errors.SchemaOutdated`) unless told to upgrade
(``serve --dev`` is), and every command refuses a newer one
(:class:`~sendvault.errors.SchemaTooNew`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from importlib import resources
from typing import NamedTuple

from ...errors import SchemaOutdated, SchemaTooNew

__all__ = ["AppliedMigration", "Migration", "SchemaStatus", "check_upgrade", "load", "status_from"]

# The first version whose schema has the history table.
HISTORY_VERSION = 4


class Migration(NamedTuple):
    """One migration file of this release."""

    version: int
    name: str
    sql: str
    sha256: str


class AppliedMigration(NamedTuple):
    """One row of a database's history: what was applied, when, from which file contents.

    ``sha256`` and ``applied_at`` are None for versions applied before the history table
    existed (recorded from the older version marker).
    """

    version: int
    name: str
    sha256: str | None
    applied_at: int | None


class SchemaStatus(NamedTuple):
    """A database's schema against this release's migrations (``sendvault db status``)."""

    backend: str
    current: int
    latest: int
    applied: list[AppliedMigration]
    pending: list[Migration]

    @property
    def empty(self) -> bool:
        """No sendvault schema at all yet (a first start creates it)."""
        return self.current == 0

    @property
    def newer(self) -> bool:
        """The database was migrated by a newer sendvault."""
        return self.current > self.latest

    @property
    def changed(self) -> list[int]:
        """Applied versions whose file in this release differs from what was applied."""
        files = {m.version: m.sha256 for m in load(self.backend)}
        return [a.version for a in self.applied if a.sha256 and files.get(a.version, a.sha256) != a.sha256]


_CACHE: dict[str, list[Migration]] = {}


def load(backend: str) -> list[Migration]:
    """This release's migrations for ``backend`` ("sqlite" or "postgres"), in order.

    Numbers must run 1, 2, 3, ... without gaps or repeats: a missing or doubled file is a
    packaging error, found here rather than half-way through a migration.
    """
    if backend not in _CACHE:
        folder = resources.files(__name__) / backend
        found: list[Migration] = []
        for path in sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name):
            number, _, rest = path.name.removesuffix(".sql").partition("_")
            text = path.read_text(encoding="utf-8")
            found.append(Migration(int(number), rest, text, hashlib.sha256(text.encode()).hexdigest()))
        numbers = [m.version for m in found]
        if numbers != list(range(1, len(numbers) + 1)):
            raise RuntimeError(f"sendvault's {backend} migrations are not numbered 1..N: {numbers}")
        _CACHE[backend] = found
    return _CACHE[backend]


def status_from(backend: str, current: int, history: Sequence[AppliedMigration]) -> SchemaStatus:
    """A :class:`SchemaStatus` from a database's version marker and history rows.

    Versions the history does not hold (applied before it existed) are listed by their name in
    this release, without a checksum or time.
    """
    migrations = load(backend)
    names = {m.version: m.name for m in migrations}
    recorded = {a.version: a for a in history}
    applied = [
        recorded.get(v) or AppliedMigration(v, names.get(v, "unknown to this sendvault"), None, None)
        for v in range(1, current + 1)
    ]
    applied += [a for v, a in sorted(recorded.items()) if v > current]
    pending = [m for m in migrations if m.version > current]
    return SchemaStatus(backend, current, len(migrations), applied, pending)


def check_upgrade(where: str, current: int, latest: int, *, upgrade: bool) -> None:
    """Refuse a newer schema always, and an older non-empty one unless ``upgrade``."""
    if current > latest:
        raise SchemaTooNew(
            f"{where} has schema version {current}, newer than this sendvault knows ({latest})"
        )
    if current and current < latest and not upgrade:
        raise SchemaOutdated(f"{where} has schema version {current}; this sendvault needs {latest}")
