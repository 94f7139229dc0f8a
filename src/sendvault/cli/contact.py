"""`sendvault contact attrs ...` and `sendvault erase`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..audit import Event
from ..errors import NotFound
from ..vault import parse_kind
from ._common import EXIT_FAILURE, EXIT_USAGE, AppContext, changes_state, emit_json, fail, pass_app

__all__ = ["contact", "erase"]


@click.group()
def contact() -> None:
    """Manage the attributes kept with a token."""


@contact.group()
def attrs() -> None:
    """Set, get or delete a contact's attributes (e.g. FirstName), stored encrypted."""


def _parse_pairs(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for position, pair in enumerate(pairs, start=1):
        name, sep, value = pair.partition("=")
        if not sep or not name:
            # Only the position is named: the pair may hold a clear value.
            fail(
                f"attribute {position} is not NAME=VALUE",
                "write attributes as FirstName=Ann",
                code=EXIT_USAGE,
            )
        out[name] = value
    return out


@attrs.command("set")
@click.option("--replace", is_flag=True, help="Drop attributes not named here.")
@click.argument("token")
@click.argument("pairs", nargs=-1, required=True)
@pass_app
@changes_state
def attrs_set(app: AppContext, replace: bool, token: str, pairs: tuple[str, ...]) -> None:
    """Set attributes NAME=VALUE on TOKEN (merged with existing ones unless --replace)."""
    attributes = _parse_pairs(pairs)
    try:
        now = app.vault.set_attributes(token, attributes, replace=replace)
    except NotFound:
        fail("no live token by that name", "check the token; erased tokens keep no attributes")
    app.record(
        Event.CONTACT_ATTRS,
        request={
            "token": token,
            "replace": replace,
            "attributes": [{"name": k, "value": v} for k, v in attributes.items()],
        },
        counts={"set": len(attributes), "now": len(now)},
    )
    click.echo(f"{len(now)} attribute(s) set", err=True)


@attrs.command("get")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.argument("token")
@pass_app
def attrs_get(app: AppContext, as_json: bool, token: str) -> None:
    """Print TOKEN's attributes as NAME=VALUE lines."""
    try:
        found = app.vault.get_attributes(token)
    except NotFound:
        fail("no live token by that name", "check the token; erased tokens keep no attributes")
    if as_json:
        emit_json(found)
    else:
        for name, value in sorted(found.items()):
            click.echo(f"{name}={value}")


@attrs.command("delete")
@click.option("--all", "delete_all", is_flag=True, help="Delete every attribute.")
@click.argument("token")
@click.argument("names", nargs=-1)
@pass_app
@changes_state
def attrs_delete(app: AppContext, delete_all: bool, token: str, names: tuple[str, ...]) -> None:
    """Delete the named attributes of TOKEN (or all with --all)."""
    if not names and not delete_all:
        fail("name the attributes to delete, or pass --all", code=EXIT_USAGE)
    try:
        left = app.vault.delete_attributes(token, None if delete_all else list(names))
    except NotFound:
        fail("no live token by that name", "check the token; erased tokens keep no attributes")
    app.record(Event.CONTACT_ATTRS, request={"token": token, "delete": "all" if delete_all else list(names)})
    click.echo(f"{len(left)} attribute(s) left", err=True)


@click.command()
@click.option("--token", "token_", help="The token to erase.")
@click.option("--value", help="The clear value whose token to erase (needs --type).")
@click.option("--type", "kind_name", type=click.Choice(["email", "mobile"]), help="Kind of --value.")
@click.option(
    "--file",
    "list_file",
    type=click.Path(dir_okay=False, path_type=Path, allow_dash=True),
    help="Erase every contact listed in this file: one token or value per line (`-`: stdin).",
)
@click.option("--json", "as_json", is_flag=True, help="With --file: print one JSON outcome per line.")
@pass_app
@changes_state
def erase(
    app: AppContext,
    token_: str | None,
    value: str | None,
    kind_name: str | None,
    list_file: Path | None,
    as_json: bool,
) -> None:
    """Erase a contact: its value, attributes and blind index go; the token stays retired forever.

    With --file, every contact in the list (tokens or values, one a line, blank lines and lines
    starting with # skipped), each recorded as its own audit event, then a summary. No prompt:
    scripts call this. Exits 0 when something was erased, 1 when nothing matched.
    """
    if list_file is not None:
        if token_ is not None or value is not None:
            fail("give --file alone, or one of --token or --value", code=EXIT_USAGE)
        _erase_file(app, list_file, as_json)
        return
    if (token_ is None) == (value is None):
        fail("give exactly one of --token or --value (or --file LIST)", code=EXIT_USAGE)
    if token_ is not None:
        erased = app.vault.erase_token(token_)
    else:
        if kind_name is None:
            fail("--value needs --type email|mobile", code=EXIT_USAGE)
        assert value is not None
        erased = app.vault.erase_value(parse_kind(kind_name), value)
    app.record(
        Event.CONTACT_ERASE,
        request={"token": token_} if token_ is not None else {"type": kind_name, "value": value},
        counts={"erased": int(erased)},
    )
    if not erased:
        fail("nothing to erase: no live token matched", "it may be erased already")
    click.echo("erased", err=True)


def _read_list(list_file: Path) -> list[str]:
    try:
        text = sys.stdin.read() if str(list_file) == "-" else list_file.read_text(encoding="utf-8")
    except OSError as exc:
        fail(f"cannot read {list_file} ({exc.strerror})", code=EXIT_USAGE)
    except UnicodeDecodeError:
        fail(f"{list_file} is not UTF-8 text", "give one token or value per line", code=EXIT_USAGE)
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _erase_file(app: AppContext, list_file: Path, as_json: bool) -> None:
    lines = _read_list(list_file)
    if not lines:
        fail(f"{list_file} lists no contact", "one token or value per line", code=EXIT_USAGE)
    outcomes = app.vault.erase_many(lines)
    counts: dict[str, int] = {}
    for number, (line, (token, outcome)) in enumerate(zip(lines, outcomes, strict=True), start=1):
        counts[outcome] = counts.get(outcome, 0) + 1
        # One event per contact; a line that was a value is sealed in the record, never clear.
        request: dict[str, object] = {"line": number, "token": token}
        if token != line:
            request["value"] = line
        app.record(Event.CONTACT_ERASE, request=request, counts={"erased": int(outcome == "erased")})
        if as_json:
            emit_json({"line": number, "token": token, "outcome": outcome})
    summary = ", ".join(f"{n} {name}" for name, n in sorted(counts.items()))
    click.echo(f"{len(lines)} line(s): {summary}", err=True)
    if not counts.get("erased"):
        sys.exit(EXIT_FAILURE)
