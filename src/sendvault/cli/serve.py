"""`sendvault serve`, `sendvault clients ...` and `sendvault certs ...`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import click

from ..api.auth import SCOPES, register_client, rotate_secret
from ..audit import Event
from ..errors import NotFound
from ..vault import open_store
from ._common import EXIT_USAGE, AppContext, changes_state, emit_json, fail, pass_app
from ._output import print_table

__all__ = ["certs", "clients", "serve"]


@click.command()
@click.option(
    "--dev", is_flag=True, help="Create a local CA, certificate and `dev` client; write dev-client.json."
)
@click.option("--host", help="Bind address (setting: host).")
@click.option("--https-port", type=int, help="HTTPS port (default 8443).")
@click.option("--http-port", type=int, help="Plain HTTP port answering 308 (default 8080; 0 = off).")
@click.option("--admin-port", type=int, help="Metrics port on admin_host (default 9464; 0 = off).")
@click.option("--workers", type=int, help="Worker processes (default 1).")
@pass_app
def serve(
    app: AppContext,
    dev: bool,
    host: str | None,
    https_port: int | None,
    http_port: int | None,
    admin_port: int | None,
    workers: int | None,
) -> None:
    """Serve the Marketing Cloud token API over HTTPS until interrupted.

    Runs the checks of `sendvault config check` first and refuses to start, in one line, when
    one fails. Logs a start-up line, one access line per call and a shutdown line on stderr
    (log_format, log_level). SIGHUP, or a change of the certificate files, reloads the
    certificate without a restart.
    """
    from ..server.logs import configure_logging  # noqa: PLC0415 - the server stack loads only here
    from ..server.run import serve as run  # noqa: PLC0415

    app.overrides = {
        "host": host,
        "https_port": https_port,
        "http_port": http_port,
        "admin_port": admin_port,
        "workers": workers,
    }
    settings = app.settings
    configure_logging(settings)
    on_ready = None
    if dev:
        from ..server.dev import curl_example, prepare_dev, write_dev_client  # noqa: PLC0415

        try:
            content = prepare_dev(settings)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            fail(f"dev mode cannot prepare {settings.home_path} ({exc.strerror or exc}{where})",
                 "remove what is in the way, or give SENDVAULT_HOME another folder")  # fmt: skip

        def on_ready() -> None:
            path = write_dev_client(settings, content)
            click.echo(f"sendvault is serving {content['url']} (dev mode; credentials in {path})", err=True)
            click.echo("try it:", err=True)
            click.echo(curl_example(content))

    run(settings, dev=dev, on_ready=on_ready)


@click.group()
def clients() -> None:
    """Manage the API clients that may call the token API."""


def _client_name(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    if not value or len(value) > 128 or any(c in value for c in ":\r\n\t "):
        raise click.BadParameter(
            "a client name is 1 to 128 characters without spaces, tabs, line breaks or ':' "
            "(e.g. marketing-cloud)"
        )
    return value


def _scopes(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    names = value.replace(",", " ").split()
    unknown = [n for n in names if n not in SCOPES]
    if unknown or not names:
        raise click.BadParameter(
            f"{' '.join(unknown) or 'nothing'} is not a scope; give one or more of: {', '.join(SCOPES)}"
        )
    return " ".join(names)


def _networks(_ctx: click.Context, _param: click.Parameter, value: tuple[str, ...]) -> tuple[str, ...]:
    import ipaddress  # noqa: PLC0415

    for item in value:
        for part in item.replace(",", " ").split():
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise click.BadParameter(
                    f"{part} is not an IP network; write a CIDR such as 198.51.100.0/24 or "
                    "2001:db8::/32 (a bare address is one host)"
                ) from None
    return value


def _rate(_ctx: click.Context, _param: click.Parameter, value: float) -> float:
    if not value >= 0:  # NaN is not a rate either
        raise click.BadParameter("give values per second, 0 or more (0 = no limit)")
    return value


@clients.command("add")
@click.argument("name", callback=_client_name)
@click.option(
    "--scopes",
    default="resolve tokenize",
    show_default=True,
    callback=_scopes,
    help=f"Among: {', '.join(SCOPES)}.",
)
@click.option(
    "--allow",
    "allow",
    multiple=True,
    callback=_networks,
    help="Allowed caller network (CIDR); repeat. Default: any.",
)
@click.option(
    "--tokenize-rate",
    type=float,
    default=0.0,
    callback=_rate,
    help="Get Token values per second (0 = no limit).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the new credentials as JSON.")
@pass_app
@changes_state
def clients_add(
    app: AppContext, name: str, scopes: str, allow: tuple[str, ...], tokenize_rate: float, as_json: bool
) -> None:
    """Create client NAME and print its secret (shown only this once)."""
    store = open_store(app.settings)
    try:
        if store.get_client(name) is not None:
            fail(f"client {name} exists", "use `sendvault clients rotate-secret` for a new secret")
        secret = register_client(
            store, name, scopes=scopes, allow=" ".join(allow), tokenize_rate=tokenize_rate
        )
    finally:
        store.close()
    # What the client may do, never its secret.
    meta = {"client": name, "scopes": scopes, "allow": " ".join(allow), "tokenize_rate": tokenize_rate}
    app.record(Event.CLIENT_ADD, meta=meta)
    if as_json:
        emit_json(
            {
                "client_id": name,
                "client_secret": secret,
                **_client_doc(scopes, " ".join(allow), tokenize_rate),
            }
        )
    else:
        click.echo(secret)
        click.echo(f"client {name} added; the secret above is shown only once", err=True)


@clients.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_app
def clients_list(app: AppContext, as_json: bool) -> None:
    """List clients (never their secrets)."""
    store = open_store(app.settings)
    try:
        records = store.list_clients()
    finally:
        store.close()
    rows = [
        {"client_id": r.client_id, **_client_doc(r.scopes, r.allow_cidrs, r.tokenize_rate)} for r in records
    ]
    if as_json:
        emit_json(rows)
        return
    print_table(
        ["client", "scopes", "allow", "tokenize rate"],
        [[r.client_id, r.scopes, r.allow_cidrs or "any", r.tokenize_rate or "no limit"] for r in records],
    )


def _client_doc(scopes: str, allow: str, rate: float) -> dict[str, object]:
    """A client in --json: lists are lists (scopes, networks), as `clients add` and `list` agree."""
    return {
        "scopes": sorted(scopes.replace(",", " ").split()),
        "allow": allow.replace(",", " ").split(),
        "tokenize_rate": rate,
    }


@clients.command("remove")
@click.argument("name")
@pass_app
@changes_state
def clients_remove(app: AppContext, name: str) -> None:
    """Remove client NAME; its secret and tokens stop working at once (cached checks within 30 s)."""
    store = open_store(app.settings)
    try:
        if not store.delete_client(name):
            fail(f"no client {name}", "see `sendvault clients list`")
    finally:
        store.close()
    app.record(Event.CLIENT_REMOVE, meta={"client": name})
    click.echo(f"client {name} removed", err=True)


@clients.command("rotate-secret")
@click.argument("name")
@pass_app
@changes_state
def clients_rotate(app: AppContext, name: str) -> None:
    """Give client NAME a new secret (printed once); older secrets and tokens stop working."""
    store = open_store(app.settings)
    try:
        secret = rotate_secret(store, name)
    except NotFound:
        fail(f"no client {name}", "see `sendvault clients list`")
    finally:
        store.close()
    app.record(Event.CLIENT_ROTATE, meta={"client": name})
    click.echo(secret)
    click.echo(f"client {name}: new secret above, shown only once", err=True)


_CERT_FILES = ("ca", "server", "database")  # pairs of the certs folder a client pair must not replace


def _cert_names(names: tuple[str, ...]) -> None:
    """DNS names (A-labels) or IP addresses: printable ASCII, as a certificate holds them."""
    for name in names:
        if not name or not name.isascii() or not name.isprintable() or " " in name:
            hint = "give ASCII names; an internationalized name as its A-label (xn--...)"
            fail(f"{name!r} is not a DNS name or IP address", hint, EXIT_USAGE)


@contextlib.contextmanager
def _cert_errors(directory: Path) -> Iterator[None]:
    """A folder that cannot be written, or a device, FIFO or folder where a file goes: one line;
    a name a certificate cannot hold (over 64 characters as a common name): a usage error."""
    try:
        yield
    except ValueError as exc:
        fail(f"cannot issue the certificate ({exc})", "check the names, and the CA in the folder", EXIT_USAGE)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"cannot write the certificates in {directory} ({exc.strerror or exc}{where})",
             "give --dir a folder you can write to")  # fmt: skip


@click.group()
def certs() -> None:
    """Issue certificates from a local CA (ECDSA P-256)."""


@certs.command("server")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Default: $SENDVAULT_HOME/certs.",
)
@pass_app
def certs_server(app: AppContext, names: tuple[str, ...], directory: Path | None) -> None:
    """Issue a server certificate for NAMES (DNS names or IP addresses): server.pem and server.key."""
    from ..server.certs import CertAuthority  # noqa: PLC0415

    _cert_names(names)
    directory = directory or app.settings.home_path / "certs"
    with _cert_errors(directory):
        ca = CertAuthority.load_or_create(directory)
        ca.issue(directory / "server.pem", directory / "server.key", list(names))
    click.echo(f"{directory / 'server.pem'} and server.key issued by {ca.cert_path}", err=True)


@certs.command("database")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Default: $SENDVAULT_HOME/certs.",
)
@pass_app
def certs_database(app: AppContext, names: tuple[str, ...], directory: Path | None) -> None:
    """Issue a PostgreSQL server certificate for NAMES (the host names or IP addresses sendvault
    connects to): database.pem and database.key. Client certificates: `certs client DBUSER`."""
    from ..server.certs import CertAuthority  # noqa: PLC0415

    _cert_names(names)
    directory = directory or app.settings.home_path / "certs"
    with _cert_errors(directory):
        ca = CertAuthority.load_or_create(directory)
        ca.issue(directory / "database.pem", directory / "database.key", list(names))
    click.echo(
        f"{directory / 'database.pem'} and database.key issued by {ca.cert_path}; in postgresql.conf: "
        "ssl = on, ssl_cert_file, ssl_key_file (owned by the server's user, mode 0600) and ssl_ca_file = "
        "that CA; sendvault trusts it with database_ssl_ca_file",
        err=True,
    )


@certs.command("client")
@click.argument("name")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    help="Default: $SENDVAULT_HOME/certs.",
)
@pass_app
def certs_client(app: AppContext, name: str, directory: Path | None) -> None:
    """Issue a client certificate for mutual TLS: NAME.pem and NAME.key (CN = NAME; for a
    database link, NAME is the database user that `hostssl ... cert` rules map it to)."""
    from ..server.certs import CertAuthority  # noqa: PLC0415

    if "/" in name or name.startswith(".") or not name.strip() or name in _CERT_FILES:
        # ca, server and database are the CA's and the servers' own pairs in the same folder.
        fail(f"{name!r} cannot name the files NAME.pem and NAME.key", "give a user name such as sendvault",
             EXIT_USAGE)  # fmt: skip
    _cert_names((name,))
    directory = directory or app.settings.home_path / "certs"
    with _cert_errors(directory):
        ca = CertAuthority.load_or_create(directory)
        ca.issue(directory / f"{name}.pem", directory / f"{name}.key", [name], client=True)
    click.echo(
        f"{directory / name}.pem and .key issued; trust {ca.cert_path} with tls_client_ca_file (or, for "
        "a database link, ssl_ca_file in postgresql.conf; then database_ssl_cert_file/_key_file)",
        err=True,
    )
