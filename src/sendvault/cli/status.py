"""`sendvault status`: is this vault healthy, and what needs attention?"""

from __future__ import annotations

import sys
from typing import Any

import click

from ._common import EXIT_FAILURE, AppContext, emit_json, pass_app

__all__ = ["status"]


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (lists are lists).")
@click.option("--no-counts", is_flag=True, help="Skip the token counts (they read the whole table).")
@pass_app
def status(app: AppContext, as_json: bool, no_counts: bool) -> None:
    """Version, schema, token counts, keys and their ages, the certificate, the audit log.

    Also the local exchange folders against their retention period. Exit 0 when all is well; 1
    when something needs attention (listed last): the certificate expires within
    cert_warn_days (21 by default) or has expired, the audit log does not verify, the key
    provider does not open the vault's keys, the database does not answer, exchange files are
    past their retention period.
    Reads only; safe beside a running server (e.g. from a monitoring check).
    """
    from ..server.status import collect_status  # noqa: PLC0415

    doc = collect_status(app.settings, counts=not no_counts)
    if as_json:
        emit_json(doc)
    else:
        _print(doc)
    if doc["attention"]:
        sys.exit(EXIT_FAILURE)


def _print(doc: dict[str, Any]) -> None:
    click.echo(f"sendvault {doc['version']}  home {doc['home']}")
    _print_vault(doc)
    _print_outside(doc)
    if doc["attention"]:
        click.echo("")
        for item in doc["attention"]:
            click.echo(f"attention: {item}")
    else:
        click.echo("all well")


def _print_vault(doc: dict[str, Any]) -> None:
    out = click.echo
    if doc.get("error"):
        out(f"database     {doc['database']}: {doc['error']}")
    else:
        schema = f"schema {doc['schema']}" + (
            f" (this version knows {doc['latest_schema']})" if doc["schema"] != doc["latest_schema"] else ""
        )
        out(f"database     {doc['database']}, {schema}")
        tokens = doc.get("tokens")
        if tokens:
            out(f"tokens       {tokens['live']} live, {tokens['erased']} erased")
        for key in doc.get("keys", []):
            out(
                f"key          {key['purpose']} #{key['id']} ({key['provider']}), created {key['created']}, "
                f"{key['age_days']:.0f} days old"
            )
        provider = doc["key_provider"]
        if "ok" in provider:
            said = "opens the vault's keys" if provider["ok"] else f"FAILS: {provider.get('error')}"
            out(f"key provider {provider['name']}: {said}")


def _print_outside(doc: dict[str, Any]) -> None:
    out = click.echo
    cert = doc["certificate"]
    if "error" in cert:
        out(f"certificate  {cert['error']}")
    else:
        out(
            f"certificate  {cert['subject']} from {cert['issuer']}, expires {cert['not_after'][:10]} "
            f"({cert['days_left']:.0f} days)"
        )
    audit = doc["audit"]
    if not audit["enabled"]:
        out("audit log    OFF: API calls are not recorded")
    elif "head" in audit:
        verified = "verifies" if audit.get("verified") else "DOES NOT VERIFY"
        out(
            f"audit log    head at record {audit['head']['seq']}, written {audit['head']['time']}; {verified}"
        )
    note = audit.get("last_verify")
    if audit["enabled"]:
        if note:
            result = "intact" if note.get("intact") else "BROKEN"
            out(f"last verify  {note.get('time')}: {result} (sendvault audit verify)")
        else:
            out("last verify  never noted: schedule `sendvault audit verify` (docs/operations.md)")
    exchange = doc.get("exchange") or {}
    for folder in exchange.get("local_dirs", []):
        nxt = folder["next_deadline_days"]
        when = f"; next deadline in {nxt} days" if nxt is not None and nxt > 0 else ""
        out(
            f"exchange     {folder['dir']}: {folder['files']} file(s), {folder['past_retention']} past the "
            f"{exchange['retention_days']:g}-day retention{when}"
        )
    if exchange.get("remotes"):
        out(f"exchange     remotes {', '.join(exchange['remotes'])}: see `sendvault exchange status`")
