"""`sendvault exchange check|push|pull|sweep|status`: the guard, SFTP transfers and retention."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from ..audit import Event
from ..exchange import (
    CsvProblem,
    Exchange,
    Finding,
    HostKeyError,
    Remote,
    SftpError,
    SweepRefused,
    TransferState,
    check_file,
    parse_remote,
    remote_from_settings,
)
from ._common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    AppContext,
    FloatRange,
    changes_state,
    emit_json,
    fail,
    pass_app,
)

__all__ = ["exchange"]


@click.group()
def exchange() -> None:
    """Check files for clear values, move them over SFTP, and delete them after retention."""


def run_check(app: AppContext, files: list[Path], limit: int | None) -> tuple[list[Finding], int]:
    """Findings (at most ``limit`` per file) and their total count across ``files``."""
    settings = app.settings
    shown: list[Finding] = []
    total = 0
    for path in files:
        count = 0
        try:
            for finding in check_file(
                str(path),
                token_domain=settings.token_domain,
                mobile_prefix=settings.mobile_token_prefix,
                default_region=settings.default_region,
            ):
                count += 1
                if limit is None or count <= limit:
                    shown.append(finding)
        except CsvProblem as exc:
            fail(str(exc), "exchange check reads CSV files with a header row", EXIT_USAGE)
        total += count
    return shown, total


@exchange.command("check")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="Findings shown per file."
)
@click.option("--json", "as_json", is_flag=True, help="Print findings as a JSON array.")
@pass_app
@changes_state
def check(app: AppContext, files: tuple[Path, ...], limit: int, as_json: bool) -> None:
    """Find clear email addresses and phone numbers in FILES bound for the platform.

    Every column is searched, the header and subscriber keys included; tokens are not findings.
    Findings are masked. Exits 1 when anything is found, 0 when the files are clean.
    """
    shown, total = run_check(app, list(files), limit)
    app.record(
        Event.EXCHANGE_CHECK,
        meta={
            "files": [str(f) for f in files],
            "kinds": sorted({f.kind for f in shown}),
            "status": "clear-values" if total else "clean",
        },
        counts={"files": len(files), "findings": total},
    )
    if as_json:
        emit_json([f.as_dict() for f in shown])
    for f in shown:
        click.echo(f"{f.file}:{f.line}: column {f.column!r}: {f.kind} {f.masked}", err=as_json)
    if total:
        more = total - len(shown)
        click.echo(
            f"{total} clear value(s) found"
            + (f" ({more} not shown)" if more > 0 else "")
            + "; tokenize them with `sendvault csv tokenize` before sending",
            err=True,
        )
        raise SystemExit(EXIT_FAILURE)
    click.echo(f"{len(files)} file(s) clean: no clear email address or phone number", err=True)


def _remote_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--identity",
            "identity_file",
            type=click.Path(dir_okay=False),
            help="Private key file for the SFTP login.",
        ),
        click.option(
            "--password-env",
            metavar="VAR",
            help="Environment variable holding the SFTP password (never on the command line).",
        ),
        click.option(
            "--known-hosts",
            type=click.Path(dir_okay=False),
            help="known_hosts file (default ~/.ssh/known_hosts).",
        ),
        click.option(
            "--host-key-fingerprint",
            metavar="SHA256:...",
            help="Pin the server's host key instead of known_hosts.",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _remote(app: AppContext, spec: str, opts: dict[str, Any]) -> Remote:
    """REMOTE as an sftp:// URL, or NAME / NAME:/path of a remote in the config file."""
    given = {
        k: opts.pop(k, None) for k in ("identity_file", "password_env", "known_hosts", "host_key_fingerprint")
    }
    given = {k: v for k, v in given.items() if v}
    remotes = app.settings.exchange.remotes
    if spec.startswith("sftp://"):
        try:
            return parse_remote(spec, **given)
        except SftpError as exc:
            fail(str(exc), "write it as sftp://user@host[:port]/path", EXIT_USAGE)
    name, _, path = spec.partition(":")
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none configured"
        fail(
            f"{spec!r} is neither an sftp:// URL nor a configured remote ({known})",
            "give sftp://user@host/path, or add [exchange.remotes.NAME] to the config file",
            EXIT_USAGE,
        )
    configured = remote_from_settings(remotes[name])
    configured = replace(configured, **given) if given else configured
    return configured.at(path) if path else configured


