"""`sendvault db`: the database's schema (status, migrate) and bulk loads."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from typing import Any

import click

from ..store.migrations import check_upgrade, load
from ._common import EXIT_FAILURE, AppContext, emit_json, pass_app

__all__ = ["db"]


@click.group()
def db() -> None:
    """The database: schema version and migrations, bulk loads."""


def _status_doc(app: AppContext) -> dict[str, Any]:
    from ..server.preflight import database_label, open_store_for_reading  # noqa: PLC0415

    settings = app.settings
    where = database_label(settings)
    store = open_store_for_reading(settings)
    if store is None:
        migrations = load(_backend(settings))
        pending = [
            {"version": m.version, "name": m.name, "state": "pending", "applied_at": None, "sha256": m.sha256}
            for m in migrations
        ]
        return {
            "database": where,
            "exists": False,
            "schema": 0,
            "latest": len(migrations),
            "migrations": pending,
        }
    with contextlib.closing(store):
        status = store.schema_status()
    applied = {a.version: a for a in status.applied}
    rows: list[dict[str, Any]] = []
    for a in status.applied:
        rows.append(
            {
                "version": a.version,
                "name": a.name,
                "state": "newer"
                if a.version > status.latest
                else "changed"
                if a.version in status.changed
                else "applied",
                "applied_at": None if a.applied_at is None else _when(a.applied_at),
                "sha256": a.sha256,
            }
        )
    rows += [
        {"version": m.version, "name": m.name, "state": "pending", "applied_at": None, "sha256": m.sha256}
        for m in status.pending
        if m.version not in applied
    ]
    return {
        "database": where,
        "exists": True,
        "schema": status.current,
        "latest": status.latest,
        "migrations": rows,
    }


def _backend(settings: Any) -> str:
    return "postgres" if settings.database_url.startswith(("postgresql://", "postgres://")) else "sqlite"


def _when(seconds: int) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@db.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@pass_app
def db_status(app: AppContext, as_json: bool) -> None:
    """Show the schema version, each migration (applied, when, or pending) and what to run.

    Exit 0 when the schema is current (or the database does not exist yet: the first start
    creates it), 1 when migrations are pending or the database is newer than this sendvault.
    Reads only; safe beside running servers.
    """
    doc = _status_doc(app)
    schema, latest = doc["schema"], doc["latest"]
    attention = bool(doc["exists"]) and schema not in (latest, 0)
    if as_json:
        emit_json(doc)
    else:
        if not doc["exists"]:
            click.echo(
                f"{doc['database']}: no database yet (the first start or `sendvault db migrate` creates it)"
            )
        else:
            click.echo(f"{doc['database']}: schema {schema}, this sendvault knows {latest}")
        for row in doc["migrations"]:
            when = f"  {row['applied_at']}" if row["applied_at"] else ""
            click.echo(f"  {row['version']:04d} {row['name']:<28} {row['state']}{when}")
        if doc["exists"] and 0 < schema < latest:
            click.echo(
                f"{latest - schema} migration(s) pending: back up the database, then: sendvault db migrate"
            )
        elif schema > latest:
            click.echo(
                "the database is newer than this sendvault: run the release that migrated it, or newer"
            )
        elif any(r["state"] == "changed" for r in doc["migrations"]):
            click.echo("note: a migration file differs from what was applied (state `changed`)")
    if attention:
        sys.exit(EXIT_FAILURE)


@db.command("migrate")
@click.option("--dry-run", is_flag=True, help="List the pending migrations; change nothing.")
@pass_app
def db_migrate(app: AppContext, dry_run: bool) -> None:
    """Apply the pending schema migrations, in one transaction.

    Back up the database first (docs/operations.md says how). Safe to run while replicas of the
    same release run; they wait for the migration's lock. A database migrated by a newer
    sendvault is refused. Creates the database if there is none.
    """
    from ..server.preflight import database_label  # noqa: PLC0415
    from ..vault import open_store  # noqa: PLC0415

    settings = app.settings
    where = database_label(settings)
    if dry_run:
        doc = _status_doc(app)
        check_upgrade(where, doc["schema"], doc["latest"], upgrade=True)
        pending = [r for r in doc["migrations"] if r["state"] == "pending"]
        for row in pending:
            click.echo(f"would apply {row['version']:04d}_{row['name']}")
        click.echo(f"{where}: {len(pending)} migration(s) pending")
        return
    if not settings.database_url.startswith(("postgresql://", "postgres://")):
        settings.home_path.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = open_store(settings, migrate=False)
    with contextlib.closing(store):
        applied = store.migrate(upgrade=True)
        status = store.schema_status()
    names = {a.version: a.name for a in status.applied}
    for version in applied:
        click.echo(f"applied {version:04d}_{names.get(version, '')}")
    click.echo(f"{where}: schema {status.current}" + ("" if applied else " (nothing to do)"))
