"""`sendvault keys ...`: status, rotation of each key, re-encryption, retirement."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from ..audit import Event
from ..errors import NotFound
from ._common import EXIT_FAILURE, AppContext, changes_state, emit_json, fail, pass_app

__all__ = ["keys"]


@click.group()
def keys() -> None:
    """Show and rotate keys: the KEK, data keys, blind-index key and audit keys."""


@keys.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
@pass_app
def keys_status(app: AppContext, as_json: bool) -> None:
    """Every key with its id, age, provider and the rows it protects (reads the whole table)."""
    from ..vault.lifecycle import key_status  # noqa: PLC0415
    from ._output import print_table  # noqa: PLC0415

    doc = key_status(app.settings, app.vault, audit_keys=_audit_keys())
    if as_json:
        emit_json(doc)
        return
    rows = []
    for key in doc["keys"]:
        kind = key["kind"] + (" (current)" if key.get("current") else "")
        rows.append(
            [kind, key.get("id", ""), key.get("provider", ""), key.get("age_days", ""), key.get("rows", "")]
        )
    print_table(["key", "id", "provider", "age (days)", "rows"], rows)
    state = doc["reencryption"]
    if state["rows_under_older_keys"]:
        click.echo(
            f"{state['rows_under_older_keys']} row(s) still under older data keys: "
            "sendvault keys reencrypt (or let serve move them)",
            err=True,
        )
    index = doc["reindexing"]
    if index["older_index_keys"]:
        click.echo(
            f"blind-index rotation running: {index['rows_under_older_index_keys']} row(s) still under "
            f"blind-index key {', '.join(map(str, index['older_index_keys']))}: "
            "sendvault keys reencrypt (or let serve move them)",
            err=True,
        )


def _audit_keys() -> Callable[[Any], list[dict[str, Any]]] | None:
    """The audit package's description of its keys, as rows of `keys status`, if it has one."""
    from .. import audit  # noqa: PLC0415

    describe = getattr(audit, "audit_key_status", None)
    if describe is None:
        return None

    def rows(settings: Any) -> list[dict[str, Any]]:
        out = []
        for info in describe(settings):
            doc: dict[str, Any] = {
                "kind": f"audit-{info.role}",
                "id": info.key_id,
                "provider": info.provider,
                "current": info.state == "current",
                "state": info.state,
                "where": info.where,
            }
            if info.age_days is not None:
                doc["age_days"] = round(info.age_days, 1)
            out.append(doc)
        return out

    return rows


