"""`sendvault harness check|load`: play Marketing Cloud against a token server (docs/harness.md)."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ._common import EXIT_FAILURE, EXIT_USAGE, FloatRange, OutputFile, fail

__all__ = ["harness"]

_PASSWORD_ENV = "SENDVAULT_HARNESS_PASSWORD"
_SECRET_ENV = "SENDVAULT_HARNESS_CLIENT_SECRET"


def _target_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options that say where the server is and how to reach it (shared by check and load)."""
    options = [
        click.option("--url", help="HTTPS base URL of the token server, e.g. https://tokens.example.com."),
        click.option(
            "--client-file",
            type=click.Path(dir_okay=False, exists=True, path_type=Path),
            help="Take url, username, password and ca_file from a JSON file (`serve --dev` writes "
            ".sendvault/dev-client.json).",
        ),
        click.option("--user", help="HTTP Basic user (client id)."),
        click.option("--password", envvar=_PASSWORD_ENV, help=f"HTTP Basic password (or ${_PASSWORD_ENV})."),
        click.option(
            "--token-url", help="OAuth 2.0 token endpoint: use client credentials instead of Basic."
        ),
        click.option("--client-id", help="OAuth client id."),
        click.option("--client-secret", envvar=_SECRET_ENV, help=f"OAuth client secret (or ${_SECRET_ENV})."),
        click.option(
            "--ca",
            type=click.Path(dir_okay=False, exists=True),
            help="CA bundle that signs the server's certificate.",
        ),
        click.option(
            "--client-cert",
            type=click.Path(dir_okay=False, exists=True),
            help="Client certificate (mutual TLS).",
        ),
        click.option(
            "--client-key", type=click.Path(dir_okay=False, exists=True), help="Key of --client-cert."
        ),
        click.option(
            "--resolve-path", default="/v1/mc/resolve", show_default=True, help="Path of the resolve route."
        ),
        click.option(
            "--token-path", default="/v1/mc/tokens", show_default=True, help="Path of the Get Token route."
        ),
        click.option(
            "--deadline",
            type=FloatRange(min=0.1),
            default=60.0,
            show_default=True,
            help="Seconds Marketing Cloud waits for an answer.",
        ),
        click.option(
            "--time-scale",
            type=FloatRange(min=0.0, max=1.0),
            default=1.0,
            show_default=True,
            help="Multiply the retry waits (5, 30, 60, 120 s); 0.01 makes them 50 ms to 1.2 s.",
        ),
        click.option(
            "--queue",
            "queue_file",
            type=OutputFile(),
            default="no-token-queue.jsonl",
            show_default=True,
            help="No Token Queue file (JSON lines, values masked), written when a message is queued.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print the report as JSON on stdout."),
        click.option(
            "--html",
            type=OutputFile(),
            help="Write a self-contained HTML report.",
        ),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _target(kwargs: dict[str, Any]) -> Any:
    from ..harness import Credentials, Target, TlsFileError, TlsOptions  # noqa: PLC0415 - the harness loads on use

    client_file = kwargs.pop("client_file")
    url = kwargs.pop("url")
    user, password, ca = kwargs.pop("user"), kwargs.pop("password"), kwargs.pop("ca")
    if client_file is not None:
        try:
            doc = json.loads(client_file.read_text())
            fields = {k: doc.get(k) for k in ("url", "username", "password", "ca_file")}
        except (OSError, ValueError, AttributeError):
            fields = {}
        if not isinstance(fields.get("url"), str) or not all(
            f is None or isinstance(f, str) for f in fields.values()
        ):
            fail(
                f"{client_file} is not a client file with a url",
                "use the dev-client.json that serve --dev writes",
                EXIT_USAGE,
            )
        url = url or fields["url"]
        user = user or fields["username"]
        password = password or fields["password"]
        ca = ca or fields["ca_file"]
    if not url:
        fail(
            "no server given",
            "give --url https://HOST[:PORT] (or --client-file .sendvault/dev-client.json)",
            EXIT_USAGE,
        )
    token_url, client_id, secret = (
        kwargs.pop("token_url"),
        kwargs.pop("client_id"),
        kwargs.pop("client_secret"),
    )
    if token_url and not (client_id and secret):
        fail("--token-url needs --client-id and --client-secret", f"or set ${_SECRET_ENV}", EXIT_USAGE)
    if not token_url and user is not None and password is None:
        fail("--user needs a password", f"give --password or set ${_PASSWORD_ENV}", EXIT_USAGE)
    cert, key = kwargs.pop("client_cert"), kwargs.pop("client_key")
    if key and not cert:
        fail("--client-key needs --client-cert", None, EXIT_USAGE)
    http_url = kwargs.pop("http_url", None)
    _check_where(url, http_url, token_url, kwargs)
    tls = TlsOptions(ca, cert, key)
    try:
        tls.context()
    except TlsFileError as exc:
        fail(str(exc), exc.hint, EXIT_USAGE)
    credentials = (
        Credentials(token_url=token_url, client_id=client_id, client_secret=secret)
        if token_url
        else Credentials(user=user, password=password)
    )
    return Target(
        url=url,
        credentials=credentials,
        tls=tls,
        http_url=http_url,
        resolve_path=kwargs.pop("resolve_path"),
        token_path=kwargs.pop("token_path"),
        deadline=kwargs.pop("deadline"),
    )


def _check_where(url: str, http_url: str | None, token_url: str | None, kwargs: dict[str, Any]) -> None:
    """URLs and paths the harness can write into a request, or one line and exit 2."""
    from ..harness._http import Endpoint, check_path  # noqa: PLC0415

    checks: list[tuple[Callable[[], object], str]] = [
        (lambda: Endpoint.parse(url, want="https"), "--url takes the https:// URL of the server"),
        (lambda: check_path(kwargs["resolve_path"], "--resolve-path"), "for example /v1/mc/resolve"),
        (lambda: check_path(kwargs["token_path"], "--token-path"), "for example /v1/mc/tokens"),
    ]
    if http_url:
        checks.append(
            (lambda: Endpoint.parse(http_url, want="http"), "--http-url takes the plain http:// URL")
        )
    if token_url:
        checks.append(
            (lambda: Endpoint.parse(token_url), "--token-url takes the URL of the OAuth token endpoint")
        )
    for run, hint in checks:
        try:
            run()
        except ValueError as exc:
            fail(str(exc), hint, EXIT_USAGE)


def _dirs(queue_file: Path, html: Path | None) -> None:
    """The report and queue files can be written where they were asked for (checked before a run)."""
    for name, path in (("--queue", queue_file), ("--html", html)):
        if path is not None and not path.absolute().parent.is_dir():
            fail(f"{name} {path}: the directory {path.parent} does not exist", "create it first", EXIT_USAGE)


def _finish(report: Any, as_json: bool, html: Path | None) -> None:
    from rich.console import Console  # noqa: PLC0415

    from ..harness.report import print_summary, to_json, write_html  # noqa: PLC0415

    if html is not None:
        try:
            write_html(report, html)
        except OSError as exc:
            fail(f"the HTML report cannot be written to {html} ({exc.strerror})", None, EXIT_USAGE)
    if as_json:
        sys.stdout.buffer.write(to_json(report))
        sys.stdout.flush()
    else:
        print_summary(report, Console(highlight=False))
    sys.exit(0 if report.summary.verdict == "pass" else EXIT_FAILURE)


def _unreachable(run: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(run)
    def wrapper(**kwargs: Any) -> None:
        from ..harness import Unreachable  # noqa: PLC0415
        from ..harness._mask import clean  # noqa: PLC0415

        try:
            run(**kwargs)
        except Unreachable as exc:
            # The message may quote the server: control characters made visible, cut to a line.
            fail(clean(str(exc), 1000), exc.hint or "check --url, --ca and the credentials", EXIT_USAGE)
        except KeyboardInterrupt:
            fail("interrupted", None, EXIT_USAGE)

    return wrapper


@click.group()
def harness() -> None:
    """Play Marketing Cloud against a token server (ours or any other): conformance and load.

    Exit codes: 0 every check passed (and, for load, the deadline held); 1 something failed or
    could not be tested; 2 usage error or the server cannot be reached.
    """


@harness.command("check")
@_target_options
@click.option("--http-url", help="Plain-HTTP URL of the server, to check its 308 to HTTPS.")
@click.option(
    "--skip", multiple=True, metavar="CHECK_ID", help="Leave a check out of the verdict (repeatable)."
)
@click.option("--seed", type=int, help="Seed of the test values (random by default).")
@_unreachable
def check(
    as_json: bool,
    html: Path | None,
    time_scale: float,
    queue_file: Path,
    skip: tuple[str, ...],
    seed: int | None,
    **kwargs: Any,
) -> None:
    """Check a server against Marketing Cloud's token contract; every check has a stable id."""
    from rich.console import Console  # noqa: PLC0415

    from ..harness import CHECKS, CheckOptions, run_checks  # noqa: PLC0415

    unknown = sorted(set(skip) - set(CHECKS))
    if unknown:
        fail(f"unknown check id: {', '.join(unknown)}", "docs/harness.md lists every id", EXIT_USAGE)
    _dirs(queue_file, html)
    target = _target(kwargs)
    options = CheckOptions(time_scale=time_scale, queue_file=queue_file, skip=frozenset(skip), seed=seed)
    console = Console(stderr=True)
    if console.is_terminal:
        with console.status("checking") as status:
            report = asyncio.run(
                run_checks(target, options, progress=lambda what: status.update(f"checking: {what}"))
            )
    else:
        report = asyncio.run(run_checks(target, options))
    _finish(report, as_json, html)


@harness.command("load")
@_target_options
@click.option(
    "--connections",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    help="Keep-alive connections.",
)
@click.option(
    "--batch",
    type=click.IntRange(1, 100_000),
    default=500,
    show_default=True,
    help="Tokens per resolve call.",
)
@click.option("--duration", type=FloatRange(min=0.1), help="Seconds of load (default 30 unless --count).")
@click.option("--count", type=click.IntRange(min=1), help="Resolve calls in all (instead of --duration).")
@click.option(
    "--pool",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Distinct tokens, made through Get Token first.",
)
@click.option(
    "--processes",
    type=click.IntRange(min=0, max=64),
    default=0,
    help="Generator processes (default: one per core, at most 4).",
)
@click.option(
    "--sms",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Inbound-SMS Get Token calls (STOP) during the run.",
)
@click.option(
    "--faults",
    is_flag=True,
    help="Drop connections and time out mid-call on purpose, to see how the server copes.",
)
@click.option(
    "--fault-rate",
    type=FloatRange(0.0, 1.0),
    default=0.05,
    show_default=True,
    help="Share of calls --faults breaks.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the pool's values (the same seed reuses tokens).",
)
@_unreachable
def load(
    as_json: bool,
    html: Path | None,
    time_scale: float,
    queue_file: Path,
    connections: int,
    batch: int,
    duration: float | None,
    count: int | None,
    pool: int,
    processes: int,
    sms: int,
    faults: bool,
    fault_rate: float,
    seed: int,
    **kwargs: Any,
) -> None:
    """Marketing Cloud's send-time load: resolve batches on keep-alive connections, every answer checked."""
    from rich.console import Console  # noqa: PLC0415

    from ..harness.load import LoadOptions, run_load  # noqa: PLC0415

    if duration is not None and count is not None:
        fail("give --duration or --count, not both", None, EXIT_USAGE)
    _dirs(queue_file, html)
    target = _target(kwargs)
    options = LoadOptions(
        connections=connections,
        batch=batch,
        duration=duration if duration is not None or count is not None else 30.0,
        count=count,
        pool=pool,
        processes=processes,
        time_scale=time_scale,
        fault_rate=fault_rate if faults else 0.0,
        sms=sms,
        queue_file=queue_file,
        seed=seed,
    )
    console = Console(stderr=True)
    if not console.is_terminal:
        report = run_load(target, options)
    else:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

        total = float(count) if count is not None else float(options.duration or 0)
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[calls]} calls"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("making the token pool", total=total, calls=0)

            def made(n: int) -> None:
                bar.update(task, description=f"load ({n:,} tokens)")

            def moved(done: int, elapsed: float) -> None:
                bar.update(task, completed=done if count is not None else min(elapsed, total), calls=done)

            report = run_load(target, options, progress=moved, pool_made=made)
    _finish(report, as_json, html)
