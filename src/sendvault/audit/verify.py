"""Verification of the audit chain (database or export), export and the signed head.

Verification raises :class:`ChainBroken` naming the first broken record and why: a changed
field (a hash mismatch, or a stored column or fingerprint row that differs from the hashed
body), a deleted record or reordered records (a gap or a wrong previous hash), a truncated tail
(the signed head is ahead of the last record), a forged checkpoint, head or anchor (a bad
signature under the trusted public key, or a checkpoint for no record), an emptied log (no
signed head), and a log rolled back below a head kept elsewhere (``known``). A request that
cannot be answered (a reversed range, a range or known head that was purged) raises ValueError.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .._fs import write_atomic
from .record import GENESIS, chain_hash
from .store import AuditStore, Mark, Stored, check_signature

__all__ = [
    "ChainBroken",
    "Verified",
    "export_jsonl",
    "head_document",
    "parse_head",
    "signed_head",
    "verify_export",
    "verify_store",
]

# The indexed columns that searches and purge select by; each must equal the hashed body's field.
_COLUMNS = ("ts_us", "event", "actor", "route", "status")
_body_decoder = msgspec.json.Decoder(dict[str, Any])


class ChainBroken(Exception):
    """The first place the chain does not hold."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"record {seq}: {reason}")
        self.seq = seq
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Verified:
    """What an intact verification covered, and the signed head it ended at (if it reached it)."""

    first: int
    last: int
    records: int
    checkpoints: int
    head: Mark | None = None


def _sig(key: Ed25519PublicKey, kind: str, mark: Mark, what: str | None = None) -> None:
    try:
        ts_us = mark.ts_us if kind == "head" else None
        check_signature(key, kind, mark.seq, mark.hash, mark.sig, ts_us=ts_us)
    except InvalidSignature:
        raise ChainBroken(
            mark.seq, f"{what or kind} signature does not verify (forged or wrong key)"
        ) from None


class _Peek:
    """An iterator of (seq, fingerprint) rows that can look one row ahead."""

    def __init__(self, rows: Iterator[tuple[int, str]]) -> None:
        self._rows = rows
        self._next = next(rows, None)

    def take_through(self, seq: int) -> Iterator[tuple[int, str]]:
        while self._next is not None and self._next[0] <= seq:
            row, self._next = self._next, next(self._rows, None)
            yield row

    def left(self) -> tuple[int, str] | None:
        return self._next


