"""`sendvault backup OUT` and `sendvault restore IN`."""

from __future__ import annotations

from pathlib import Path

import click

from ..audit import Event
from ._common import AppContext, OutputFile, changes_state, emit_json, pass_app

__all__ = ["backup", "restore"]


@click.command()
@click.argument("out", type=OutputFile())
@click.option("--json", "as_json", is_flag=True, help="Print what was copied as JSON.")
@pass_app
@changes_state
def backup(app: AppContext, out: Path, as_json: bool) -> None:
    """Copy the vault's SQLite database to OUT, consistent while the server runs (mode 0600).

    The copy holds tokens, ciphertexts and wrapped data keys, never the key-encryption key: it is
    useless without the KEK it was made under, by design. Keep the KEK's own backup somewhere
    else (docs/operations.md, "Backups"). For PostgreSQL, use pg_dump.
    """
    from ..vault.backup import backup as run  # noqa: PLC0415

    done = run(app.settings, app.vault, out)
    app.record(
        Event.VAULT_BACKUP, meta={"file": done["file"], "kek": done["kek"]}, counts={"tokens": done["tokens"]}
    )
    if as_json:
        emit_json(done)
    click.echo(f"{done['tokens']} token(s) backed up to {out} ({done['bytes']:,} bytes)", err=True)
    click.echo(
        f"the backup holds no key-encryption key: restoring it needs {done['kek']}, kept apart from it",
        err=True,
    )


@click.command()
@click.argument("source", metavar="IN", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace a database that holds tokens (stop the server first).")
@pass_app
@changes_state
def restore(app: AppContext, source: Path, force: bool) -> None:
    """Replace the vault's SQLite database with the backup IN, once the configured KEK is
    checked to open its keys. For PostgreSQL, says how to use pg_restore."""
    from ..crypto.providers import build_provider  # noqa: PLC0415
    from ..vault.backup import restore as run  # noqa: PLC0415

    done = run(app.settings, build_provider(app.settings), source, force=force)
    app.record(
        Event.VAULT_RESTORE, meta={"file": str(source), "kek": done["kek"]}, counts={"tokens": done["tokens"]}
    )
    click.echo(
        f"{done['tokens']} token(s) restored from {source}; its keys open with {done['kek']}", err=True
    )