def _exchange(app: AppContext) -> Exchange:
    settings = app.settings

    def record(event: str, meta: dict[str, Any], counts: dict[str, Any] | None) -> None:
        app.record(Event(event), meta=meta, counts=counts)

    return Exchange(
        TransferState(settings.home_path / "exchange" / "state.json"),
        record,
        retention_days=settings.exchange.retention_days,
        warn_days=settings.exchange.warn_days,
    )


def _sftp(call: Any) -> Any:
    try:
        return asyncio.run(call)
    except HostKeyError as exc:
        fail(str(exc), "sendvault never accepts an unknown or changed host key", EXIT_FAILURE)
    except SftpError as exc:
        fail(str(exc), "check the URL, the credentials and the network", EXIT_FAILURE)
    except OSError as exc:
        # A local file or folder: its name is the operator's, never contact data.
        fail(
            f"{exc.filename or 'local file'}: {exc.strerror or exc}",
            "check the local path and its permissions",
        )


@exchange.command("push")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.argument("remote", nargs=1)
@_remote_options
@click.option("--allow-clear", is_flag=True, help="Send even if `exchange check` finds clear values.")
@click.option(
    "--no-verify", is_flag=True, help="Skip reading the upload back for its SHA-256 (size is still checked)."
)
@pass_app
@changes_state
def push_cmd(
    app: AppContext, /, files: tuple[Path, ...], remote: str, allow_clear: bool, no_verify: bool, **opts: Any
) -> None:
    """Upload FILES to REMOTE (sftp://user@host/folder/ or a configured remote) over SFTP.

    Each file is checked first (`exchange check`) and refused if it holds a clear address or
    number, unless --allow-clear. It is uploaded under a hidden temporary name, checked (size and
    SHA-256), and renamed into place; an interrupted upload resumes.
    """
    target = _remote(app, remote, opts)
    if not allow_clear:
        shown, total = run_check(app, list(files), 5)
        if total:
            for f in shown:
                click.echo(f"{f.file}:{f.line}: column {f.column!r}: {f.kind} {f.masked}", err=True)
            app.record(
                Event.EXCHANGE_TRANSFER,
                meta={
                    "direction": "push",
                    "remote": target.display,
                    "files": [str(f) for f in files],
                    "status": "refused-clear-values",
                },
                counts={"findings": total},
            )
            fail(
                f"{total} clear value(s) found; nothing was sent",
                "tokenize the file first, or give --allow-clear if it must go as it is",
            )
    results = _sftp(_exchange(app).push(target, list(files), verify=not no_verify))
    for r in results:
        resumed = f", resumed at {r.resumed_from:,} bytes" if r.resumed_from else ""
        click.echo(
            f"pushed {r.source} -> {r.target} ({r.size:,} bytes, sha256 {r.sha256[:16]}...{resumed})",
            err=True,
        )


@exchange.command("pull")
@click.argument("remote")
@click.argument("local_arg", metavar="LOCAL")
@_remote_options
@click.option("--again", is_flag=True, help="Also pull files pulled before.")
@click.option("--json", "as_json", is_flag=True, help="Print what was pulled as JSON.")
@pass_app
@changes_state
def pull_cmd(
    app: AppContext, /, remote: str, local_arg: str, again: bool, as_json: bool, **opts: Any
) -> None:
    """Download REMOTE (a file, or every file of a folder not pulled yet) into LOCAL.

    Downloads go to a hidden part file, are checked against the remote size, and renamed into
    place; an interrupted download resumes. Pulled files are remembered (size, time, SHA-256).
    """
    if local_arg == "-":
        fail(
            "pull writes files; LOCAL cannot be `-` (stdout)", "give a local folder or file name", EXIT_USAGE
        )
    local = Path(local_arg)
    if not local_arg.strip() or not os.path.isdir(local_arg):  # noqa: PTH112 - Path.is_dir raises ENAMETOOLONG
        # A file's name: never a device, FIFO or link, and `FILE/` is a folder, not FILE.
        from .._fs import output_problem  # noqa: PLC0415

        why = output_problem(local_arg)
        if why is not None:
            fail(
                f"LOCAL {local_arg!r} {why}",
                "give a local folder, or a new or regular file's path",
                EXIT_USAGE,
            )
    if not local.is_dir() and not local.parent.is_dir():
        fail(
            f"{local.parent} is not a local folder", "create it first, or give an existing folder", EXIT_USAGE
        )
    source = _remote(app, remote, opts)
    results = _sftp(_exchange(app).pull(source, local, again=again))
    if as_json:
        emit_json(
            [
                {
                    "source": r.source,
                    "target": r.target,
                    "size": r.size,
                    "sha256": r.sha256,
                    "resumed_from": r.resumed_from,
                }
                for r in results
            ]
        )
    for r in results:
        click.echo(f"pulled {r.source} -> {r.target} ({r.size:,} bytes)", err=True)
    if not results:
        click.echo("nothing new to pull", err=True)


