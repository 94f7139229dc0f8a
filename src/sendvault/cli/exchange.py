"""`sendvault exchange check|push|pull|sweep|status`: the guard, SFTP transfers and retention."""

from __future__ import annotations

from pathlib import Path

import click

from ..audit import Event
from ..exchange import CsvProblem, Finding, check_file
from ._common import EXIT_FAILURE, EXIT_USAGE, AppContext, emit_json, fail, pass_app

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
