"""Exports (JSON lines ending with the signed head) and signed head documents, and their checks.

An export holds the anchor, the records, the checkpoints and the signed head, in that order; a
line of any other shape, or any line after the head, breaks it. A head document (`audit head
--json`, a witness entry) carries one signed head: record, hash, time written, signature.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from .._fs import write_atomic
from .marks import Checkpoint, Mark, Stored, Verifier
from .store import AuditStore
from .verify import ChainBroken, Verified, _knowns, _start, _Walk

__all__ = ["export_jsonl", "head_document", "parse_head", "verify_export"]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _time(ts_us: int) -> str:
    return dt.datetime.fromtimestamp(ts_us / 1e6, dt.UTC).isoformat()


def head_document(head: Mark) -> dict[str, Any]:
    """The signed head as JSON (``audit head --json``; ``audit verify --known-head`` reads it back)."""
    return {
        "type": "head",
        "seq": head.seq,
        "hash": _b64(head.hash),
        "ts_us": head.ts_us,
        "time": _time(head.ts_us),
        "sig": _b64(head.sig),
    }


def parse_head(text: str) -> Mark:
    """A head written by :func:`head_document` (or an export's head line); ValueError if it is not one."""
    try:
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("type") != "head":
            raise ValueError("not a head record")
        return Mark(
            _int64(doc["seq"], low=0),
            base64.b64decode(doc["hash"], validate=True),
            base64.b64decode(doc["sig"], validate=True),
            _int64(doc["ts_us"]),
        )
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"not a head record ({type(exc).__name__})") from None


def export_jsonl(store: AuditStore, output: Path | None, stream: TextIO | None = None) -> int:
    """Write the chain as JSON lines (anchor, records, checkpoints, signed head); returns the count.

    With ``output``, the file is written to a temporary name and renamed, never left half-written.
    """
    with store.snapshot() as conn:
        marks = store.marks(conn)
        lines: list[str] = []
        if "anchor" in marks:
            lines.append(_mark_line("anchor", marks["anchor"]))
        count = 0
        for rec in store.records(conn):
            lines.append(
                json.dumps(
                    {
                        "type": "record",
                        "seq": rec.seq,
                        "body": rec.body.decode(),
                        "prev_hash": _b64(rec.prev_hash),
                        "hash": _b64(rec.hash),
                        "request": _b64(rec.request),
                        "response": _b64(rec.response),
                    }
                )
            )
            count += 1
        for seq, point in sorted(store.checkpoints(conn).items()):
            doc: dict[str, Any] = {"type": "checkpoint", "seq": seq, "hash": _b64(point.hash)}
            if point.ts_us is not None:
                doc["ts_us"] = point.ts_us
            doc["sig"] = _b64(point.sig)
            lines.append(json.dumps(doc))
        if "head" in marks:
            lines.append(_mark_line("head", marks["head"]))
    text = "\n".join(lines) + ("\n" if lines else "")
    if output is None:
        (stream or _stdout()).write(text)
        return count
    write_atomic(output, text.encode())
    return count


def _mark_line(kind: str, mark: Mark) -> str:
    doc: dict[str, Any] = {"type": kind, "seq": mark.seq, "hash": _b64(mark.hash)}
    if kind == "head":
        doc["ts_us"] = mark.ts_us
    doc["sig"] = _b64(mark.sig)
    return json.dumps(doc)


def _stdout() -> TextIO:
    import sys  # noqa: PLC0415

    return sys.stdout


def _parse(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                doc = json.loads(line)
            except ValueError:
                raise ChainBroken(0, f"line {number} is not JSON") from None
            if not isinstance(doc, dict) or "type" not in doc:
                raise ChainBroken(0, f"line {number} is not an export record")
            yield number, doc


@dataclass
class _Export:
    anchor: Mark | None
    records: list[Stored]
    checkpoints: dict[int, Checkpoint]
    head: Mark | None


def _read_export(path: Path) -> _Export:
    """The lines of an export, in the one shape export_jsonl writes: anything else is broken."""
    out = _Export(None, [], {}, None)
    with path.open() as fh:
        for number, doc in _parse(fh):
            kind = doc["type"]
            if out.head is not None:
                raise ChainBroken(0, f"line {number}: a line after the signed head")
            if kind == "record":
                out.records.append(
                    Stored(
                        _int64(doc["seq"], low=0), 0, "", None, None, None, doc["body"].encode(),
                        base64.b64decode(doc["prev_hash"]), base64.b64decode(doc["hash"]),
                        base64.b64decode(doc.get("request", "")),
                        base64.b64decode(doc.get("response", "")),
                    )
                )  # fmt: skip
            elif kind == "checkpoint":
                seq = int(doc["seq"])
                if seq in out.checkpoints:
                    raise ChainBroken(seq, f"line {number}: a second checkpoint for this record")
                ts_us = doc.get("ts_us")
                out.checkpoints[seq] = Checkpoint(
                    base64.b64decode(doc["hash"]),
                    base64.b64decode(doc["sig"]),
                    None if ts_us is None else int(ts_us),
                )
            elif kind == "anchor":
                if out.anchor is not None or out.records or out.checkpoints:
                    raise ChainBroken(0, f"line {number}: an anchor that is not the first line")
                out.anchor = _mark(doc, dated=False)
            elif kind == "head":
                out.head = _mark(doc, dated=True)
            else:
                raise ChainBroken(0, f"line {number}: unknown line type {str(kind)[:40]!r}")
    return out


def _mark(doc: dict[str, Any], *, dated: bool) -> Mark:
    ts_us = _int64(doc["ts_us"]) if dated else 0
    return Mark(_int64(doc["seq"], low=0), base64.b64decode(doc["hash"]), base64.b64decode(doc["sig"]), ts_us)


def _int64(value: Any, *, low: int = -(2**63)) -> int:
    """A record number or time as the log stores it (8 bytes, signed); ValueError for any other:
    a line's ``seq`` of 10**30 or -1 must be a bad line, not an overflow where it is hashed."""
    try:
        number = int(value)
    except OverflowError:  # Infinity, which JSON as Python reads it allows
        raise ValueError("not a finite number") from None
    if isinstance(value, bool) or not low <= number < 2**63:
        raise ValueError(f"{number if abs(number) < 10**20 else 'a huge number'} is out of range")
    return number


def verify_export(path: Path, key: Verifier, *, known: Mark | Sequence[Mark] | None = None) -> Verified:
    """Verify an export on its own: a cut tail is caught by the missing or mismatched head, and a
    tail cut together with an older head pasted back by ``known`` (heads kept elsewhere)."""
    knowns = _knowns(key, known)
    try:
        export = _read_export(path)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ChainBroken(0, f"malformed export ({type(exc).__name__})") from None
    if export.head is None and export.records:
        raise ChainBroken(export.records[-1].seq, "export has no signed head line (cut short?)")
    anchor = export.anchor.seq if export.anchor is not None else None
    walk = _Walk(key, *_start(key, export.anchor), export.checkpoints, known=knowns, anchor=anchor)
    present = {rec.seq for rec in export.records}
    for rec in export.records:
        walk.step(rec, later=present.__contains__)
    walk.finish(export.head)
    assert export.head is not None  # finish raises without one
    return Verified(walk.first, walk.seq, walk.count, walk.matched, export.head, ("head", export.head.seq))
