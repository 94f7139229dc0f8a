"""`sendvault audit show|search|export|verify|head|purge`.

The read commands open the log read-only (:func:`~sendvault.audit.open_audit_reader`): they never
create, migrate or key anything, and a missing log or key is one line and exit 2.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import sys
from pathlib import Path
from typing import Any

import click
import msgspec

from .._fs import input_problem, read_small
from ..audit import (
    AuditKeyMissing,
    AuditLogMissing,
    AuditStore,
    ChainBroken,
    Event,
    Mark,
    NoTrustedKey,
    Verified,
    audit_sealer,
    export_jsonl,
    head_document,
    open_audit_reader,
    parse_head,
    signed_head,
    trusted_public_key,
    verify_export,
    verify_store,
    witnessed_export_heads,
    witnessed_heads_of,
)
from ..audit.record import Sealer
from ..audit.store import Stored
from ..errors import AuditUnavailable, InvalidValue
from ..vault import Normalizer, parse_kind
from ._common import (
    EXIT_FAILURE,
    EXIT_USAGE,
    AppContext,
    OutputFile,
    changes_state,
    emit_json,
    fail,
    pass_app,
)
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


def _reader(app: AppContext, key: Any = None) -> AuditStore:
    """The log, read-only, closed when the command ends; a missing log is exit 2."""
    try:
        store = open_audit_reader(app.settings, key)
    except AuditLogMissing as exc:
        fail(
            str(exc),
            "sendvault serve or the first command that changes state makes the log; check SENDVAULT_HOME",
            code=EXIT_USAGE,
        )
    click.get_current_context().call_on_close(store.close)
    return store


def _sealer(app: AppContext) -> Sealer:
    """The audit key's sealer, never created by a read; a missing key is exit 2."""
    try:
        return audit_sealer(app.settings, create=False)
    except AuditKeyMissing as exc:
        fail(
            str(exc),
            "without it sealed values stay sealed: drop --reveal/--value/--send-key",
            code=EXIT_USAGE,
        )


