"""The click application: the root group, its lazy subcommands, and errors as one line and a hint."""

from __future__ import annotations

import errno
import importlib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, cast

import click

from .. import __version__
from ..errors import ConfigError, InvalidValue, SendvaultError, StdoutFailed
from ._common import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    AppContext,
    describe_error,
    emit_json,
    hint_for,
    pass_app,
    reason_hint,
)
from ._output import printable, stdout_failed

__all__ = ["cli"]

# Subcommands load on first use: `sendvault scan` need not import the vault, the API server or
# the audit log, and a CI job's scan starts in a fraction of the time.
_LAZY = {
    "audit": "audit:audit",
    "backup": "backup:backup",
    "certs": "serve:certs",
    "clients": "serve:clients",
    "contact": "contact:contact",
    "csv": "csvfile:csv_group",
    "db": "db:db",
    "exchange": "exchange:exchange",
    "erase": "contact:erase",
    "harness": "harness:harness",
    "restore": "backup:restore",
    "keys": "keys:keys",
    "scan": "scan:scan",
    "serve": "serve:serve",
    "status": "status:status",
    "token": "token:token",
}
# Commands that never read the settings, so take no --config of their own.
_NO_SETTINGS = frozenset({"scan", "reference", "harness"})


def _set_config(ctx: click.Context, _param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        ctx.ensure_object(AppContext).config_file = value


def _config_option() -> click.Option:
    return click.Option(
        ["--config", "config_file"],
        type=click.Path(dir_okay=False, path_type=Path),
        expose_value=False,
        callback=_set_config,
        help="TOML settings file (same as `sendvault --config FILE ...`).",
    )


# A full stop ends the sentence; an abbreviation's ("e.g.") or an ellipsis ("NAME...") does not.
_SENTENCE_END = re.compile(r"(?<!\be\.g)(?<!\bi\.e)(?<!\betc)(?<!\.)\.(\s|$)")


def _short_help(text: str | None) -> str | None:
    """A command's first sentence, whole: click's own cut stops at "e.g." or mid-word."""
    if not text:
        return None
    paragraph = " ".join(text.strip().split("\n\n", 1)[0].split())
    match = _SENTENCE_END.search(paragraph)
    return paragraph[: match.start() + 1] if match else paragraph


def _with_config_option(command: click.Command, name: str, settings: bool = True) -> click.Command:
    """Give every settings-reading command its own --config (so it works after the command too),
    and every command a whole first sentence as its line in the parent's command list."""
    if command.short_help is None:
        command.short_help = _short_help(command.help)
    settings = settings and name not in _NO_SETTINGS
    if isinstance(command, click.Group):
        for sub_name, sub in command.commands.items():
            _with_config_option(sub, sub_name, settings)
    elif settings and not any(p.name == "config_file" for p in command.params):
        command.params.append(_config_option())
    return command


class _Group(click.Group):
    """Lazy subcommands, and every error as one line plus a hint and an exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _LAZY and cmd_name not in self.commands:
            module, attr = _LAZY[cmd_name].split(":")
            command = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        command = super().get_command(ctx, cmd_name)
        return _with_config_option(command, cmd_name) if command is not None else None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            import difflib  # noqa: PLC0415 - only a mistyped command needs it

            close = difflib.get_close_matches(name, self.list_commands(ctx), n=1)
            suggestion = f" (did you mean {close[0]}?)" if close else ""
            raise click.UsageError(f"no command {name!r}{suggestion}", ctx)
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as exc:
            _report(exc, EXIT_USAGE, ctx)
        except InvalidValue as exc:
            # Only what the user typed reaches here (batch items get per-item results).
            _report(exc, EXIT_USAGE, ctx)
        except SendvaultError as exc:
            _report(exc, EXIT_FAILURE, ctx)
        except OSError as exc:
            _system_error(exc)

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            exc.show()
            sys.exit(EXIT_USAGE)
        except click.UsageError as exc:
            click.echo(f"error: {printable(_usage_message(exc))}", err=True)
            where = exc.ctx.command_path if exc.ctx is not None else self._path(args)
            click.echo(f"hint: see `{where} --help`", err=True)
            sys.exit(EXIT_USAGE)
        except click.ClickException as exc:
            click.echo(f"error: {printable(exc.format_message())}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):
                # Ctrl-C before the command took over (while it starts), or at a prompt (click
                # raises Abort from None there): what a command that handles Ctrl-C itself
                # says, with the shell's code for SIGINT.
                click.echo("interrupted", err=True)
                sys.exit(EXIT_INTERRUPTED)
            click.echo("aborted", err=True)  # end of input at a prompt
            sys.exit(EXIT_FAILURE)
        except OSError as exc:
            # Raised before any command runs: `--help` or `--version` onto a full device.
            _system_error(exc)
        sys.exit(code if isinstance(code, int) else 0)

    def _path(self, args: Sequence[str] | None) -> str:
        """The command the arguments name, as far as they name one (for a usage hint)."""
        words = list(sys.argv[1:] if args is None else args)
        path, command = ["sendvault"], cast(click.Command, self)
        ctx = click.Context(self, info_name="sendvault")
        for word in words:
            if not isinstance(command, click.Group) or word.startswith("-"):
                break
            sub = command.get_command(ctx, word)
            if sub is None:
                break
            path.append(word)
            command = sub
        return " ".join(path)


def _usage_message(exc: click.UsageError) -> str:
    message = exc.format_message()
    # click's wording, lowercased into ours: "invalid value for '--allow': ...".
    return message[:1].lower() + message[1:]


def _system_error(exc: OSError) -> NoReturn:
    """What no command turned into its own message: a file named where a file is read that
    cannot be opened as one (a socket: ENXIO), or another refusal of the system's. One line and
    exit 2: not 1, which `exchange check` and `audit verify` give as their verdict."""
    if isinstance(exc, BrokenPipeError):
        raise exc  # a closed pipe (`| head`): click's quiet exit 1
    if isinstance(exc, StdoutFailed) or (exc.filename is None and _stdout_broken(exc)):
        stdout_failed(exc)
    name = exc.filename
    shown = os.fsdecode(name) if isinstance(name, str | bytes) else str(name)
    where = printable(shown).replace("\n", "\\n") + ": " if name is not None else ""
    why = exc.strerror or str(exc)
    if exc.errno == errno.ENXIO:
        why = "is a socket or a device without a reader: give a regular file"
    click.echo(f"error: {where}{printable(why)}", err=True)
    sys.exit(EXIT_USAGE)


def _stdout_broken(exc: OSError) -> bool:
    """Whether ``exc`` came from writing standard output: the frame that raised it was writing
    to it (click.echo, print), or what it still holds fails to write again."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    streams = [s for s in (sys.stdout, getattr(sys.stdout, "buffer", None)) if s is not None]
    if tb is not None and any(v is s for v in tb.tb_frame.f_locals.values() for s in streams):
        return True
    try:
        sys.stdout.flush()
    except OSError:
        return True
    return False


def _report(exc: SendvaultError, code: int, ctx: click.Context) -> None:
    app = ctx.find_object(AppContext)
    message = describe_error(exc, app.loaded_sources if app is not None else None)
    click.echo(f"error: {printable(message)}", err=True)  # it may quote a file's name, a setting
    settings = app.loaded_settings if app is not None else None
    hint = reason_hint(exc) or hint_for(exc, settings.key_provider if settings is not None else None)
    if hint:
        click.echo(f"hint: {printable(hint)}", err=True)
    sys.exit(code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="sendvault")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML settings file (default: $SENDVAULT_CONFIG, else $SENDVAULT_HOME/sendvault.toml).",
)
@click.pass_context
def cli(ctx: click.Context, config_file: Path | None) -> None:
    """sendvault: token vault for Marketing Cloud Tokenized Sending."""
    ctx.obj = AppContext(config_file)