@keys.group("rotate", invoke_without_command=True)
@click.pass_context
def keys_rotate(ctx: click.Context) -> None:
    """Rotate a key: dek (the default), kek, index or audit. No token ever changes."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(rotate_dek)


@keys_rotate.command("dek")
@pass_app
@changes_state
def rotate_dek(app: AppContext) -> None:
    """Add a new data key: new writes use it at once; existing rows move to it by re-encryption
    (`sendvault keys reencrypt`, or in the background of `sendvault serve`)."""
    key_id = app.vault.rotate_data_key()
    app.record(Event.KEY_ROTATE, meta={"key": "dek", "key_id": key_id})
    click.echo(f"new data key {key_id}; existing rows move to it with: sendvault keys reencrypt", err=True)


@keys_rotate.command("index")
@pass_app
@changes_state
def rotate_index(app: AppContext) -> None:
    """Add a new blind-index key. New rows carry it at once and every lookup asks for both keys,
    so Get Token keeps answering the same token; existing rows move to it with
    `sendvault keys reencrypt` (or in the background of `sendvault serve`), and the old key is
    retired by that run once no row uses it."""
    from ..vault.lifecycle import rotate_index_key  # noqa: PLC0415

    key_id = rotate_index_key(app.vault)
    app.record(Event.KEY_ROTATE, meta={"key": "index", "key_id": key_id})
    click.echo(
        f"new blind-index key {key_id}; existing rows move to it with: sendvault keys reencrypt", err=True
    )


@keys_rotate.command("kek")
@pass_app
@changes_state
def rotate_kek_command(app: AppContext) -> None:
    """Rewrap every data key under a new key-encryption key; no row is touched.

    transit: rotate the key in OpenBao/Vault first; this rewraps under its newest version.
    local or sealed file: a new random KEK replaces the file. A master key given in
    SENDVAULT_MASTER_KEY: give the new one in SENDVAULT_NEW_MASTER_KEY, then move it there.
    """
    from ..vault.lifecycle import rotate_kek  # noqa: PLC0415

    done = rotate_kek(app.settings, app.vault, new_master_key=os.environ.get("SENDVAULT_NEW_MASTER_KEY"))
    app.record(
        Event.KEY_ROTATE,
        meta={"key": "kek", "provider": done["provider"], "kek": done["kek"]},
        counts={"rewrapped": done["rewrapped"]},
    )
    click.echo(f"{done['rewrapped']} key(s) rewrapped under KEK {done['kek']} ({done['provider']})", err=True)
    if done.get("move_to_environment"):
        click.echo(
            "now set SENDVAULT_MASTER_KEY to the value of SENDVAULT_NEW_MASTER_KEY wherever sendvault runs;"
            " the old master key no longer opens this vault",
            err=True,
        )


@keys_rotate.command("audit")
@click.option("--signing/--no-signing", default=True, help="Rotate the audit signing key.")
@click.option("--sealing/--no-sealing", default=True, help="Rotate the key that seals values in records.")
@pass_app
@changes_state
def rotate_audit(app: AppContext, signing: bool, sealing: bool) -> None:
    """New audit signing and sealing keys; `audit verify` still verifies older records."""
    from .. import audit  # noqa: PLC0415

    rotate = getattr(audit, "rotate_audit_keys", None)
    if rotate is None:
        fail("this build cannot rotate audit keys yet", code=EXIT_FAILURE)
    import getpass  # noqa: PLC0415

    done = rotate(app.settings, signing=signing, sealing=sealing, actor=f"cli:{getpass.getuser()}")
    if done.signing:
        click.echo(f"audit signing key {done.signing[0]} -> {done.signing[1]}", err=True)
    if done.sealing:
        click.echo(f"audit sealing key {done.sealing[0]} -> {done.sealing[1]}", err=True)
    if done.public_key_pem:
        click.echo(done.public_key_pem.rstrip("\n"))
        if getattr(done, "pending", False):
            click.echo(
                "a new signing key is ready but not used yet: add the public key above to the file"
                " audit_public_key names (keep the old one too), then run `keys rotate audit` again",
                err=True,
            )
        else:
            click.echo(
                "add the public key above to the file audit_public_key names (keep the old one too):"
                " audit verify trusts only that file",
                err=True,
            )


@contextlib.contextmanager
def _bar(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console  # noqa: PLC0415 - only on a terminal
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, rate=0.0)

        def advance(rows: int) -> None:
            bar.advance(task, rows)
            elapsed = bar.tasks[0].elapsed or 0.0
            bar.update(task, rate=bar.tasks[0].completed / elapsed if elapsed else 0.0)

        yield advance


@keys.command("reencrypt")
@click.option("--batch", "batch_rows", type=click.IntRange(10, 100_000), default=2000, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@pass_app
@changes_state
def keys_reencrypt(app: AppContext, batch_rows: int, as_json: bool) -> None:
    """Move every row to the current data key, and to the current blind-index key while one
    rotates, now, in batches, with a progress bar.

    Safe while serve runs (no request fails, no token changes); a killed run resumes where it
    stopped. Afterwards, older data keys can be destroyed with `sendvault keys retire ID`; an
    older blind-index key is retired by this run itself once no row uses it.
    """
    from ..vault.lifecycle import reencrypt, stale_rows  # noqa: PLC0415

    vault = app.vault
    vault.refresh_keys()
    total = stale_rows(vault)
    with _bar(total, f"re-encrypting under data key {vault.keyring.current_key_id}") as advance:
        report = reencrypt(vault, batch_rows=batch_rows, progress=advance)
    index = _reindex(app, batch_rows) if len(vault.index_key_ids) > 1 else None
    app.record(
        Event.KEY_REENCRYPT,
        meta={"key_id": report.key_id, "complete": report.complete},
        counts={"rows": report.changed, "unreadable": report.unreadable},
    )
    rate = report.changed / report.seconds if report.seconds else 0.0
    if as_json:
        doc: dict[str, Any] = {
            "key_id": report.key_id,
            "rows": report.changed,
            "unreadable": report.unreadable,
            "seconds": round(report.seconds, 3),
            "complete": report.complete,
        }
        if index is not None:
            doc["index"] = {
                "key_id": index.key_id,
                "rows": index.changed,
                "unreadable": index.unreadable,
                "seconds": round(index.seconds, 3),
                "complete": index.complete,
                "retired": index.retired,
            }
        emit_json(doc)
    click.echo(
        f"{report.changed} row(s) re-encrypted under data key {report.key_id} in {report.seconds:.1f} s"
        f" ({rate:,.0f} rows/s)",
        err=True,
    )
    if index is not None:
        rate = index.changed / index.seconds if index.seconds else 0.0
        click.echo(
            f"{index.changed} row(s) re-indexed under blind-index key {index.key_id} in {index.seconds:.1f} s"
            f" ({rate:,.0f} rows/s)",
            err=True,
        )
        for old in index.retired:
            click.echo(f"blind-index key {old} retired (no row uses it)", err=True)
    unreadable = report.unreadable + (index.unreadable if index is not None else 0)
    if unreadable:
        fail(
            f"{unreadable} row(s) did not open and were left as they are",
            "their ciphertext was changed or its key is gone; their keys cannot be retired",
        )


def _reindex(app: AppContext, batch_rows: int) -> Any:
    """The blind-index part of `keys reencrypt`: move rows to the newest index key, audited."""
    from ..vault.lifecycle import reindex, unindexed_rows  # noqa: PLC0415

    vault = app.vault
    label = f"re-indexing under blind-index key {vault.index_key_ids[-1]}"
    with _bar(unindexed_rows(vault), label) as advance:
        done = reindex(vault, batch_rows=batch_rows, progress=advance)
    app.record(
        Event.KEY_REENCRYPT,
        meta={"key": "index", "key_id": done.key_id, "complete": done.complete},
        counts={"rows": done.changed, "unreadable": done.unreadable},
    )
    for old in done.retired:
        app.record(Event.KEY_RETIRE, meta={"key": "index", "key_id": old})
    return done


@keys.command("retire")
@click.argument("key_id", type=int)
@pass_app
@changes_state
def keys_retire(app: AppContext, key_id: int) -> None:
    """Destroy data key (or older blind-index key) KEY_ID, only if no row uses it any more
    (never while one does)."""
    from ..vault.lifecycle import retire_key  # noqa: PLC0415

    vault = app.vault
    vault.refresh_keys()
    if key_id in vault.index_key_ids:
        if key_id == vault.index_key_ids[-1]:
            fail(
                f"blind-index key {key_id} is the current blind-index key",
                "rotate first: sendvault keys rotate index",
            )
        used = retire_key(vault, key_id)
        if used:
            fail(
                f"blind-index key {key_id} still indexes {used} row(s); it was kept",
                "move them first: sendvault keys reencrypt",
            )
        app.record(Event.KEY_RETIRE, meta={"key": "index", "key_id": key_id})
        click.echo(f"blind-index key {key_id} destroyed", err=True)
        return
    if key_id == vault.keyring.current_key_id:
        fail(f"data key {key_id} is the current data key", "rotate first: sendvault keys rotate dek")
    try:
        used = retire_key(vault, key_id)
    except NotFound as exc:
        # An older blind-index key is retired by `keys reencrypt` once no row uses it.
        fail(
            f"{exc}, and no older blind-index key {key_id}",
            "it may be retired already (keys reencrypt retires an unused blind-index key): "
            "see sendvault keys status",
        )
    if used:
        fail(
            f"data key {key_id} still protects {used} row(s); it was kept",
            "move them first: sendvault keys reencrypt",
        )
    app.record(Event.KEY_RETIRE, meta={"key": "dek", "key_id": key_id})
    click.echo(f"data key {key_id} destroyed", err=True)
