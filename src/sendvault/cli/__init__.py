"""The `sendvault` command line: thin commands over the packages; no logic of its own."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..audit import Event
from ..config import load_settings, settings_reference
from ..errors import ConfigError, InvalidValue, SendvaultError
from ._common import EXIT_FAILURE, EXIT_USAGE, AppContext, emit_json, hint_for, pass_app
from .audit import audit
from .contact import contact, erase
from .scan import scan
from .serve import certs, clients, serve
from .token import token

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Turns sendvault errors into one line plus a hint and an exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            _report(exc, EXIT_USAGE)
        except InvalidValue as exc:
            _report(exc, EXIT_FAILURE)
        except SendvaultError as exc:
            _report(exc, EXIT_FAILURE)


def _report(exc: SendvaultError, code: int) -> None:
    click.echo(f"error: {exc}", err=True)
    hint = hint_for(exc)
    if hint:
        click.echo(f"hint: {hint}", err=True)
    sys.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sendvault")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file (default: $SENDVAULT_HOME/sendvault.toml).",
)
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None) -> None:
    """sendvault: token vault for Marketing Cloud Tokenized Sending."""
    ctx.obj = AppContext(config_file)


@cli.group()
def config() -> None:
    """Show and check settings."""


@config.command("show")
@pass_app
def config_show(app: AppContext) -> None:
    """Print the effective settings as JSON (secrets masked)."""
    emit_json(app.settings.redacted())


@config.command("check")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path))
def config_check(config_file: Path | None) -> None:
    """Validate settings and exit 0, or print the first bad setting and exit 2."""
    load_settings(config_file)
    click.echo("settings ok", err=True)


@config.command("reference")
def config_reference() -> None:
    """Print the Markdown reference of every setting."""
    click.echo(settings_reference(), nl=False)


@cli.group()
def keys() -> None:
    """Manage data keys."""


@keys.command("rotate")
@pass_app
def keys_rotate(app: AppContext) -> None:
    """Add a new data key: new ciphertexts use it, existing ones still open."""
    key_id = app.vault.rotate_data_key()
    app.record(Event.KEY_ROTATE, meta={"key_id": key_id})
    click.echo(f"new data key {key_id}", err=True)


cli.add_command(token)
cli.add_command(contact)
cli.add_command(erase)
cli.add_command(serve)
cli.add_command(clients)
cli.add_command(certs)
cli.add_command(audit)
cli.add_command(scan)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="sendvault")
