"""`sendvault scan tls|ssh|http|content|code|db|client|listen|all`: am I affected by the changes?"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path

import click

from ..scan.findings import CheckResult, Severity
from ..scan.targets import DB_PASSWORD_ENV, host_port, plain_host
from ._common import EXIT_USAGE, FloatRange, OutputFile, emit_json, fail, stdout_errors

__all__ = ["scan"]

_SEVERITIES = [s.label for s in Severity]


def _finish(
    results: list[CheckResult],
    as_json: bool,
    fail_on: str,
    sarif: Path | None = None,
    html: Path | None = None,
) -> None:
    # Each output loads what it needs: a CI job's `scan tls --json` starts in a fraction of the time.
    from ..scan.report import exit_code, to_json  # noqa: PLC0415

    if sarif is not None or html is not None:
        import msgspec  # noqa: PLC0415

        from ..scan.report import to_html, to_sarif  # noqa: PLC0415

        if sarif is not None:
            _write_report(
                sarif, "SARIF", msgspec.json.format(msgspec.json.encode(to_sarif(results)), indent=2)
            )
        if html is not None:
            _write_report(html, "HTML", to_html(results).encode())
    with stdout_errors():
        if as_json:
            emit_json(to_json(results))
        else:
            from ..scan.report import table_rows  # noqa: PLC0415
            from ._output import print_table  # noqa: PLC0415

            print_table(["check", "target", "rule", "severity", "detail"], table_rows(results))
    sys.exit(exit_code(results, Severity[fail_on.upper()]))


def _write_report(path: Path, kind: str, document: bytes) -> None:
    """Write a report whole; a path that cannot be written after all is one error line, exit 2."""
    from .._fs import write_atomic  # noqa: PLC0415

    try:
        write_atomic(path, document, mode=0o644)
    except OSError as exc:
        fail(f"cannot write the {kind} report to {path} ({exc.strerror or exc})",
             "give a file path in a directory you can write to", code=EXIT_USAGE)  # fmt: skip


def _reported(command: Callable[..., list[CheckResult]]) -> Callable[..., None]:
    """Give a scan command the shared outputs (--fail-on, --json, --sarif, --html) and exit code."""

    @functools.wraps(command)
    def run(*, fail_on: str, as_json: bool, sarif: Path | None, html: Path | None, **kwargs: object) -> None:
        _finish(command(**kwargs), as_json, fail_on, sarif, html)

    options = [
        click.option("--fail-on", type=click.Choice(_SEVERITIES), default="medium", show_default=True),
        click.option("--json", "as_json", is_flag=True, help="Print the JSON document."),
        click.option(
            "--sarif",
            type=OutputFile(),
            help="Also write a SARIF 2.1.0 report.",
        ),
        click.option("--html", type=OutputFile(), help="Also write an HTML report."),
    ]
    for option in reversed(options):
        run = option(run)
    return run


def _host_port(target: str, default: int) -> tuple[str, int]:
    try:
        host, port = host_port(target, default)
    except ValueError:
        fail(
            "the port must be a number from 1 to 65535",
            f"write HOST:PORT, e.g. api.example.com:{default}",
            code=EXIT_USAGE,
        )
    if not host:
        fail("a target needs a host", f"write HOST:PORT, e.g. api.example.com:{default}", code=EXIT_USAGE)
    if not plain_host(host):
        fail(f"{host!r} is not a host name or address",
             f"write HOST:PORT, e.g. api.example.com:{default}", code=EXIT_USAGE)  # fmt: skip
    return host, port


def _check_ca(ca_file: str | None) -> None:
    # Loaded here once, so that a file that is no CA bundle is a usage error, not a traceback.
    if ca_file is None:
        return
    from ..scan.tls import load_ca  # noqa: PLC0415

    try:
        load_ca(ca_file)
    except ValueError as exc:
        fail(str(exc), "give a PEM file of one or more CA certificates", code=EXIT_USAGE)


@click.group()
def scan() -> None:
    """Check endpoints against the platforms' security changes (exit 1 affected, 2 unknown)."""


@scan.command("tls")
@click.argument("target")
@click.option("--sni", help="Name to send and to match the certificate against (default: HOST).")
@click.option(
    "--starttls", type=click.Choice(["mysql", "postgres"]), help="Speak this protocol's SSL request first."
)
@click.option(
    "--ca", "ca_file", help="CA bundle (default: system).", type=click.Path(dir_okay=False, exists=True)
)
@_reported
def scan_tls_cmd(
    target: str, sni: str | None, starttls: str | None, ca_file: str | None
) -> list[CheckResult]:
    """TLS versions, key exchange and ciphers, and the certificate of HOST[:PORT]."""
    from ..scan.tls import scan_tls  # noqa: PLC0415

    default = {"mysql": 3306, "postgres": 5432}.get(starttls or "", 443)
    host, port = _host_port(target, default)
    _check_ca(ca_file)
    return [scan_tls(host, port, sni=sni, starttls=starttls, ca_file=ca_file)]


@scan.command("ssh")
@click.argument("targets", nargs=-1, required=True)
@click.option("--timeout", type=FloatRange(0.1, 120), default=5.0, show_default=True,
              help="Seconds allowed for each connection.")  # fmt: skip
