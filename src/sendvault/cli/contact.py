"""`sendvault contact attrs ...` and `sendvault erase`."""

from __future__ import annotations

import click

from ..audit import Event
from ..errors import NotFound
from ..vault import parse_kind
from ._common import EXIT_USAGE, AppContext, emit_json, fail, pass_app

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
@pass_app
def erase(app: AppContext, token_: str | None, value: str | None, kind_name: str | None) -> None:
    """Erase a contact: its value, attributes and blind index go; the token stays retired forever.

    No prompt: scripts call this. Exits 0 when something was erased, 1 when nothing matched.
    """
    if (token_ is None) == (value is None):
        fail("give exactly one of --token or --value", code=EXIT_USAGE)
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
