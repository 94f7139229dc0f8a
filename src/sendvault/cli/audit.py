"""`sendvault audit show|search|export|verify|purge`."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click
import msgspec

from ..audit import ChainBroken, Event, export_jsonl, load_public_key, verify_export, verify_store
from ..errors import InvalidValue
from ..vault import Normalizer, parse_kind
from ._common import EXIT_FAILURE, EXIT_USAGE, AppContext, emit_json, fail, pass_app

__all__ = ["audit"]


def _when(text: str, option: str) -> int:
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        fail(
            f"{option} is not an ISO date or time",
            "e.g. 2026-11-01 or 2026-11-01T12:00:00+00:00",
            code=EXIT_USAGE,
        )
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1_000_000)


@click.group()
def audit() -> None:
    """Read, search, export, verify and purge the tamper-evident audit log."""


def _rows(app: AppContext, filters: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    log = app.audit
    clauses: list[str] = []
    params: list[Any] = []
    for column, key in (("actor", "client"), ("route", "route"), ("event", "event"), ("status", "status")):
        if filters.get(key) is not None:
            clauses.append(f"{column} = ?")
            params.append(filters[key])
    if filters.get("since") is not None:
        clauses.append("ts_us >= ?")
        params.append(filters["since"])
    if filters.get("until") is not None:
        clauses.append("ts_us < ?")
        params.append(filters["until"])
    if filters.get("token"):
        clauses.append("(instr(body, ?) > 0 OR instr(request, ?) > 0 OR instr(response, ?) > 0)")
        quoted = msgspec.json.encode(filters["token"])
        params.extend([quoted, quoted, quoted])
    with log.store.snapshot() as conn:
        if filters.get("fingerprints") is not None:
            seqs = sorted(
                {s for fp in filters["fingerprints"] for s in log.store.seqs_with_fingerprint(conn, fp)}
            )
            clauses.append(f"seq IN ({','.join('?' * len(seqs))})" if seqs else "0")
            params.extend(seqs)
        records = list(log.store.records(conn, " AND ".join(clauses), params, limit=limit))
    out = []
    for rec in records:
        body = msgspec.json.decode(rec.body)
        row = {"seq": rec.seq, "time": dt.datetime.fromtimestamp(rec.ts_us / 1e6, dt.UTC).isoformat(), **body}
        row.pop("v", None)
        row.pop("ts_us", None)
        if filters.get("reveal"):
            if body.get("sealed"):
                row["revealed"] = log.sealer.open(body["sealed"])
            for side in ("request", "response"):
                if body.get(f"{side}_sealed"):
                    row[f"revealed_{side}"] = msgspec.json.decode(
                        log.sealer.open_bytes(body[f"{side}_sealed"])
                    )
        out.append(row)
    return out


def _print(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        emit_json(rows)
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table("seq", "time", "event", "actor", "source", "route", "status", "counts")
    for r in rows:
        table.add_row(
            str(r["seq"]), r["time"][:23], r["event"], r.get("actor") or "-", r.get("source") or "-",
            r.get("route") or "-", str(r.get("status") or "-"), msgspec.json.encode(r.get("counts")).decode(),
        )  # fmt: skip
    Console().print(table)


_filter_options = [
    click.option("--since", help="Records at or after this ISO date/time (UTC if no zone)."),
    click.option("--until", help="Records before this ISO date/time."),
    click.option("--client", help="Client id (actor)."),
    click.option("--route", help="Route, e.g. /v1/mc/resolve."),
    click.option("--event", type=click.Choice([e.value for e in Event]), help="Event name."),
    click.option("--status", type=int, help="HTTP status."),
    click.option("--token", help="Records mentioning this token."),
    click.option("--value", help="Records holding this clear value (by keyed fingerprint)."),
    click.option(
        "--type", "kind_name", type=click.Choice(["email", "mobile"]), help="Also match --value normalized."
    ),
    click.option("--limit", type=int, default=100, show_default=True),
    click.option("--reveal", is_flag=True, help="Open sealed values (needs the audit key)."),
    click.option("--json", "as_json", is_flag=True, help="Print JSON."),
]


def _with_filters(func: Any) -> Any:
    for option in reversed(_filter_options):
        func = option(func)
    return func


def _search(app: AppContext, opts: dict[str, Any]) -> None:
    filters: dict[str, Any] = {
        k: opts.get(k) for k in ("client", "route", "event", "status", "token", "reveal")
    }
    filters["since"] = _when(opts["since"], "--since") if opts.get("since") else None
    filters["until"] = _when(opts["until"], "--until") if opts.get("until") else None
    if opts.get("value") is not None:
        value = opts["value"]
        candidates = {value}
        if opts.get("kind_name"):
            with contextlib.suppress(InvalidValue):
                candidates.add(Normalizer().normalize(parse_kind(opts["kind_name"]), value))
        filters["fingerprints"] = [app.audit.sealer.fingerprint(v) for v in candidates]
    _print(_rows(app, filters, opts["limit"]), opts["as_json"])


@audit.command("show")
@_with_filters
@pass_app
def audit_show(app: AppContext, /, **opts: Any) -> None:
    """Show audit records, oldest first (values stay sealed unless --reveal)."""
    _search(app, opts)


@audit.command("search")
@_with_filters
@pass_app
def audit_search(app: AppContext, /, **opts: Any) -> None:
    """Search audit records by time, client, route, event, status, token or value."""
    _search(app, opts)


@audit.command("export")
@click.option("--format", "fmt", type=click.Choice(["jsonl"]), default="jsonl", show_default=True)
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="File (default: stdout).")
@pass_app
def audit_export(app: AppContext, fmt: str, output: Path | None) -> None:
    """Export the chain as JSON lines ending with the signed head (values stay sealed)."""
    del fmt
    count = export_jsonl(app.audit.store, output, sys.stdout)
    click.echo(f"{count} record(s) exported", err=True)


@audit.command("verify")
@click.option(
    "--file", "path", type=click.Path(dir_okay=False, path_type=Path), help="Verify an export instead."
)
@click.option("--from", "first", type=int, help="First record of the range.")
@click.option("--to", "last", type=int, help="Last record of the range.")
@click.option("--public-key", help="Trusted Ed25519 public key (PEM); default keys/audit-signing.pub.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@pass_app
def audit_verify(
    app: AppContext,
    path: Path | None,
    first: int | None,
    last: int | None,
    public_key: str | None,
    as_json: bool,
) -> None:
    """Check the hash chain and signatures. Exit 0 intact, 1 broken, 2 usage error."""
    try:
        key = load_public_key(public_key, app.settings)
    except (OSError, ValueError, TypeError):
        fail("no usable audit public key", "give --public-key FILE (PEM, Ed25519)", code=EXIT_USAGE)
    try:
        if path is not None:
            if not path.exists():
                fail(f"{path} does not exist", code=EXIT_USAGE)
            result = verify_export(path, key)
        else:
            store = app.audit.store
            store.public_key = key
            result = verify_store(store, first=first, last=last)
    except ChainBroken as broken:
        if as_json:
            emit_json({"intact": False, "seq": broken.seq, "reason": broken.reason})
        else:
            click.echo(f"BROKEN at record {broken.seq}: {broken.reason}", err=True)
        sys.exit(EXIT_FAILURE)
    if as_json:
        emit_json({"intact": True, "first": result.first, "last": result.last, "records": result.records,
                   "checkpoints": result.checkpoints})  # fmt: skip
    else:
        span = f"records {result.first}..{result.last} ({result.records})"
        click.echo(f"intact: {span}, {result.checkpoints} checkpoint(s)")


@audit.command("purge")
@click.option("--before", required=True, help="Remove records older than this ISO date/time.")
@pass_app
def audit_purge(app: AppContext, before: str) -> None:
    """Remove old records for retention, leaving a signed anchor the remaining chain starts from."""
    count, last = app.audit.store.purge(_when(before, "--before"))
    app.record(Event.AUDIT_PURGE, meta={"removed": count, "through_seq": last})
    click.echo(f"{count} record(s) removed" + (f" through record {last}" if count else ""), err=True)
