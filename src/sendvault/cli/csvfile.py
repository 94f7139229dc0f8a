"""`sendvault csv tokenize|detokenize`: bulk conversion of contact files and tracking exports."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click

from ..audit import Event
from ..errors import InvalidValue, SendvaultError
from ..exchange import (
    ColumnError,
    CsvInput,
    CsvProblem,
    RejectsFile,
    RejectsStream,
    Summary,
    TooManyErrors,
    default_workers,
    detokenize_file,
    tokenize_file,
    unwritten,
)
from ..vault import Kind, parse_kind
from ._common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    AppContext,
    OutputFile,
    changes_state,
    ctrl_c_held,
    emit_json,
    fail,
    pass_app,
)

__all__ = ["csv_group"]

_GUESS = (("mail", Kind.EMAIL), ("phone", Kind.MOBILE), ("mobile", Kind.MOBILE), ("sms", Kind.MOBILE))


def _column_spec(spec: str) -> tuple[str, Kind]:
    name, sep, kind_name = spec.partition("=")
    if not name.strip():
        fail(
            f"--column {spec!r} names no column",
            "write --column HEADER=Email or HEADER=MobileNumber",
            EXIT_USAGE,
        )
    if sep:
        try:
            return name, parse_kind(kind_name)
        except InvalidValue:
            fail(
                f"--column {spec!r}: unknown type {kind_name!r}",
                "the type is Email or MobileNumber (also email, mobile, phone)",
                EXIT_USAGE,
            )
    guessed = next((kind for part, kind in _GUESS if part in name.lower()), None)
    if guessed is None:
        fail(
            f"--column {name!r}: say which kind of value it holds",
            f"write --column {name}=Email or {name}=MobileNumber",
            EXIT_USAGE,
        )
    return name, guessed


def _common(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.option(
            "--rejects",
            type=OutputFile(),
            help="Rejects file (default: OUT.rejects.csv; stderr when OUT is -).",
        ),
        click.option(
            "--max-errors",
            type=click.IntRange(min=0),
            help="Abort, writing nothing, when more rows than this are rejected.",
        ),
        click.option(
            "--delimiter", help="Field delimiter (default: sniffed among , ; tab |). Use '\\t' for tab."
        ),
        click.option("--encoding", help="Input encoding (default: sniffed: BOM, UTF-8, else Windows-1252)."),
        click.option("--output-encoding", help="Output encoding (default: the input's)."),
        click.option(
            "--workers",
            type=click.IntRange(0, 64),
            help="Worker processes for files over 30,000 rows (0: all in this process; default: 2"
            " on a machine with two or more cores, else 0).",
        ),
        click.option(
            "--json", "as_json", is_flag=True, help="Print the summary as JSON on stdout (not with OUT -)."
        ),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar and no summary line."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


@click.group("csv")
def csv_group() -> None:
    """Tokenize contact files and detokenize files coming back (CSV with a header row)."""


@contextlib.contextmanager
def _progress(enabled: bool, total: int | None, label: str) -> Iterator[Callable[[int, int], None] | None]:
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console  # noqa: PLC0415 - only on a terminal
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TextColumn("{task.fields[rows]:,} rows  {task.fields[rate]:,.0f} rows/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total, rows=0, rate=0.0)

        def update(rows: int, done: int) -> None:
            elapsed = bar.tasks[0].elapsed or 0.0
            bar.update(task, completed=done, rows=rows, rate=rows / elapsed if elapsed else 0.0)

        yield update


def _check_paths(source: str, output: str, rejects: Path | None) -> None:
    """OUT and --rejects each replace what is at their path: neither may be another of the files,
    nor anything but a new or regular file (``_fs.output_problem``: a device, FIFO or link was
    replaced, and ``FILE/`` overwrote FILE)."""
    from .._fs import output_problem  # noqa: PLC0415

    checks = [] if output == "-" else [("OUT", output)]
    if rejects is None and output != "-":
        checks.append(("the rejects file", f"{output}.rejects.csv"))  # the default, beside OUT
    for role, path in checks:
        why = output_problem(path)
        if why is not None:
            fail(f"{role} {path!r} {why}", "give a new or regular file's path", EXIT_USAGE)
    if output != "-" and source != "-" and Path(output).resolve() == Path(source).resolve():
        fail("OUT is the input file", "write the result to another file", EXIT_USAGE)
    if rejects is not None:
        for role, other in (("the input file", source), ("OUT", output)):
            if other != "-" and Path(rejects).resolve() == Path(other).resolve():
                # (With nothing rejected, a stale rejects file there would be removed, too.)
                fail(f"--rejects is {role}", "give the rejects another file name", EXIT_USAGE)


def _run(
    app: AppContext,
    operation: str,
    source: str,
    output: str,
    options: dict[str, Any],
    convert: Callable[..., Summary],
    **kwargs: Any,
) -> None:
    rejects_path = options["rejects"]
    _check_paths(source, output, rejects_path)
    if rejects_path is None and output != "-":
        rejects_path = Path(f"{output}.rejects.csv")
    rejects: RejectsFile | RejectsStream = (
        RejectsFile(rejects_path)
        if rejects_path is not None
        else RejectsStream(lambda line: click.echo(line, err=True))
    )
    delimiter = options["delimiter"]
    if delimiter in ("\\t", "tab", "TAB"):
        delimiter = "\t"
    event = Event.EXCHANGE_TOKENIZE if operation == "tokenize" else Event.EXCHANGE_DETOKENIZE
    summary = Summary(operation, source, output)
    if rejects_path is not None:
        summary.rejects = str(rejects_path)
    vault = app.vault  # opened before the file: a bad setting is reported first
    app.audit.check()
    _warn_bulk_lock(app, operation, options)
    src: CsvInput | None = None
    try:
        src = CsvInput(source, encoding=options["encoding"], delimiter=delimiter)
        with _progress(not options["quiet"], src.size, operation) as progress:
            convert(
                vault,
                app.settings,
                src,
                output,
                rejects=rejects,
                max_errors=options["max_errors"],
                workers=default_workers() if options["workers"] is None else options["workers"],
                progress=progress,
                output_encoding=options["output_encoding"],
                summary=summary,
                **kwargs,
            )
    except TooManyErrors as exc:
        if isinstance(rejects, RejectsFile):
            rejects.finish()
        _stop(app, event, summary, None, "too-many-errors")
        fail(str(exc), f"see the rejects in {rejects_path}" if rejects_path else None)
    except (ColumnError, CsvProblem) as exc:
        _stop(app, event, summary, rejects, "refused")
        fail(str(exc), "check the file and the --column/--delimiter/--encoding options", EXIT_USAGE)
    except KeyboardInterrupt:
        if summary.status != "written":
            _stop(app, event, summary, rejects, "interrupted")
            kept = "tokens already created stay valid: " if operation == "tokenize" else ""
            fail(f"interrupted; {unwritten(output)}", f"{kept}run it again", EXIT_INTERRUPTED)
        # Ctrl-C once the output was in place (while the workers stopped, say): the run is done.
    except (SendvaultError, OSError):
        # Also a failed write (a full disk, standard output closed): the tokens made are recorded.
        _stop(app, event, summary, rejects, "failed")
        raise
    finally:
        if src is not None:
            src.close()
    with ctrl_c_held():  # the output is in place: its rejects and its audit record must follow
        try:
            _finish(summary, rejects)
        except (SendvaultError, OSError):  # the rejects could not be kept: recorded as failed
            _stop(app, event, summary, rejects, "failed")
            raise
        _record(app, event, summary)
    _report(summary, options, output)


def _warn_bulk_lock(app: AppContext, operation: str, options: dict[str, Any]) -> None:
    """Say where ``sqlite_bulk_lock_seconds`` is held back by the busy timeout (no speed-up)."""
    warning = app.settings.bulk_lock_warning() if operation == "tokenize" else None
    if warning is not None and not options["quiet"]:
        click.echo(f"warning: {warning}", err=True)


def _finish(summary: Summary, rejects: RejectsFile | RejectsStream) -> None:
    """A run whose output is in place: keep its rejects."""
    summary.status = "ok"
    if isinstance(rejects, RejectsFile):
        rejects.finish()


def _stop(
    app: AppContext, event: Event, summary: Summary, rejects: RejectsFile | RejectsStream | None, status: str
) -> None:
    """A run that ended without output: drop partial rejects, record why."""
    summary.status = status
    if isinstance(rejects, RejectsFile):
        rejects.discard()
    _record(app, event, summary)


def _record(app: AppContext, event: Event, summary: Summary) -> None:
    meta = summary.as_dict()
    counts = {
        k: meta.pop(k) for k in ("rows", "written", "rejected", "values", "created", "empty", "attributes")
    }
    app.record(event, meta=meta, counts=counts)


def _report(summary: Summary, options: dict[str, Any], output: str) -> None:
    if options["as_json"] and output != "-":
        emit_json(summary.as_dict())
    if options["quiet"]:
        return
    verb = "tokenized" if summary.operation == "tokenize" else "detokenized"
    rate = summary.rows / summary.seconds if summary.seconds else 0.0
    line = (
        f"{verb} {summary.rows:,} rows -> {output}: {summary.values:,} values"
        + (f" ({summary.created:,} new tokens)" if summary.operation == "tokenize" else "")
        + f", {summary.empty:,} empty cells, {summary.rejected:,} rows rejected"
        + (f" (see {summary.rejects})" if summary.rejected and summary.rejects else "")
        + f" in {summary.seconds:.1f} s ({rate:,.0f} rows/s)"
    )
    click.echo(line, err=True)


@csv_group.command("tokenize")
@click.argument("source", metavar="IN")
@click.argument("output", metavar="OUT")
@click.option(
    "--column", "columns", multiple=True, required=True, help="HEADER=Email or HEADER=MobileNumber; repeat."
)
@click.option(
    "--attributes", help="Comma-separated columns stored as the contact's attributes and left out of OUT."
)
@_common
@pass_app
@changes_state
def tokenize(
    app: AppContext,
    /,
    source: str,
    output: str,
    columns: tuple[str, ...],
    attributes: str | None,
    **options: Any,
) -> None:
    """Replace the --column values of IN by tokens (created as needed) and write OUT.

    Every other column keeps its bytes. Bad rows (an invalid address, a row too short) go to the
    rejects file with line, column and reason, never the value, and are left out of OUT. OUT
    appears only when the run succeeds; `-` reads stdin or writes stdout.
    """
    spec = [_column_spec(c) for c in columns]
    attrs = [a for a in (attributes or "").split(",") if a.strip()]
    _run(app, "tokenize", source, output, options, tokenize_file, columns=spec, attributes=attrs)


@csv_group.command("detokenize")
@click.argument("source", metavar="IN")
@click.argument("output", metavar="OUT")
@click.option(
    "--column", "columns", multiple=True, required=True, help="Header of a column of tokens; repeat."
)
@_common
@pass_app
@changes_state
def detokenize(
    app: AppContext, /, source: str, output: str, columns: tuple[str, ...], **options: Any
) -> None:
    """Replace the tokens in the --column columns of IN by their clear values and write OUT.

    For files coming back from the platform (tracking exports keyed by token). OUT holds clear
    contact data: it is created with mode 0600. Unknown or erased tokens reject their row.
    """
    names = [c.partition("=")[0] for c in columns]
    _run(app, "detokenize", source, output, options, detokenize_file, columns=names)