@click.option("--fingerprints", is_flag=True,
              help="Read every host key for its SHA256 fingerprint, also those whose name gives their size "
                   "(Ed25519, ECDSA): one connection each.")  # fmt: skip
@_reported
def scan_ssh_cmd(targets: tuple[str, ...], timeout: float, fingerprints: bool) -> list[CheckResult]:
    """Key exchange, host keys, ciphers and MACs of SSH/SFTP servers HOST[:PORT]... (no login)."""
    from ..scan.ssh import scan_ssh  # noqa: PLC0415

    endpoints = [_host_port(t, 22) for t in targets]
    if len(endpoints) == 1:
        # One host needs no pool of its own (nor the concurrent.futures import: logging with it).
        return [scan_ssh(endpoints[0][0], endpoints[0][1], timeout=timeout, fingerprints=fingerprints)]
    # Eight at a time, on daemon threads: Ctrl-C ends the command at once. A thread pool's
    # workers are waited for at exit, so Ctrl-C waited out every scan in flight (--timeout).
    import _thread  # noqa: PLC0415

    from ..scan._sshdial import spawn  # noqa: PLC0415

    results: dict[int, CheckResult] = {}
    todo = iter(enumerate(endpoints))
    taking = _thread.allocate_lock()

    def work() -> None:
        while True:
            with taking:
                item = next(todo, None)
            if item is None:
                return
            n, (host, port) = item
            results[n] = scan_ssh(host, port, timeout=timeout, fingerprints=fingerprints)

    for wait in [spawn(work) for _ in range(min(8, len(endpoints)))]:
        wait()
    return [results[n] for n in range(len(endpoints))]


@scan.command("http")
@click.argument("url")
@click.option(
    "--ca", "ca_file", help="CA bundle for the HTTPS side.", type=click.Path(dir_okay=False, exists=True)
)
@click.option(
    "--http-port",
    type=click.IntRange(1, 65535),
    help="Port of the plain-HTTP side (default 80; an https:// URL's port is its TLS port).",
)
@_reported
def scan_http_cmd(url: str, ca_file: str | None, http_port: int | None) -> list[CheckResult]:
    """HTTP to HTTPS redirect (code, permanence, method, host) of every hop, and HSTS of URL.

    URL may be http:// or https://; either way the plain-HTTP side is probed on port 80 (or
    --http-port, or the port of an http:// URL), never on the TLS port.
    """
    from ..scan.http import scan_http  # noqa: PLC0415

    _check_ca(ca_file)
    return [scan_http(url, ca_file=ca_file, http_port=http_port)]


@scan.command("content")
@click.argument("target")
@click.option(
    "--crawl", type=int, default=0, show_default=True, help="Follow same-host links this many levels."
)
@click.option(
    "--ca",
    "ca_file",
    help="CA bundle for https:// pages (default: system).",
    type=click.Path(dir_okay=False, exists=True),
)
@_reported
def scan_content_cmd(target: str, crawl: int, ca_file: str | None) -> list[CheckResult]:
    """http:// scripts, styles, frames, images and media in pages: a URL, a file or a directory."""
    from ..scan.content import scan_content  # noqa: PLC0415

    _check_ca(ca_file)
    return [scan_content(target, crawl=crawl, ca_file=ca_file)]


@scan.command("code")
@click.argument("path", type=click.Path(exists=True))
@_reported
def scan_code_cmd(path: str) -> list[CheckResult]:
    """http:// endpoints in source and configuration files (respects .gitignore)."""
    from ..scan.code import scan_code  # noqa: PLC0415

    return [scan_code(path)]


@scan.command("db")
@click.argument("kind", type=click.Choice(["mysql", "postgres"]))
@click.argument("target")
@click.option(
    "--ca", "ca_file", help="CA the link verifies with.", type=click.Path(dir_okay=False, exists=True)
)
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, exists=True), help="Client certificate.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True), help="Client key.")
@click.option("--user", help="MySQL/MariaDB account for the plain-login probe (tells 'TLS required' apart).")
@click.option(
    "--password",
    "ask_password",
    is_flag=True,
    help=f"Prompt for the --user account's password (or set {DB_PASSWORD_ENV}).",
)
@_reported
def scan_db_cmd(
    kind: str,
    target: str,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    user: str | None,
    ask_password: bool,
) -> list[CheckResult]:
    """Whether a MySQL/MariaDB or PostgreSQL server offers and requires TLS, and accepts your files."""
    from ..scan.db import scan_db  # noqa: PLC0415

    host, port = _host_port(target, 3306 if kind == "mysql" else 5432)
    _check_ca(ca_file)
    if ask_password and user is None:
        fail("--password needs --user", "give the account with --user NAME", code=EXIT_USAGE)
    # The password never travels in argv (where `ps` shows it): the environment, or a prompt.
    password = os.environ.get(DB_PASSWORD_ENV) if user is not None else None
    if password is None and ask_password:
        password = click.prompt("password", hide_input=True, err=True)
    return [
        scan_db(
            kind, host, port, ca_file=ca_file, cert_file=cert_file, key_file=key_file, user=user,
            password=password,
        )
    ]  # fmt: skip