class _Walk:
    """Checks records one at a time, in order, from a trusted starting point (seq, hash)."""

    def __init__(
        self,
        key: Ed25519PublicKey,
        seq: int,
        prev: bytes,
        checkpoints: dict[int, tuple[bytes, bytes]],
        *,
        fingerprints: Iterator[tuple[int, str]] | None = None,
        known: Mark | None = None,
    ) -> None:
        self.key = key
        self.first = seq + 1
        self.seq, self.prev = seq, prev
        self.count = 0
        self.matched = 0
        self._checkpoints = dict(checkpoints)
        # Only the database has indexed columns and fingerprint rows besides the hashed body.
        self._fingerprints = _Peek(fingerprints) if fingerprints is not None else None
        self._known = known
        if known is not None:
            if known.seq < seq:
                raise ValueError(
                    f"the known head (record {known.seq}) was purged: the log starts after record {seq};"
                    " give a newer known head"
                )
            if known.seq == seq and known.hash != prev:
                raise ChainBroken(seq, "differs from the known head (the log was rewritten)")

    def step(self, rec: Stored, later: Callable[[int], bool] | None = None) -> None:
        """Check one record; ``later(seq)`` tells whether a missing record comes further on."""
        expected = self.seq + 1
        if rec.seq != expected:
            if rec.seq < expected:
                raise ChainBroken(rec.seq, f"out of order or repeated (after record {self.seq})")
            if later is not None and later(expected):
                raise ChainBroken(expected, f"out of order: it comes after record {rec.seq} (reordered)")
            raise ChainBroken(expected, "missing (deleted)")
        if rec.prev_hash != self.prev:
            raise ChainBroken(rec.seq, "previous-hash link broken (records deleted, swapped or inserted)")
        if chain_hash(self.prev, rec.seq, rec.body, rec.request, rec.response) != rec.hash:
            raise ChainBroken(rec.seq, "content changed (hash mismatch)")
        if self._fingerprints is not None:
            self._columns(rec, self._fingerprints)
        checkpoint = self._checkpoints.pop(rec.seq, None)
        if checkpoint is not None:
            digest, sig = checkpoint
            if digest != rec.hash:
                raise ChainBroken(rec.seq, "checkpoint does not match the record")
            _sig(self.key, "checkpoint", Mark(rec.seq, digest, sig))
            self.matched += 1
        if self._known is not None and rec.seq == self._known.seq and rec.hash != self._known.hash:
            raise ChainBroken(rec.seq, "differs from the known head (the log was rewritten)")
        self.seq, self.prev = rec.seq, rec.hash
        self.count += 1

    @staticmethod
    def _columns(rec: Stored, fingerprints: _Peek) -> None:
        # The hash covers the body; the columns and fingerprint rows are copies kept for search
        # and purge, so a copy that differs would hide the record from them.
        try:
            body = _body_decoder.decode(rec.body)
        except msgspec.DecodeError:
            raise ChainBroken(rec.seq, "body is not an audit record") from None
        for name in _COLUMNS:
            column, hashed = getattr(rec, name), body.get(name)
            if type(column) is not type(hashed) or column != hashed:
                raise ChainBroken(rec.seq, f"column {name} differs from the hashed record")
        stored = []
        for seq, fp in fingerprints.take_through(rec.seq):
            if seq != rec.seq:
                raise ChainBroken(seq, "fingerprint row for a record not in the chain (inserted)")
            stored.append(fp)
        if sorted(stored) != sorted(body.get("fingerprints") or []):
            raise ChainBroken(rec.seq, "fingerprint rows differ from the hashed record")

    def finish(self, head: Mark | None) -> None:
        """The signed head must name exactly the last record; nothing may be left over."""
        if head is None:
            if self.count:
                raise ChainBroken(self.seq, "no signed head")
            raise ChainBroken(self.seq + 1, "no records and no signed head: the log was emptied")
        _sig(self.key, "head", head)
        if head.seq > self.seq:
            raise ChainBroken(
                self.seq + 1,
                f"tail truncated: the signed head is record {head.seq}, the last present is {self.seq}",
            )
        if head.seq < self.seq:
            raise ChainBroken(head.seq + 1, "records after the signed head")
        if head.hash != self.prev:
            raise ChainBroken(self.seq, "last record differs from the signed head")
        if self._checkpoints:
            raise ChainBroken(min(self._checkpoints), "checkpoint for a record not in the chain (forged)")
        if self._fingerprints is not None and (row := self._fingerprints.left()) is not None:
            raise ChainBroken(row[0], "fingerprint row for a record not in the chain (inserted)")
        if self._known is not None and self._known.seq > self.seq:
            raise ChainBroken(
                self.seq + 1,
                f"the log ends at record {self.seq}, before the known head (record {self._known.seq}):"
                " rolled back or truncated",
            )


def _start(key: Ed25519PublicKey, anchor: Mark | None) -> tuple[int, bytes]:
    if anchor is None:
        return 0, GENESIS
    _sig(key, "anchor", anchor)
    return anchor.seq, anchor.hash


def _known(key: Ed25519PublicKey, known: Mark | None) -> None:
    if known is not None:
        _sig(key, "head", known, "known head")


def _bounds(
    first: int | None, last: int | None, start: int, head: Mark | None
) -> tuple[int | None, int | None]:
    """The range to read: None at either end means from the chain's start, or through its head."""
    if last is not None and last <= start:
        raise ValueError(f"records up to {last} were purged: the log starts after record {start}")
    if first is not None and head is not None and first > head.seq:
        raise ValueError(f"the log ends at record {head.seq}")
    lo = first if first is not None and first > start + 1 else None
    hi = last if last is not None and (head is None or last < head.seq) else None
    return lo, hi


