"""`sendvault serve`, `sendvault clients ...` and `sendvault certs ...`."""

from __future__ import annotations

from pathlib import Path

import click

from ..api.auth import SCOPES, register_client, rotate_secret
from ..audit import Event
from ..config import load_settings
from ..errors import NotFound
from ..vault import open_store
from ._common import AppContext, emit_json, fail, pass_app

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
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file (as `sendvault --config FILE serve`).",
)
@pass_app
def serve(
    app: AppContext,
    dev: bool,
    host: str | None,
    https_port: int | None,
    http_port: int | None,
    admin_port: int | None,
    workers: int | None,
    config_file: Path | None,
) -> None:
    """Serve the Marketing Cloud token API over HTTPS until interrupted."""
    from ..server.run import serve as run  # noqa: PLC0415 - the server stack loads only here

    overrides = {
        "host": host,
        "https_port": https_port,
        "http_port": http_port,
        "admin_port": admin_port,
        "workers": workers,
    }
    settings = load_settings(config_file or app.config_file, overrides=overrides)
    on_ready = None
    if dev:
        from ..server.dev import curl_example, prepare_dev, write_dev_client  # noqa: PLC0415

        content = prepare_dev(settings)

        def on_ready() -> None:
            path = write_dev_client(settings, content)
            click.echo(f"sendvault is serving {content['url']} (dev mode; credentials in {path})", err=True)
            click.echo("try it:", err=True)
            click.echo(curl_example(content))

    run(settings, dev=dev, on_ready=on_ready)


@click.group()
def clients() -> None:
    """Manage the API clients that may call the token API."""


@clients.command("add")
@click.argument("name")
@click.option("--scopes", default="resolve tokenize", show_default=True, help=f"Among: {', '.join(SCOPES)}.")
@click.option("--allow", "allow", multiple=True, help="Allowed caller network (CIDR); repeat. Default: any.")
@click.option("--tokenize-rate", type=float, default=0.0, help="Get Token values per second (0 = no limit).")
@click.option("--json", "as_json", is_flag=True, help="Print the new credentials as JSON.")
@pass_app
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
        emit_json({"client_id": name, "client_secret": secret, "scopes": scopes.split()})
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
        {
            "client_id": r.client_id,
            "scopes": r.scopes,
            "allow": r.allow_cidrs,
            "tokenize_rate": r.tokenize_rate,
        }
        for r in records
    ]
    if as_json:
        emit_json(rows)
        return
    for row in rows:
        allow = row["allow"] or "any"
        click.echo(f"{row['client_id']}\tscopes={row['scopes']}\tallow={allow}\trate={row['tokenize_rate']}")


@clients.command("remove")
@click.argument("name")
@pass_app
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

    directory = directory or app.settings.home_path / "certs"
    ca = CertAuthority.load_or_create(directory)
    ca.issue(directory / "server.pem", directory / "server.key", list(names))
    click.echo(f"{directory / 'server.pem'} and server.key issued by {ca.cert_path}", err=True)


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
    """Issue a client certificate for mutual TLS: NAME.pem and NAME.key."""
    from ..server.certs import CertAuthority  # noqa: PLC0415

    directory = directory or app.settings.home_path / "certs"
    ca = CertAuthority.load_or_create(directory)
    ca.issue(directory / f"{name}.pem", directory / f"{name}.key", [name], client=True)
    click.echo(
        f"{directory / name}.pem and .key issued; trust {ca.cert_path} with tls_client_ca_file", err=True
    )