@scan.command("client")
@_reported
def scan_client_cmd() -> list[CheckResult]:
    """Can this host's Python, curl and openssl still connect once TLS 1.2+ with ECDHE is required?"""
    from ..scan.client import scan_client  # noqa: PLC0415

    return [scan_client()]


@scan.command("listen")
@click.option(
    "--tls-port",
    type=click.IntRange(0, 65535),
    default=8443,
    show_default=True,
    help="Port that records ClientHellos (0: any free port).",
)
@click.option(
    "--http-port",
    type=click.IntRange(0, 65535),
    default=8080,
    show_default=True,
    help="Port that answers every request with a 308 to the TLS port (0: any free port).",
)
@click.option("--duration", type=FloatRange(min=0.1), help="Stop after S seconds (default: at Ctrl-C).")
@click.option(
    "--bind",
    "host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 lets clients on other machines in).",
)
@click.option(
    "--cert",
    "cert_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="Certificate (default: listen.pem issued by sendvault's local CA).",
)
@click.option(
    "--key", "key_file", type=click.Path(dir_okay=False, exists=True, path_type=Path), help="Key of --cert."
)
@click.option(
    "--follow-wait",
    type=FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Seconds a client has to follow a 308 before it counts as not followed.",
)
@_reported
def scan_listen_cmd(
    tls_port: int,
    http_port: int,
    duration: float | None,
    host: str,
    cert_file: Path | None,
    key_file: Path | None,
    follow_wait: float,
) -> list[CheckResult]:
    """Let a client under test connect: what it offers (TLS port) and how it follows a 308 (HTTP port)."""
    import signal  # noqa: PLC0415
    import socket  # noqa: PLC0415

    from ..errors import ConfigError  # noqa: PLC0415
    from ..scan.listen import Listener, issue_certificate  # noqa: PLC0415
    from ..server.tls import server_context  # noqa: PLC0415
    from ._common import AppContext  # noqa: PLC0415

    if (cert_file is None) != (key_file is None):
        fail(
            "--cert and --key go together",
            "give both, or neither to use sendvault's local CA",
            code=EXIT_USAGE,
        )
    ca_file = None
    if cert_file is None or key_file is None:
        app = click.get_current_context().find_object(AppContext)
        directory = (app.settings.home_path if app is not None else Path.home() / ".sendvault") / "certs"
        names = ["localhost", "127.0.0.1", "::1", socket.gethostname()]
        if host not in names and host not in ("0.0.0.0", "::"):  # noqa: S104 - not binding, naming
            names.append(host)
        cert_file, key_file, ca_file = issue_certificate(directory, names)
    try:
        context = server_context(cert_file, key_file)
    except ConfigError as exc:
        fail(str(exc), "check --cert and --key (the key must be chmod 600)", code=EXIT_USAGE)
    listener = Listener(
        context,
        tls_port,
        http_port,
        host=host,
        follow_seconds=follow_wait,
        say=lambda line: click.echo(line, err=True),
    )
    try:
        listener.bind()
    except OSError as exc:
        fail(
            f"cannot listen on {host} ({exc.strerror or exc})",
            "choose other ports with --tls-port/--http-port",
            code=EXIT_USAGE,
        )
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"listening: TLS on {shown}:{listener.tls_port} (records ClientHellos; TLS 1.2+ with ECDHE and "
        f"AEAD, as the platforms require), HTTP on {shown}:{listener.http_port} (answers 308 to the TLS "
        f"port)",
        err=True,
    )
    if ca_file is not None:
        click.echo(
            f"the TLS port's certificate is issued by {ca_file}; a client must trust it:\n"
            f"  curl --cacert {ca_file} ...\n"
            f"  Python: SSL_CERT_FILE={ca_file} (requests: REQUESTS_CA_BUNDLE)\n"
            f"  Java: keytool -importcert -noprompt -alias sendvault-listen -file {ca_file} -keystore t.jks "
            "-storepass changeit; java -Djavax.net.ssl.trustStore=t.jks ...\n"
            f"  .NET/Windows: Import-Certificate -FilePath {ca_file} "
            "-CertStoreLocation Cert:\\LocalMachine\\Root\n"
            f"  Debian/Ubuntu: cp {ca_file} /usr/local/share/ca-certificates/sendvault-listen.crt && "
            "update-ca-certificates",
            err=True,
        )
    click.echo("stop with Ctrl-C" + (f" or after {duration:g} s" if duration else ""), err=True)
    previous = {
        sig: signal.signal(sig, lambda *_: listener.stop()) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        return listener.run(duration)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@scan.command("all")
@click.option(
    "--targets", "targets", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@_reported
def scan_all_cmd(targets: Path) -> list[CheckResult]:
    """Every target of a TOML file (tls, http, content, code, db, ssh, client): one report."""
    from ..scan.targets import scan_targets  # noqa: PLC0415

    try:
        return scan_targets(targets)
    except ValueError as exc:
        fail(str(exc), "see docs/scan.md for the targets file format", code=EXIT_USAGE)
