"""`sendvault token get|resolve`: the same vault calls the API makes."""

from __future__ import annotations

import click

from ..audit import Event
from ..errors import InvalidValue
from ..vault import parse_kind
from ._common import EXIT_FAILURE, AppContext, changes_state, emit_json, pass_app, read_args

__all__ = ["token"]

_REASON_HINTS = {
    "invalid-email": "not a valid email address",
    "invalid-mobile": "not a possible mobile number; give it with its country code",
    "mobile-needs-country-code": "national form needs a country code or the default_region setting",
    "empty-value": "the value is empty",
    "unknown-value": "the vault has no token for this value",
}


@click.group()
def token() -> None:
    """Create and resolve tokens."""


@token.command("get")
@click.option(
    "--type", "kind_name", required=True, type=click.Choice(["email", "mobile"]), help="Kind of value."
)
@click.option("--no-create", is_flag=True, help="Only look up existing tokens; never create one.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of per-item results.")
@click.argument("values", nargs=-1, required=True)
@pass_app
@changes_state
def get(app: AppContext, kind_name: str, no_create: bool, as_json: bool, values: tuple[str, ...]) -> None:
    """Print the token of each VALUE, one per line, in order (`-` reads values from stdin).

    New values get a new token unless --no-create. A bad value prints `-` in its place, an error
    naming its position on stderr, and the command exits 1 after processing the others.
    """
    try:
        kind = parse_kind(kind_name)
    except InvalidValue:  # pragma: no cover - click.Choice already restricts the names
        raise click.BadParameter("unknown type") from None
    items = [(kind, v) for v in read_args(values)]
    results = app.vault.tokenize_many(items, create=not no_create)
    created = sum(1 for r in results if r.created)
    if created:
        app.record(
            Event.TOKEN_CREATE,
            request={"type": kind_name, "values": [v for _, v in items]},
            response={"tokens": [r.token for r in results]},
            counts={"items": len(items), "created": created},
        )
    bad = 0
    for position, result in enumerate(results, start=1):
        if result.token is None:
            bad += 1
            hint = _REASON_HINTS.get(result.reason or "", "")
            click.echo(f"error: value {position}: {result.reason}" + (f" ({hint})" if hint else ""), err=True)
    if as_json:
        emit_json(
            [
                {"position": i, "token": r.token, "created": r.created}
                if r.token
                else {"position": i, "token": None, "error": r.reason}
                for i, r in enumerate(results, start=1)
            ]
        )
    else:
        click.echo("\n".join(r.token or "-" for r in results))
    if bad:
        raise SystemExit(EXIT_FAILURE)


@token.command("resolve")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array with values and attributes.")
@click.argument("tokens", nargs=-1, required=True)
@pass_app
@changes_state
def resolve(app: AppContext, as_json: bool, tokens: tuple[str, ...]) -> None:
    """Print the value of each TOKEN, one per line (`-` for unresolved; `-` as input reads stdin).

    Exits 0 when it ran, even if some tokens were unresolved.
    """
    batch = list(read_args(tokens))
    results = app.vault.resolve_many(batch)
    app.record(
        Event.TOKEN_RESOLVE,
        request={"tokens": batch},
        response={"values": [r.value for r in results if r.value is not None]},
        counts={"items": len(batch), "resolved": sum(1 for r in results if r.value is not None)},
    )
    if as_json:
        emit_json(
            [
                {"token": t, "value": r.value, "type": r.kind.label, "attributes": r.attributes}
                if r.value is not None and r.kind is not None
                else {"token": t, "value": None, "reason": r.reason}
                for t, r in zip(batch, results, strict=True)
            ]
        )
    else:
        click.echo("\n".join(r.value if r.value is not None else "-" for r in results))
    unreadable = sum(1 for r in results if r.reason == "unreadable")
    if unreadable:
        click.echo(f"warning: {unreadable} token(s) could not be opened with the configured keys", err=True)