@cli.group()
def config() -> None:
    """Show and check settings."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {setting, value, source}.")
@pass_app
def config_show(app: AppContext, as_json: bool) -> None:
    """Print every setting's effective value and where it came from (secrets masked).

    The source is `default`, `file PATH`, `environment SENDVAULT_NAME` or `flag --name`.
    """
    from ._output import print_table  # noqa: PLC0415

    values = app.settings.redacted()
    rows = [{"setting": k, "value": v, "source": app.sources[k]} for k, v in values.items()]
    if as_json:
        emit_json(rows)
    else:
        print_table(["setting", "value", "source"], [[r["setting"], r["value"], r["source"]] for r in rows])


@config.command("check")
@click.option("--dev", is_flag=True, help="Check as `serve --dev` would start (it creates the certificate).")
@click.option("--no-ports", is_flag=True, help="Skip the port check (e.g. while this server runs on them).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {check, level, message}.")
@pass_app
def config_check(app: AppContext, dev: bool, no_ports: bool, as_json: bool) -> None:
    """Run the checks start-up runs: settings, files, keys, database, certificate, ports.

    Prints one line per check (ok, note, warning) and each problem as an `error:` line with a
    hint. Exit 0 when `sendvault serve` would start, 2 when it would refuse. Reads only: what a
    first start creates is reported as a note.
    """
    from ..server.preflight import run_checks  # noqa: PLC0415 - `scan` starts without the server

    settings, sources = app.settings, app.sources
    changed = sum(1 for s in sources.values() if s != "default")
    findings: list[dict[str, Any]] = [
        {"check": "settings", "level": "ok", "message": f"{len(sources)} settings, {changed} set"}
    ]
    for finding in run_checks(settings, dev=dev, ports=not no_ports):
        doc: dict[str, Any] = {"check": finding.check, "level": finding.level}
        if finding.error is not None:
            doc["message"] = describe_error(finding.error, sources)
            if isinstance(finding.error, ConfigError):
                doc["setting"] = finding.error.setting
            hint = hint_for(finding.error, settings.key_provider)
            if hint:
                doc["hint"] = hint
        else:
            doc["message"] = finding.message
        findings.append(doc)
    errors = [f for f in findings if f["level"] == "error"]
    if as_json:
        emit_json(findings)
    else:
        for f in findings:
            if f["level"] == "error":
                click.echo(f"error: {f['check']}: {f['message']}", err=True)
                if f.get("hint"):
                    click.echo(f"hint: {f['hint']}", err=True)
            else:
                click.echo(f"{f['level']:<8} {f['check']:<15} {f['message']}")
        warnings = sum(1 for f in findings if f["level"] == "warning")
        verdict = "serve would refuse to start" if errors else "serve would start"
        click.echo(f"{verdict}: {len(errors)} error(s), {warnings} warning(s)", err=True)
    if errors:
        sys.exit(EXIT_USAGE)


@config.command("reference")
def config_reference() -> None:
    """Print the Markdown reference of every setting."""
    from ..config import settings_reference  # noqa: PLC0415

    click.echo(settings_reference(), nl=False)
