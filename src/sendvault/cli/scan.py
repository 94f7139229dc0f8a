"""`sendvault scan tls|http`: am I affected by the platforms' TLS and HTTPS changes?"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..scan.findings import CheckResult, Severity
from ._common import EXIT_USAGE, emit_json, fail

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

        from .._fs import write_atomic  # noqa: PLC0415
        from ..scan.report import to_html, to_sarif  # noqa: PLC0415

        if sarif is not None:
            document = msgspec.json.format(msgspec.json.encode(to_sarif(results)), indent=2)
            write_atomic(sarif, document, mode=0o644)
        if html is not None:
            write_atomic(html, to_html(results).encode(), mode=0o644)
    if as_json:
        emit_json(to_json(results))
    else:
        from rich.console import Console  # noqa: PLC0415

        from ..scan.report import to_table  # noqa: PLC0415

        Console().print(to_table(results))
    sys.exit(exit_code(results, Severity[fail_on.upper()]))


def _host_port(target: str, default: int) -> tuple[str, int]:
    if target.startswith("["):  # [IPv6]:port
        host, sep, port = target[1:].partition("]:")
        host = host.rstrip("]")
    else:
        host, sep, port = target.rpartition(":") if target.count(":") == 1 else (target, "", "")
    if not sep:
        return target.strip("[]"), default
    if not port.isdigit() or not 0 < int(port) < 65536:
        fail(
            "the port must be a number from 1 to 65535",
            "write HOST:PORT, e.g. api.example.com:443",
            code=EXIT_USAGE,
        )
    return host, int(port)


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
    "--ca", "ca_file", type=click.Path(dir_okay=False, exists=True), help="CA bundle (default: system)."
)
@click.option("--fail-on", type=click.Choice(_SEVERITIES), default="medium", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
def scan_tls_cmd(
    target: str, sni: str | None, starttls: str | None, ca_file: str | None, fail_on: str, as_json: bool
) -> None:
    """TLS versions, key exchange and ciphers, and the certificate of HOST[:PORT]."""
    from ..scan.tls import scan_tls  # noqa: PLC0415

    default = {"mysql": 3306, "postgres": 5432}.get(starttls or "", 443)
    host, port = _host_port(target, default)
    _finish([scan_tls(host, port, sni=sni, starttls=starttls, ca_file=ca_file)], as_json, fail_on)


@scan.command("http")
@click.argument("url")
@click.option(
    "--ca", "ca_file", type=click.Path(dir_okay=False, exists=True), help="CA bundle for the HTTPS side."
)
@click.option("--fail-on", type=click.Choice(_SEVERITIES), default="medium", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
def scan_http_cmd(url: str, ca_file: str | None, fail_on: str, as_json: bool) -> None:
    """HTTP to HTTPS redirect (code, permanence, method) and HSTS of URL."""
    from ..scan.http import scan_http  # noqa: PLC0415

    _finish([scan_http(url, ca_file=ca_file)], as_json, fail_on)


@scan.command("content")
@click.argument("target")
@click.option(
    "--crawl", type=int, default=0, show_default=True, help="Follow same-host links this many levels."
)
@click.option("--fail-on", type=click.Choice(_SEVERITIES), default="medium", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
def scan_content_cmd(target: str, crawl: int, fail_on: str, as_json: bool) -> None:
    """http:// scripts, styles, frames, images and media in pages: a URL, a file or a directory."""
    from ..scan.content import scan_content  # noqa: PLC0415

    _finish([scan_content(target, crawl=crawl)], as_json, fail_on)


@scan.command("code")
@click.argument("path", type=click.Path(exists=True))
@click.option("--fail-on", type=click.Choice(_SEVERITIES), default="medium", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
def scan_code_cmd(path: str, fail_on: str, as_json: bool) -> None:
    """http:// endpoints in source and configuration files (respects .gitignore)."""
    from ..scan.code import scan_code  # noqa: PLC0415

    _finish([scan_code(path)], as_json, fail_on)


@scan.command("db")
@click.argument("kind", type=click.Choice(["mysql", "postgres"]))
@click.argument("target")
@click.option(
    "--ca", "ca_file", type=click.Path(dir_okay=False, exists=True), help="CA the link verifies with."
)
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, exists=True), help="Client certificate.")
@click.option("--key", "key_file", type=click.Path(dir_okay=False, exists=True), help="Client key.")
@click.option("--fail-on", type=click.Choice(_SEVERITIES), default="medium", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
def scan_db_cmd(
    kind: str,
    target: str,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    fail_on: str,
    as_json: bool,
) -> None:
    """Whether a MySQL/MariaDB or PostgreSQL server offers and requires TLS, and accepts your files."""
    from ..scan.db import scan_db  # noqa: PLC0415

    host, port = _host_port(target, 3306 if kind == "mysql" else 5432)
    _finish(
        [scan_db(kind, host, port, ca_file=ca_file, cert_file=cert_file, key_file=key_file)], as_json, fail_on
    )


@scan.command("client")
@click.option("--fail-on", type=click.Choice(_SEVERITIES), default="medium", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
def scan_client_cmd(fail_on: str, as_json: bool) -> None:
    """Can this host's Python, curl and openssl still connect once TLS 1.2+ with ECDHE is required?"""
    from ..scan.client import scan_client  # noqa: PLC0415

    _finish([scan_client()], as_json, fail_on)


@scan.command("all")
@click.option(
    "--targets", "targets", required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option(
    "--sarif", type=click.Path(dir_okay=False, path_type=Path), help="Also write a SARIF 2.1.0 report."
)
@click.option("--html", type=click.Path(dir_okay=False, path_type=Path), help="Also write an HTML report.")
@click.option("--fail-on", type=click.Choice(_SEVERITIES), default="medium", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the JSON document.")
def scan_all_cmd(targets: Path, sarif: Path | None, html: Path | None, fail_on: str, as_json: bool) -> None:
    """Every target of a TOML file (tls, http, content, code, db, client): one report."""
    from ..scan.targets import scan_targets  # noqa: PLC0415

    try:
        results = scan_targets(targets)
    except ValueError as exc:
        fail(str(exc), "see docs/scan.md for the targets file format", code=EXIT_USAGE)
    _finish(results, as_json, fail_on, sarif, html)