def _rows(
    store: AuditStore,
    sealer: Sealer | None,
    filters: dict[str, Any],
    limit: int,
    *,
    newest: bool = False,
    after: int | None = None,
) -> list[dict[str, Any]]:
    """Matching records in order: the first ``limit``, or with ``newest`` the last ``limit``;
    ``after`` keeps only records past that number (--follow)."""
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
        assert sealer is not None  # _search opens it for --send-key
        # One fingerprint per audit key, current and retired (records sealed before a rotation).
        fingerprints = sealer.fingerprints(filters["send_key"])
        clauses.append("(" + " OR ".join(["instr(body, ?) > 0"] * (len(fingerprints) + 1)) + ")")
        params.extend(b'"send_key_fp":' + msgspec.json.encode(fp) for fp in fingerprints)
        params.append(b'"send_key":' + msgspec.json.encode(filters["send_key"]))
    with store.snapshot() as conn:
        if filters.get("fingerprints") is not None:
            # A value matches by its fingerprint (records holding it sealed) or by its token
            # (resolve records, which carry the token readable and the value sealed whole).
            seqs = sorted(
                {s for fp in filters["fingerprints"] for s in store.seqs_with_fingerprint(conn, fp)}
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
        records = list(store.records(conn, where, params, limit=limit))
    return [_row(sealer if filters.get("reveal") else None, rec) for rec in records]


def _row(sealer: Sealer | None, rec: Stored) -> dict[str, Any]:
    body = msgspec.json.decode(rec.body)
    row = {"seq": rec.seq, "time": dt.datetime.fromtimestamp(body["ts_us"] / 1e6, dt.UTC).isoformat(), **body}
    row.pop("v", None)
    row.pop("ts_us", None)
    if sealer is not None and body.get("sealed"):
        row["revealed"] = sealer.open(body["sealed"])
    # Payloads kept in their own columns (Marketing Cloud calls, errors): the readable side as
    # the JSON it was, the sealed side as a placeholder unless --reveal opens it.
    for side, blob in (("request", rec.request), ("response", rec.response)):
        form = body.get(f"{side}_form")
        if form == "json":
            row[side] = _decoded(blob)
        elif form == "sealed":
            row[side] = {"$sealed": len(blob)}
            if sealer is not None:
                row[f"revealed_{side}"] = _decoded(sealer.open_blob(blob), opened=True)
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
    store = _reader(app)
    needs_key = opts.get("reveal") or opts.get("value") is not None or opts.get("send_key")
    sealer = _sealer(app) if needs_key else None
    if opts.get("value") is not None:
        assert sealer is not None
        value = opts["value"]
        candidates = {value}
        if opts.get("kind_name"):
            kind = parse_kind(opts["kind_name"])
            with contextlib.suppress(InvalidValue):
                candidates.add(Normalizer().normalize(kind, value))
            # The value's token, looked up without creating one, finds the resolve records that
            # disclosed it (they are not fingerprinted: that would cost the hot path).
            filters["value_tokens"] = _value_token(app, kind, value)
        filters["fingerprints"] = [fp for v in candidates for fp in sealer.fingerprints(v)]
    reveal = bool(opts.get("reveal"))
    if opts.get("follow"):
        _follow(store, sealer, filters, opts.get("tail") or 10, as_json=opts["as_json"], reveal=reveal)
        return
    if opts.get("tail"):
        rows = _rows(store, sealer, filters, opts["tail"], newest=True)
    elif opts.get("newest"):
        rows = _rows(store, sealer, filters, opts["limit"], newest=True)[::-1]
    else:
        rows = _rows(store, sealer, filters, opts["limit"])
    _print(rows, opts["as_json"], reveal=reveal)


def _value_token(app: AppContext, kind: Any, value: str) -> list[str]:
    """The value's token if the vault knows it; a search never creates a vault or its keys."""
    settings = app.settings
    if not settings.database_url and not settings.sqlite_path.exists():
        return []  # no vault here: no token to find
    if settings.master_key is None and not (settings.home_path / "keys" / "master.key").exists():
        return []  # opening the vault would create a master key
    (found,) = app.vault.tokenize_many([(kind, value)], create=False)
    return [found.token] if found.token else []


def _follow(
    store: AuditStore,
    sealer: Sealer | None,
    filters: dict[str, Any],
    tail: int,
    *,
    as_json: bool,
    reveal: bool,
) -> None:
    """Print the last ``tail`` matches, then new ones as they are written, until interrupted."""
    import time  # noqa: PLC0415

    headers = [*_COLUMNS, "revealed"] if reveal else _COLUMNS
    if not as_json:
        click.echo("  ".join(headers))
    rows = _rows(store, sealer, filters, tail, newest=True)
    last = rows[-1]["seq"] if rows else _head_seq(store)
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
            rows = _rows(store, sealer, filters, 1000, after=last)
    except KeyboardInterrupt:
        return


def _head_seq(store: AuditStore) -> int:
    with store.snapshot() as conn:
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
@click.option("--output", type=OutputFile(), help="File (default: stdout).")
@pass_app
def audit_export(app: AppContext, fmt: str, output: Path | None) -> None:
    """Export the chain as JSON lines ending with the signed head (values stay sealed)."""
    del fmt
    try:
        count = export_jsonl(_reader(app), output, sys.stdout)
    except OSError as exc:
        if output is None or isinstance(exc, BrokenPipeError):
            raise
        fail(f"cannot write the export to {output} ({exc.strerror or exc})",
             "give a file path in a folder you can write to")  # fmt: skip
    click.echo(f"{count} record(s) exported", err=True)


def _public_key(app: AppContext, path: str | None) -> Any:
    try:
        return trusted_public_key(app.settings, path)
    except NoTrustedKey as exc:
        fail(str(exc), code=EXIT_USAGE)
    except ValueError as exc:
        fail(f"no usable audit public key: {exc}", code=EXIT_USAGE)


def _broken(broken: ChainBroken, as_json: bool) -> None:
    if as_json:
        emit_json({"intact": False, "seq": broken.seq, "reason": broken.reason})
    else:
        click.echo(f"BROKEN at record {broken.seq}: {broken.reason}", err=True)
    sys.exit(EXIT_FAILURE)


def _check_export(path: Path) -> None:
    if not path.exists():
        fail(f"{path} does not exist", code=EXIT_USAGE)
    why = input_problem(path)
    if why is not None:
        fail(f"{path} {why}", "give a file written by `sendvault audit export`", EXIT_USAGE)


def _known_head(path: Path) -> Mark:
    try:
        return parse_head(read_small(path).decode())
    except OSError as exc:
        fail(f"--known-head {path}: {exc.strerror}", code=EXIT_USAGE)
    except (UnicodeDecodeError, ValueError) as exc:
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
@click.option(
    "--public-key",
    help="Trusted Ed25519 public key (PEM); default: the audit_public_key setting, never the log's own key.",
)
@click.option(
    "--witness",
    "witnesses",
    multiple=True,
    metavar="URL",
    help="A witness (file:///PATH or postgresql://...) whose heads the chain must hold; repeatable."
    " Default: the readable ones in audit_witness.",
)
@click.option(
    "--require-signed",
    is_flag=True,
    help="With --to: exit 1 unless a signed checkpoint or head covers the range's end.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@pass_app
def audit_verify(
    app: AppContext,
    path: Path | None,
    first: int | None,
    last: int | None,
    known_head: Path | None,
    public_key: str | None,
    witnesses: tuple[str, ...],
    require_signed: bool,
    as_json: bool,
) -> None:
    """Check the hash chain and signatures. Exit 0 intact, 1 broken, 2 usage error.

    Prints the range checked and the signed point that covers its end (a checkpoint or the head:
    record, hash, time written). A range is walked on to the nearest signed point after it; with
    --require-signed, a range that none covers exits 1. Without --known-head or a witness, a log
    rolled back whole to an older consistent state still verifies.
    """
    if path is not None and (first is not None or last is not None):
        fail("--from/--to apply to the database, not to --file", "verify the whole export", code=EXIT_USAGE)
    if first is not None and last is not None and first > last:
        fail(f"--from {first} is after --to {last}", code=EXIT_USAGE)
    if known_head is not None and (first is not None or last is not None):
        fail("--known-head checks the whole chain", "drop --from/--to", code=EXIT_USAGE)
    key = _public_key(app, public_key)
    known_one = _known_head(known_head) if known_head is not None else None
    log_id = (
        _reader(app, key).log_id() if path is None and (witnesses or app.settings.audit_witness) else None
    )
    try:
        witnessed = _witness_heads(
            app, witnesses, log_id, ranged=first is not None or last is not None, export=path is not None
        )
    except ChainBroken as broken:
        _broken(broken, as_json)
    known = ([known_one] if known_one is not None else []) + witnessed or None
    if path is not None:
        _check_export(path)
    try:
        if path is not None:
            result = verify_export(path, key, known=known)
        else:
            result = verify_store(_reader(app, key), first=first, last=last, known=known)
    except ChainBroken as broken:
        if path is None and first is None and last is None:
            _note(app, intact=False, detail={"seq": broken.seq, "reason": broken.reason})
        _broken(broken, as_json)
    except ValueError as exc:
        fail(str(exc), code=EXIT_USAGE)
    if path is None and first is None and last is None:
        _note(app, intact=True, detail={"records": result.records, "last": result.last})
    _verdict(result, known_one, as_json, witnessed)
    if result.covered_by is None and require_signed:
        click.echo(f"no signed head covers record {result.last}", err=True)
        sys.exit(EXIT_FAILURE)


def _witness_heads(
    app: AppContext, named: tuple[str, ...], log_id: str | None, *, ranged: bool, export: bool
) -> list[Mark]:
    """This log's heads in the named witnesses (which must hold one), else in the configured
    readable ones (whole-chain verifies only; they may hold none yet)."""
    if named:
        if ranged:
            fail("--witness checks the whole chain", "drop --from/--to", code=EXIT_USAGE)
        return _witnessed(list(named), log_id, required=True, export=export)
    if ranged:
        return []
    urls = [url for url in app.settings.audit_witness.split() if not url.startswith("syslog://")]
    heads = _witnessed(urls, log_id, required=False, export=export)
    if urls and not heads:
        # Not an error (a new log's first checkpoint may not be out yet), but not silence either.
        click.echo(
            "note: the configured witnesses hold no head yet: nothing was checked against them", err=True
        )
    return heads


def _witnessed(urls: list[str], log_id: str | None, *, required: bool, export: bool) -> list[Mark]:
    """This log's heads in the witnesses; exit 2 when one cannot be read (or, if required, holds
    none), or holds only another log's heads. An export names no log: its log is the one whose
    heads the witnesses hold, and its chain must hold them."""
    if not urls:
        return []
    try:
        heads = witnessed_export_heads(urls) if export else witnessed_heads_of(urls, log_id)
    except (ValueError, AuditUnavailable) as exc:
        hint = getattr(exc, "hint", None)
        fail(
            str(exc),
            hint
            if isinstance(hint, str)
            else "a witness that cannot be read proves nothing: fix it or name another",
            code=EXIT_USAGE,
        )
    if not heads and required:
        fail(
            "the witnesses hold no head yet",
            "verify without --witness until one is delivered",
            code=EXIT_USAGE,
        )
    return heads


def _note(app: AppContext, *, intact: bool, detail: dict[str, Any]) -> None:
    """A whole-chain verify of the database is remembered for `sendvault status` and the metrics."""
    from ..server.status import note_verify  # noqa: PLC0415

    note_verify(app.settings, intact=intact, detail=detail)


def _verdict(result: Verified, known: Mark | None, as_json: bool, witnessed: list[Mark]) -> None:
    head = head_document(result.head) if result.head is not None else None
    covered = (
        {"kind": result.covered_by[0], "seq": result.covered_by[1]} if result.covered_by is not None else None
    )
    if as_json:
        doc = {"intact": True, "first": result.first, "last": result.last, "records": result.records,
               "checkpoints": result.checkpoints, "head": head, "covered_by": covered}  # fmt: skip
        if known is not None:
            doc["known_head"] = known.seq
        if witnessed:
            doc["witnessed"] = _witnessed_doc(witnessed)
        emit_json(doc)
        return
    span = f"records {result.first}..{result.last} ({result.records})"
    click.echo(f"intact: {span}, {result.checkpoints} checkpoint(s)")
    if head is not None:
        click.echo(f"signed head: record {head['seq']}, hash {head['hash']}, written {head['time']}")
    if result.covered_by is None:
        click.echo(
            f"not covered by a signed head: no signed checkpoint or head at or after record {result.last}"
            " (records after the signed head); their links hold, nothing vouches for them"
        )
    else:
        kind, seq = result.covered_by
        click.echo(f"covered by the signed {kind} at record {seq}")
    if known is not None:
        click.echo(f"known head: record {known.seq} is in the chain with the same hash")
    if witnessed:
        seen = _witnessed_doc(witnessed)
        click.echo(
            f"witnessed: {seen['heads']} head(s), newest record {seen['newest']},"
            " all in the chain with the same hash"
        )


@audit.command("head")
@click.option("--public-key", help="Trusted Ed25519 public key (PEM); default: the audit_public_key setting.")
@click.option("--json", "as_json", is_flag=True, help="Print the head as JSON, for `verify --known-head`.")
@pass_app
def audit_head(app: AppContext, public_key: str | None, as_json: bool) -> None:
    """Print the current signed head (record, hash, time written). Exit 0, or 1 if it does not verify.

    Ship it off this host (e.g. `sendvault audit head --json | logger -t sendvault-audit`):
    `audit verify --known-head FILE` then proves the log was not rolled back below it.
    """
    store = _reader(app, _public_key(app, public_key))
    try:
        head = head_document(signed_head(store))
    except ChainBroken as broken:
        _broken(broken, as_json)
    except sqlite3.DatabaseError as exc:
        _broken(ChainBroken(0, f"the audit database cannot be read ({exc})"), as_json)
    if as_json:
        emit_json(head)
    else:
        click.echo(f"signed head: record {head['seq']}, hash {head['hash']}, written {head['time']}")


@audit.command("purge")
@click.option("--before", required=True, help="Remove records older than this ISO date/time.")
@pass_app
@changes_state
def audit_purge(app: AppContext, before: str) -> None:
    """Remove old records for retention, leaving a signed anchor the remaining chain starts from."""
    import getpass  # noqa: PLC0415 - only commands that write the audit log need it

    # The purge's own record is written with its anchor, in one transaction (verify requires it).
    count, last = app.audit.purge(_when(before, "--before"), actor=f"cli:{getpass.getuser()}")
    click.echo(f"{count} record(s) removed" + (f" through record {last}" if count else ""), err=True)


# -- many replicas: one bundle of their exports ------------------------------------------------


@audit.command("merge")
@click.argument(
    "exports", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option("--output", "-o", required=True, type=OutputFile(), help="Bundle file.")
@click.option(
    "--name",
    "names",
    multiple=True,
    help="A name per export, in order (default: each file's name without .jsonl): the replica it came from.",
)
def audit_merge(exports: tuple[Path, ...], output: Path, names: tuple[str, ...]) -> None:
    """Merge the exports of several replicas (`audit export` on each) into one bundle.

    Each export is kept whole, under its replica's name, with its SHA-256 in the bundle's first
    line; `sendvault audit verify-bundle` checks every one under that replica's trusted key.
    """
    from ..audit.bundle import BundleBroken, write_bundle  # noqa: PLC0415

    if names and len(names) != len(exports):
        fail(
            f"{len(names)} --name for {len(exports)} exports",
            "give one --name per export, or none",
            EXIT_USAGE,
        )
    labels = list(names) or [p.name.removesuffix(".jsonl") for p in exports]
    try:
        count = write_bundle(list(zip(labels, exports, strict=True)), output)
    except BundleBroken as exc:
        fail(str(exc), "give each export its own --name", EXIT_USAGE)
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        where = f": {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
        fail(f"cannot read or write the exports ({why}{where})", code=EXIT_FAILURE)
    click.echo(f"{count} export(s) merged into {output}", err=True)


@audit.command("verify-bundle")
@click.argument("bundle", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--public-key",
    "keys",
    multiple=True,
    help="NAME=FILE: the trusted Ed25519 public key (PEM) of replica NAME; a bare FILE is the key of "
    "every replica without its own (default: the audit_public_key setting).",
)
@click.option(
    "--witness",
    "witnesses",
    multiple=True,
    metavar="NAME=URL",
    help="The witness (file:///PATH or postgresql://...) of replica NAME, whose heads its export must"
    " hold; repeatable.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@pass_app
def audit_verify_bundle(
    app: AppContext, bundle: Path, keys: tuple[str, ...], witnesses: tuple[str, ...], as_json: bool
) -> None:
    """Check a bundle of replicas' exports: every export whole, each chain under its own key.

    With --witness NAME=URL, replica NAME's export must also hold every head its witness holds,
    with the same hash: an export cut short or taken from a rolled-back log is broken. Exit 0
    when every export verifies, 1 when one does not (or the bundle was cut or edited), 2 usage
    error.
    """
    from ..audit.bundle import BundleBroken, UnknownSource, verify_bundle  # noqa: PLC0415

    named, default = _bundle_keys(app, keys)
    known = _bundle_witnesses(witnesses, as_json)
    try:
        results = verify_bundle(bundle, named, default, known)
    except UnknownSource as exc:
        fail(
            str(exc),
            "name each replica as the bundle does (`--public-key NAME=FILE`, `--witness NAME=URL`)",
            EXIT_USAGE,
        )
    except BundleBroken as exc:
        if as_json:
            emit_json({"intact": False, "reason": str(exc)})
        else:
            click.echo(f"BROKEN: {exc}", err=True)
        sys.exit(EXIT_FAILURE)
    except ChainBroken as broken:
        _broken(broken, as_json)
    if as_json:
        emit_json(
            {
                "intact": True,
                "sources": [
                    {"name": n, "first": r.first, "last": r.last, "records": r.records}
                    | ({"witnessed": _witnessed_doc(known[n])} if n in known else {})
                    for n, r in results
                ],
            }
        )
    else:
        for name, result in results:
            seen = _witnessed_doc(known[name]) if name in known else None
            also = f", witnessed: {seen['heads']} head(s), newest record {seen['newest']}" if seen else ""
            click.echo(
                f"{name}: intact, records {result.first}..{result.last} ({result.records}), signed head{also}"
            )
        click.echo(f"bundle intact: {len(results)} replica(s)")


def _bundle_keys(app: AppContext, keys: tuple[str, ...]) -> tuple[dict[str, Any], Any]:
    """The trusted key of each named replica (--public-key NAME=FILE), and the one for the rest."""
    from ..audit import load_public_key  # noqa: PLC0415

    named: dict[str, Any] = {}
    default: Any = None
    try:
        for item in keys:
            name, sep, file = item.rpartition("=")
            if sep and name:
                named[name] = load_public_key(file)
            else:
                default = load_public_key(item)
    except (OSError, ValueError) as exc:
        fail(f"no usable audit public key: {exc}", code=EXIT_USAGE)
    if default is None and app.settings.audit_public_key is not None:
        default = _public_key(app, None)
    return named, default


def _bundle_witnesses(witnesses: tuple[str, ...], as_json: bool) -> dict[str, list[Mark]]:
    """The heads each replica's witness holds (--witness NAME=URL, repeatable per replica)."""
    urls: dict[str, list[str]] = {}
    for item in witnesses:
        name, sep, url = item.partition("=")
        if not sep or not name or "://" in name or "://" not in url:
            fail(
                f"--witness {item!r} is not NAME=URL",
                "name the replica: --witness a=file:///PATH",
                EXIT_USAGE,
            )
        urls.setdefault(name, []).append(url)
    known: dict[str, list[Mark]] = {}
    for name, mine in urls.items():
        try:
            known[name] = _witnessed(mine, None, required=True, export=True)
        except ChainBroken as broken:
            _broken(ChainBroken(broken.seq, f"source {name!r}: {broken.reason}"), as_json)
    return known


def _witnessed_doc(heads: list[Mark]) -> dict[str, int]:
    return {"heads": len(heads), "newest": max(m.seq for m in heads)}