@exchange.command("sweep")
@click.option(
    "--days",
    type=FloatRange(min=0),
    help="Retention period in days (default: setting exchange.retention_days, 10).",
)
@click.option(
    "--dir",
    "dirs",
    multiple=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Local exchange folder (recursive); repeat.",
)
@click.option(
    "--remote", "remotes", multiple=True, help="Remote folder (sftp:// URL or configured remote); repeat."
)
@_remote_options
@click.option("--dry-run", is_flag=True, help="List what would be deleted; delete nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the deleted files as JSON.")
@pass_app
@changes_state
def sweep_cmd(
    app: AppContext,
    /,
    days: float | None,
    dirs: tuple[Path, ...],
    remotes: tuple[str, ...],
    dry_run: bool,
    as_json: bool,
    **opts: Any,
) -> None:
    """Delete exchange files older than the retention period, locally and on SFTP servers.

    Without --dir or --remote, sweeps the folders and remotes of the config file's [exchange]
    table. Every deletion is an audit event (path, size, age, SHA-256 of local files).
    """
    ex = _exchange(app)
    settings = app.settings.exchange
    folders = list(dirs) or [Path(d) for d in settings.local_dirs]
    targets = (
        [_remote(app, r, dict(opts)) for r in remotes]
        if remotes or dirs
        else [remote_from_settings(r) for r in settings.remotes.values()]
    )
    if not folders and not targets:
        fail(
            "nothing to sweep",
            "give --dir and/or --remote, or set exchange.local_dirs / exchange.remotes",
            EXIT_USAGE,
        )
    try:
        deleted = ex.sweep_local(folders, days=days, dry_run=dry_run)
    except SweepRefused as exc:
        fail(str(exc), "nothing was deleted; give the real folder (see `ls -ld`)", EXIT_USAGE)
    for target in targets:
        try:
            deleted += _sftp(ex.sweep_remote(target, days=days, dry_run=dry_run))
        except SweepRefused as exc:
            fail(str(exc), "name the remote folder to sweep", EXIT_USAGE)
    if as_json:
        emit_json([d.as_dict() for d in deleted])
    verb = "would delete" if dry_run else "deleted"
    for d in deleted:
        click.echo(f"{verb} {d.where}:{d.path} ({d.size:,} bytes, {d.age_days:.1f} days old)", err=True)
    click.echo(
        f"{verb} {len(deleted)} file(s) older than {ex.retention_days if days is None else days:g} days",
        err=True,
    )


@exchange.command("status")
@click.argument("remotes", nargs=-1)
@_remote_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
@changes_state
def status_cmd(app: AppContext, /, remotes: tuple[str, ...], as_json: bool, **opts: Any) -> None:
    """List the files of remote folders with their age and the platform's deletion deadline.

    Warns about files not pulled yet within exchange.warn_days (2) of the deadline, or past it,
    and exits 1 then (for cron and monitoring). Default: every configured remote.
    """
    ex = _exchange(app)
    targets = [_remote(app, r, dict(opts)) for r in remotes] or [
        remote_from_settings(r) for r in app.settings.exchange.remotes.values()
    ]
    if not targets:
        fail("no remote to look at", "give REMOTE, or configure [exchange.remotes.NAME]", EXIT_USAGE)
    reports = [_sftp(ex.status(t)) for t in targets]
    warnings = sum(len(r.warnings) for r in reports)
    if as_json:
        emit_json([{"remote": r.remote, "files": [f.as_dict() for f in r.files]} for r in reports])
    else:
        for report in reports:
            click.echo(f"{report.remote}: {len(report.files)} file(s)")
            for f in report.files:
                mark = "pulled" if f.pulled else "NOT PULLED"
                click.echo(
                    f"  {f.path}  {f.size:,} bytes  {f.age_days:.1f} days old  "
                    f"deleted in {f.deleted_in_days:.1f} days  {mark}"
                )
    for report in reports:
        for f in report.warnings:
            click.echo(f"warning: {report.remote}: {f.path}: {f.warning}", err=True)
    if warnings:
        raise SystemExit(EXIT_FAILURE)
