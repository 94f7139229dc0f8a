"""`sendvault audit show|search|export|verify|head|purge`."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import click
import msgspec

from ..audit import (
    ChainBroken,
    Event,
    Mark,
    Verified,
    export_jsonl,
    head_document,
    load_public_key,
    parse_head,
    signed_head,
    verify_export,
    verify_store,
)
from ..audit.store import Stored
from ..errors import InvalidValue
from ..vault import Normalizer, parse_kind
from ._common import EXIT_FAILURE, EXIT_USAGE, AppContext, emit_json, fail, pass_app
from ._output import cell, print_table

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


def _token_clause(token: str) -> tuple[str, list[Any]]:
    quoted = msgspec.json.encode(token)
    return "(instr(body, ?) > 0 OR instr(request, ?) > 0 OR instr(response, ?) > 0)", [quoted] * 3


def _rows(
    app: AppContext, filters: dict[str, Any], limit: int, *, newest: bool = False, after: int | None = None
) -> list[dict[str, Any]]:
    """Matching records in order: the first ``limit``, or with ``newest`` the last ``limit``;
    ``after`` keeps only records past that number (--follow)."""
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
        clause, values = _token_clause(filters["token"])
        clauses.append(clause)
        params.extend(values)
    if filters.get("send_key"):
        # The body is canonical JSON, so each pair is exact. Records keep the sendKey's keyed
        # fingerprint (it is free text and may hold an address); older ones kept it as is.
        clauses.append("(instr(body, ?) > 0 OR instr(body, ?) > 0)")
        fingerprint = app.audit.sealer.fingerprint(filters["send_key"])
        params.append(b'"send_key_fp":' + msgspec.json.encode(fingerprint))
        params.append(b'"send_key":' + msgspec.json.encode(filters["send_key"]))
    with log.store.snapshot() as conn:
        if filters.get("fingerprints") is not None:
            # A value matches by its fingerprint (records holding it sealed) or by its token
            # (resolve records, which carry the token readable and the value sealed whole).
            seqs = sorted(
                {s for fp in filters["fingerprints"] for s in log.store.seqs_with_fingerprint(conn, fp)}
            )
            either = [f"seq IN ({','.join('?' * len(seqs))})"] if seqs else []
            params.extend(seqs)
            for token in filters.get("value_tokens") or []:
                clause, values = _token_clause(token)
                either.append(clause)
                params.extend(values)
            clauses.append(f"({' OR '.join(either)})" if either else "0")
        if after is not None:
            clauses.append("seq > ?")
            params.append(after)
        where = " AND ".join(clauses)
        if newest:
            # The last `limit` matches: find where they start, then read them in order.
            sql = "SELECT seq FROM audit_records" + (f" WHERE {where}" if where else "")  # noqa: S608
            found = conn.execute(f"{sql} ORDER BY seq DESC LIMIT {int(limit)}", params).fetchall()
            if not found:
                return []
            where = (f"{where} AND " if where else "") + "seq >= ?"
            params.append(found[-1][0])
        records = list(log.store.records(conn, where, params, limit=limit))
    return [_row(app, rec, reveal=bool(filters.get("reveal"))) for rec in records]


def _row(app: AppContext, rec: Stored, *, reveal: bool) -> dict[str, Any]:
    body = msgspec.json.decode(rec.body)
    row = {"seq": rec.seq, "time": dt.datetime.fromtimestamp(body["ts_us"] / 1e6, dt.UTC).isoformat(), **body}
    row.pop("v", None)
    row.pop("ts_us", None)
    if reveal and body.get("sealed"):
        row["revealed"] = app.audit.sealer.open(body["sealed"])
    # Payloads kept in their own columns (Marketing Cloud calls, errors): the readable side as
    # the JSON it was, the sealed side as a placeholder unless --reveal opens it.
    for side, blob in (("request", rec.request), ("response", rec.response)):
        form = body.get(f"{side}_form")
        if form == "json":
            row[side] = _decoded(blob)
        elif form == "sealed":
            row[side] = {"$sealed": len(blob)}
            if reveal:
                row[f"revealed_{side}"] = _decoded(app.audit.sealer.open_blob(blob), opened=True)
    return row


def _decoded(data: bytes, *, opened: bool = False) -> Any:
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        # Not JSON (a malformed request, kept sealed): only an opened payload is shown as text.
        return {"$unparsed_bytes": len(data), **({"text": data.decode("utf-8", "replace")} if opened else {})}


_COLUMNS = ["seq", "time", "event", "actor", "source", "route", "status", "counts"]


def _cells(row: dict[str, Any], reveal: bool) -> list[object]:
    # Whole values, never cut: an ISO time to the millisecond, counts as name=number pairs.
    cells: list[object] = [
        row["seq"], row["time"][:23] + "Z", row["event"], row.get("actor"), row.get("source"),
        row.get("route"), row.get("status"), row.get("counts"),
    ]  # fmt: skip
    if reveal:
        opened = [*(row.get("revealed") or [])]
        for side in ("request", "response"):
            if f"revealed_{side}" in row:
                opened.append(f"{side}: " + msgspec.json.encode(row[f"revealed_{side}"]).decode())
        cells.append(" | ".join(str(v) for v in opened) or "-")
    return cells


def _print(rows: list[dict[str, Any]], as_json: bool, *, reveal: bool = False) -> None:
    if as_json:
        emit_json(rows)
        return
    headers = [*_COLUMNS, "revealed"] if reveal else _COLUMNS
    print_table(headers, [_cells(r, reveal) for r in rows])
    if not rows:
        click.echo("no matching records", err=True)


_filter_options = [
    click.option("--since", help="Records at or after this ISO date/time (UTC if no zone)."),
    click.option("--until", help="Records before this ISO date/time."),
    click.option("--client", help="Client id (actor)."),
    click.option("--route", help="Route, e.g. /v1/mc/resolve."),
    click.option("--event", type=click.Choice([e.value for e in Event]), help="Event name."),
    click.option("--status", type=int, help="HTTP status."),
    click.option("--token", help="Records mentioning this token."),
    click.option("--send-key", "send_key", help="Resolve records of this Marketing Cloud sendKey."),
    click.option(
        "--value",
        help="Records holding this clear value (by keyed fingerprint; with --type also by its token).",
    ),
    click.option(
        "--type",
        "kind_name",
        type=click.Choice(["email", "mobile"]),
        help="Kind of --value: also match it normalized, and records of its token (resolve answers).",
    ),
    click.option(
        "--limit", type=click.IntRange(min=1), default=100, show_default=True, help="Most records to print."
    ),
    click.option("--newest", is_flag=True, help="Newest first: the last --limit matches, latest at the top."),
    click.option(
        "--tail",
        type=click.IntRange(min=1),
        metavar="N",
        help="The last N matches, oldest of them first (as `tail`).",
    ),
    click.option(
        "--follow",
        is_flag=True,
        help="After the last matches (--tail, default 10), print new ones as they are written; Ctrl-C stops. "
        "With --json, one JSON object per line.",
    ),
    click.option("--reveal", is_flag=True, help="Open sealed values (needs the audit key), also in tables."),
    click.option("--json", "as_json", is_flag=True, help="Print a JSON list (JSON lines with --follow)."),
]


def _with_filters(func: Any) -> Any:
    for option in reversed(_filter_options):
        func = option(func)
    return func


def _search(app: AppContext, opts: dict[str, Any]) -> None:
    filters: dict[str, Any] = {
        k: opts.get(k) for k in ("client", "route", "event", "status", "token", "send_key", "reveal")
    }
    filters["since"] = _when(opts["since"], "--since") if opts.get("since") else None
    filters["until"] = _when(opts["until"], "--until") if opts.get("until") else None
    if filters["since"] is not None and filters["until"] is not None and filters["since"] >= filters["until"]:
        fail(
            f"--since {opts['since']} is not before --until {opts['until']}: no record can match",
            "swap them: --since is the start of the range, --until its end",
            code=EXIT_USAGE,
        )
    if opts.get("newest") and (opts.get("tail") or opts.get("follow")):
        fail(
            "--newest lists newest first; --tail and --follow list oldest first", "pick one", code=EXIT_USAGE
        )
    if opts.get("value") is not None:
        value = opts["value"]
        candidates = {value}
        if opts.get("kind_name"):
            kind = parse_kind(opts["kind_name"])
            with contextlib.suppress(InvalidValue):
                candidates.add(Normalizer().normalize(kind, value))
            # The value's token, looked up without creating one, finds the resolve records that
            # disclosed it (they are not fingerprinted: that would cost the hot path).
            (found,) = app.vault.tokenize_many([(kind, value)], create=False)
            filters["value_tokens"] = [found.token] if found.token else []
        filters["fingerprints"] = [app.audit.sealer.fingerprint(v) for v in candidates]
    reveal = bool(opts.get("reveal"))
    if opts.get("follow"):
        _follow(app, filters, opts.get("tail") or 10, as_json=opts["as_json"], reveal=reveal)
        return
    if opts.get("tail"):
        rows = _rows(app, filters, opts["tail"], newest=True)
    elif opts.get("newest"):
        rows = _rows(app, filters, opts["limit"], newest=True)[::-1]
    else:
        rows = _rows(app, filters, opts["limit"])
    _print(rows, opts["as_json"], reveal=reveal)


def _follow(app: AppContext, filters: dict[str, Any], tail: int, *, as_json: bool, reveal: bool) -> None:
    """Print the last ``tail`` matches, then new ones as they are written, until interrupted."""
    import time  # noqa: PLC0415

    headers = [*_COLUMNS, "revealed"] if reveal else _COLUMNS
    if not as_json:
        click.echo("  ".join(headers))
    rows = _rows(app, filters, tail, newest=True)
    last = rows[-1]["seq"] if rows else _head_seq(app)
    try:
        while True:
            for row in rows:
                if as_json:
                    emit_json(row)
                else:
                    click.echo("  ".join(cell(v) for v in _cells(row, reveal)))
                last = row["seq"]
            sys.stdout.flush()
            time.sleep(1.0)
            rows = _rows(app, filters, 1000, after=last)
    except KeyboardInterrupt:
        return


def _head_seq(app: AppContext) -> int:
    with app.audit.store.snapshot() as conn:
        found = conn.execute("SELECT coalesce(max(seq), 0) FROM audit_records").fetchone()
    return int(found[0])


@audit.command("show")
@_with_filters
@pass_app
def audit_show(app: AppContext, /, **opts: Any) -> None:
    """Show audit records, oldest first; --newest, --tail N and --follow for the latest.

    Values stay sealed unless --reveal (which needs the audit key). Piped output is plain
    columns, one record per line, nothing cut.
    """
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


def _public_key(app: AppContext, path: str | None) -> Any:
    try:
        return load_public_key(path, app.settings)
    except (OSError, ValueError, TypeError):
        fail("no usable audit public key", "give --public-key FILE (PEM, Ed25519)", code=EXIT_USAGE)


def _broken(broken: ChainBroken, as_json: bool) -> None:
    if as_json:
        emit_json({"intact": False, "seq": broken.seq, "reason": broken.reason})
    else:
        click.echo(f"BROKEN at record {broken.seq}: {broken.reason}", err=True)
    sys.exit(EXIT_FAILURE)


def _known_head(path: Path) -> Mark:
    try:
        return parse_head(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        fail(
            f"--known-head {path} is not a head record ({type(exc).__name__})",
            "give a file written by `sendvault audit head --json`",
            code=EXIT_USAGE,
        )


@audit.command("verify")
@click.option(
    "--file", "path", type=click.Path(dir_okay=False, path_type=Path), help="Verify an export instead."
)
@click.option("--from", "first", type=int, help="First record of the range (not with --file).")
@click.option("--to", "last", type=int, help="Last record of the range (not with --file).")
@click.option(
    "--known-head",
    type=click.Path(dir_okay=False, path_type=Path),
    help="A head kept elsewhere (`audit head --json`): the chain must still hold that record.",
)
@click.option("--public-key", help="Trusted Ed25519 public key (PEM); default keys/audit-signing.pub.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@pass_app
def audit_verify(
    app: AppContext,
    path: Path | None,
    first: int | None,
    last: int | None,
    known_head: Path | None,
    public_key: str | None,
    as_json: bool,
) -> None:
    """Check the hash chain and signatures. Exit 0 intact, 1 broken, 2 usage error.

    Prints the range checked and the signed head reached (record, hash, time written). Without
    --known-head, a log rolled back whole to an older consistent state still verifies: keep the
    output of `sendvault audit head` off this host and give it here.
    """
    if path is not None and (first is not None or last is not None):
        fail("--from/--to apply to the database, not to --file", "verify the whole export", code=EXIT_USAGE)
    if first is not None and last is not None and first > last:
        fail(f"--from {first} is after --to {last}", code=EXIT_USAGE)
    if known_head is not None and (first is not None or last is not None):
        fail("--known-head checks the whole chain", "drop --from/--to", code=EXIT_USAGE)
    key = _public_key(app, public_key)
    known = _known_head(known_head) if known_head is not None else None
    if path is not None and not path.exists():
        fail(f"{path} does not exist", code=EXIT_USAGE)
    try:
        if path is not None:
            result = verify_export(path, key, known=known)
        else:
            store = app.audit.store
            store.public_key = key
            result = verify_store(store, first=first, last=last, known=known)
    except ChainBroken as broken:
        if path is None and first is None and last is None:
            _note(app, intact=False, detail={"seq": broken.seq, "reason": broken.reason})
        _broken(broken, as_json)
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    if path is None and first is None and last is None:
        _note(app, intact=True, detail={"records": result.records, "last": result.last})
    _verdict(result, known, as_json)


def _note(app: AppContext, *, intact: bool, detail: dict[str, Any]) -> None:
    """A whole-chain verify of the database is remembered for `sendvault status` and the metrics."""
    from ..server.status import note_verify  # noqa: PLC0415

    note_verify(app.settings, intact=intact, detail=detail)


def _verdict(result: Verified, known: Mark | None, as_json: bool) -> None:
    head = head_document(result.head) if result.head is not None else None
    if as_json:
        doc = {"intact": True, "first": result.first, "last": result.last, "records": result.records,
               "checkpoints": result.checkpoints, "head": head}  # fmt: skip
        if known is not None:
            doc["known_head"] = known.seq
        emit_json(doc)
        return
    span = f"records {result.first}..{result.last} ({result.records})"
    click.echo(f"intact: {span}, {result.checkpoints} checkpoint(s)")
    if head is not None:
        click.echo(f"signed head: record {head['seq']}, hash {head['hash']}, written {head['time']}")
    if known is not None:
        click.echo(f"known head: record {known.seq} is in the chain with the same hash")


@audit.command("head")
@click.option("--public-key", help="Trusted Ed25519 public key (PEM); default keys/audit-signing.pub.")
@click.option("--json", "as_json", is_flag=True, help="Print the head as JSON, for `verify --known-head`.")
@pass_app
def audit_head(app: AppContext, public_key: str | None, as_json: bool) -> None:
    """Print the current signed head (record, hash, time written). Exit 0, or 1 if it does not verify.

    Ship it off this host (e.g. `sendvault audit head --json | logger -t sendvault-audit`):
    `audit verify --known-head FILE` then proves the log was not rolled back below it.
    """
    store = app.audit.store
    store.public_key = _public_key(app, public_key)
    try:
        head = head_document(signed_head(store))
    except ChainBroken as broken:
        _broken(broken, as_json)
    if as_json:
        emit_json(head)
    else:
        click.echo(f"signed head: record {head['seq']}, hash {head['hash']}, written {head['time']}")


@audit.command("purge")
@click.option("--before", required=True, help="Remove records older than this ISO date/time.")
@pass_app
def audit_purge(app: AppContext, before: str) -> None:
    """Remove old records for retention, leaving a signed anchor the remaining chain starts from."""
    count, last = app.audit.store.purge(_when(before, "--before"))
    app.record(Event.AUDIT_PURGE, meta={"removed": count, "through_seq": last})
    click.echo(f"{count} record(s) removed" + (f" through record {last}" if count else ""), err=True)
