"""Generate docs/cli.md from the commands' own --help: `python -m sendvault.cli.reference`."""

from __future__ import annotations

import sys

import click

from . import cli

__all__ = ["cli_reference"]


def _walk(
    command: click.Command, path: list[str], parent: click.Context | None = None
) -> list[tuple[list[str], click.Command]]:
    # list_commands/get_command, not .commands: subcommands load lazily (see cli._Group).
    found = [(path, command)]
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1], parent=parent)
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                found += _walk(sub, [*path, name], ctx)
    return found


def cli_reference() -> str:
    """Markdown with the --help text of every command and subcommand."""
    parts = [
        "# Command-line reference",
        "",
        "Generated from `--help` by `python -m sendvault.cli.reference`; a test fails when it is stale.",
        "",
    ]
    for path, command in _walk(cli, ["sendvault"]):
        ctx = click.Context(
            command,
            info_name=" ".join(path),
            terminal_width=100,
            max_content_width=100,
            help_option_names=["-h", "--help"],
        )
        parts += [f"## `{' '.join(path)}`", "", "```text", command.get_help(ctx), "```", ""]
    return "\n".join(parts)


if __name__ == "__main__":  # pragma: no cover - documentation generator
    sys.stdout.write(cli_reference())
