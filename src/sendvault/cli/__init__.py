"""The `sendvault` command line: thin commands over the packages; no logic of its own."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import click

from .. import __version__
from ..errors import ConfigError, InvalidValue, SendvaultError
from ._common import EXIT_FAILURE, EXIT_USAGE, AppContext, emit_json, hint_for, pass_app

__all__ = ["cli", "main"]

# Subcommands load on first use: `sendvault scan` need not import the vault, the API server or
# the audit log, and a CI job's scan starts in a fraction of the time.
_LAZY = {
    "audit": "audit:audit",
    "certs": "serve:certs",
    "clients": "serve:clients",
    "contact": "contact:contact",
    "erase": "contact:erase",
    "scan": "scan:scan",
    "serve": "serve:serve",
    "token": "token:token",
}


class _Group(click.Group):
    """Lazy subcommands, and sendvault errors as one line plus a hint and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY and cmd_name not in self.commands:
            module, attr = _LAZY[cmd_name].split(":")
            command = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

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
    from ..config import load_settings  # noqa: PLC0415 - `scan` starts without the settings module

    load_settings(config_file)
    click.echo("settings ok", err=True)


@config.command("reference")
def config_reference() -> None:
    """Print the Markdown reference of every setting."""
    from ..config import settings_reference  # noqa: PLC0415

    click.echo(settings_reference(), nl=False)


@cli.group()
def keys() -> None:
    """Manage data keys."""


@keys.command("rotate")
@pass_app
def keys_rotate(app: AppContext) -> None:
    """Add a new data key: new ciphertexts use it, existing ones still open."""
    from ..audit import Event  # noqa: PLC0415

    key_id = app.vault.rotate_data_key()
    app.record(Event.KEY_ROTATE, meta={"key_id": key_id})
    click.echo(f"new data key {key_id}", err=True)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="sendvault")