def verify_store(
    store: AuditStore, *, first: int | None = None, last: int | None = None, known: Mark | None = None
) -> Verified:
    """Verify the database in one consistent snapshot, while writers may keep appending.

    Without ``first`` the chain is checked from its start (the genesis or the signed purge
    anchor); with ``first`` the range starts from that record's stored link, and the record must
    be there, as must ``last``. The signed head is checked when the range reaches it. ``known``
    (a head kept elsewhere) must still be in the chain, with the same hash.
    """
    if first is not None and last is not None and first > last:
        raise ValueError(f"the range is reversed: --from {first} is after --to {last}")
    if known is not None and (first is not None or last is not None):
        raise ValueError("a known head is checked against the whole chain: give no range")
    key = store.public_key
    _known(key, known)
    with store.snapshot() as conn:
        marks = store.marks(conn)
        head = marks.get("head")
        start = _start(key, marks.get("anchor"))
        lo, hi = _bounds(first, last, start[0], head)
        clauses, params = [], []
        if lo is not None:
            clauses.append("seq >= ?")
            params.append(lo)
        if hi is not None:
            clauses.append("seq <= ?")
            params.append(hi)
        records = store.records(conn, " AND ".join(clauses), params)
        fingerprints = store.fingerprint_rows(conn, lo)
        checkpoints = store.checkpoints(conn)
        if lo is None:
            walk = _Walk(key, *start, checkpoints, fingerprints=fingerprints, known=known)
        else:
            opening = next(records, None)
            if opening is None or opening.seq != lo:
                raise ChainBroken(lo, "missing (deleted)")
            walk = _Walk(key, lo - 1, opening.prev_hash, checkpoints, fingerprints=fingerprints)
            walk.step(opening)
        for rec in records:
            walk.step(rec)
        if hi is None:
            walk.finish(head)
        elif walk.seq < hi:
            raise ChainBroken(walk.seq + 1, "missing (deleted)")
    return Verified(walk.first, walk.seq, walk.count, walk.matched, head if hi is None else None)


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
            int(doc["seq"]),
            base64.b64decode(doc["hash"], validate=True),
            base64.b64decode(doc["sig"], validate=True),
            int(doc["ts_us"]),
        )
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"not a head record ({type(exc).__name__})") from None


def signed_head(store: AuditStore) -> Mark:
    """The database's current head, its signature checked under the store's public key."""
    with store.snapshot() as conn:
        head = store.marks(conn).get("head")
    if head is None:
        raise ChainBroken(0, "no signed head: the log was emptied")
    _sig(store.public_key, "head", head)
    return head


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
        for s, (h, g) in sorted(store.checkpoints(conn).items()):
            lines.append(json.dumps({"type": "checkpoint", "seq": s, "hash": _b64(h), "sig": _b64(g)}))
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
    checkpoints: dict[int, tuple[bytes, bytes]]
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
                        int(doc["seq"]), 0, "", None, None, None, doc["body"].encode(),
                        base64.b64decode(doc["prev_hash"]), base64.b64decode(doc["hash"]),
                        base64.b64decode(doc.get("request", "")),
                        base64.b64decode(doc.get("response", "")),
                    )
                )  # fmt: skip
            elif kind == "checkpoint":
                seq = int(doc["seq"])
                if seq in out.checkpoints:
                    raise ChainBroken(seq, f"line {number}: a second checkpoint for this record")
                out.checkpoints[seq] = (base64.b64decode(doc["hash"]), base64.b64decode(doc["sig"]))
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
    ts_us = int(doc["ts_us"]) if dated else 0
    return Mark(int(doc["seq"]), base64.b64decode(doc["hash"]), base64.b64decode(doc["sig"]), ts_us)


def verify_export(path: Path, key: Ed25519PublicKey, *, known: Mark | None = None) -> Verified:
    """Verify an export on its own: a cut tail is caught by the missing or mismatched head, and a
    tail cut together with an older head pasted back by ``known`` (a head kept elsewhere)."""
    _known(key, known)
    try:
        export = _read_export(path)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ChainBroken(0, f"malformed export ({type(exc).__name__})") from None
    if export.head is None and export.records:
        raise ChainBroken(export.records[-1].seq, "export has no signed head line (cut short?)")
    walk = _Walk(key, *_start(key, export.anchor), export.checkpoints, known=known)
    present = {rec.seq for rec in export.records}
    for rec in export.records:
        walk.step(rec, later=present.__contains__)
    walk.finish(export.head)
    return Verified(walk.first, walk.seq, walk.count, walk.matched, export.head)
