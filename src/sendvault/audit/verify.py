"""Verification of the audit chain (database or export), export and the signed head line.

Verification raises :class:`ChainBroken` naming the first broken record and why: a changed
field (hash mismatch), a deleted record or reordered records (a gap or a wrong previous hash), a
truncated tail (the signed head is ahead of the last record), a forged checkpoint, head or anchor
(bad signature under the trusted public key).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from .._fs import write_atomic
from .record import GENESIS, chain_hash
from .store import AuditStore, Stored, check_signature

__all__ = ["ChainBroken", "Verified", "export_jsonl", "verify_export", "verify_store"]


class ChainBroken(Exception):
    """The first place the chain does not hold."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"record {seq}: {reason}")
        self.seq = seq
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Verified:
    """What an intact verification covered."""

    first: int
    last: int
    records: int
    checkpoints: int


def _sig(key: Ed25519PublicKey, kind: str, seq: int, digest: bytes, sig: bytes) -> None:
    try:
        check_signature(key, kind, seq, digest, sig)
    except InvalidSignature:
        raise ChainBroken(seq, f"{kind} signature does not verify (forged or wrong key)") from None


def _links(
    key: Ed25519PublicKey,
    records: Iterable[Stored],
    seq: int,
    prev: bytes,
    checkpoints: dict[int, tuple[bytes, bytes]],
) -> tuple[int, bytes, int]:
    """Check every link after (seq, prev); returns the last (seq, hash) and the count."""
    count = 0
    for rec in records:
        if rec.seq != seq + 1:
            if rec.seq > seq + 1:
                raise ChainBroken(seq + 1, "missing (deleted)")
            raise ChainBroken(rec.seq, "out of order")
        if rec.prev_hash != prev:
            raise ChainBroken(rec.seq, "previous-hash link broken (records deleted, swapped or inserted)")
        if chain_hash(prev, rec.seq, rec.body, rec.request, rec.response) != rec.hash:
            raise ChainBroken(rec.seq, "content changed (hash mismatch)")
        if rec.seq in checkpoints:
            digest, sig = checkpoints[rec.seq]
            if digest != rec.hash:
                raise ChainBroken(rec.seq, "checkpoint does not match the record")
            _sig(key, "checkpoint", rec.seq, digest, sig)
        seq, prev = rec.seq, rec.hash
        count += 1
    return seq, prev, count


def _head(
    key: Ed25519PublicKey, head: tuple[int, bytes, bytes] | None, seq: int, prev: bytes, count: int
) -> None:
    """The signed head must name exactly the last record."""
    if head is None:
        if count:
            raise ChainBroken(seq, "no signed head")
        return
    _sig(key, "head", *head)
    if head[0] > seq:
        raise ChainBroken(
            seq + 1, f"tail truncated: the signed head is record {head[0]}, the last present is {seq}"
        )
    if head[0] < seq:
        raise ChainBroken(head[0] + 1, "records after the signed head")
    if head[1] != prev:
        raise ChainBroken(seq, "last record differs from the signed head")


def _start(key: Ed25519PublicKey, anchor: tuple[int, bytes, bytes] | None) -> tuple[int, bytes]:
    if anchor is None:
        return 0, GENESIS
    _sig(key, "anchor", *anchor)
    return anchor[0], anchor[1]


def verify_store(store: AuditStore, *, first: int | None = None, last: int | None = None) -> Verified:
    """Verify the database in one consistent snapshot, while writers may keep appending.

    Without ``first`` the chain is checked from its start (the genesis or the signed purge
    anchor); with ``first`` the range is checked from that record's stored link. The signed head
    is checked when the range reaches it.
    """
    with store.snapshot() as conn:
        marks = store.marks(conn)
        checkpoints = store.checkpoints(conn)
        clauses, params = [], []
        if first is not None:
            clauses.append("seq >= ?")
            params.append(first)
        if last is not None:
            clauses.append("seq <= ?")
            params.append(last)
        records = list(store.records(conn, " AND ".join(clauses), params))
    if first is not None and records:
        seq, prev = records[0].seq - 1, records[0].prev_hash
    else:
        seq, prev = _start(store.public_key, marks.get("anchor"))
    begin = seq + 1
    seq, prev, count = _links(store.public_key, records, seq, prev, checkpoints)
    head = marks.get("head")
    if last is None or (head is not None and last >= head[0]):
        _head(store.public_key, head, seq, prev, count)
    return Verified(begin, seq, count, sum(1 for s in checkpoints if begin <= s <= seq))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def export_jsonl(store: AuditStore, output: Path | None, stream: TextIO | None = None) -> int:
    """Write the chain as JSON lines (anchor, records, checkpoints, signed head); returns the count.

    With ``output``, the file is written to a temporary name and renamed, never left half-written.
    """
    with store.snapshot() as conn:
        marks = store.marks(conn)
        lines: list[str] = []
        if "anchor" in marks:
            s, h, g = marks["anchor"]
            lines.append(json.dumps({"type": "anchor", "seq": s, "hash": _b64(h), "sig": _b64(g)}))
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
            s, h, g = marks["head"]
            lines.append(json.dumps({"type": "head", "seq": s, "hash": _b64(h), "sig": _b64(g)}))
    text = "\n".join(lines) + ("\n" if lines else "")
    if output is None:
        (stream or _stdout()).write(text)
        return count
    write_atomic(output, text.encode())
    return count


def _stdout() -> TextIO:
    import sys  # noqa: PLC0415

    return sys.stdout


def _parse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    for number, line in enumerate(lines, start=1):
        if line.strip():
            try:
                doc = json.loads(line)
            except ValueError:
                raise ChainBroken(0, f"line {number} is not JSON") from None
            if not isinstance(doc, dict) or "type" not in doc:
                raise ChainBroken(0, f"line {number} is not an export record")
            yield doc


def verify_export(path: Path, key: Ed25519PublicKey) -> Verified:
    """Verify an export on its own: a cut tail is caught by the missing or mismatched head."""
    anchor = head = None
    records: list[Stored] = []
    checkpoints: dict[int, tuple[bytes, bytes]] = {}
    try:
        with path.open() as fh:
            for doc in _parse(fh):
                kind = doc["type"]
                if kind == "record":
                    records.append(
                        Stored(
                            int(doc["seq"]), 0, "", None, None, None, doc["body"].encode(),
                            base64.b64decode(doc["prev_hash"]), base64.b64decode(doc["hash"]),
                            base64.b64decode(doc.get("request", "")),
                            base64.b64decode(doc.get("response", "")),
                        )
                    )  # fmt: skip
                elif kind in ("anchor", "head"):
                    mark = (int(doc["seq"]), base64.b64decode(doc["hash"]), base64.b64decode(doc["sig"]))
                    anchor, head = (mark, head) if kind == "anchor" else (anchor, mark)
                elif kind == "checkpoint":
                    checkpoints[int(doc["seq"])] = (
                        base64.b64decode(doc["hash"]),
                        base64.b64decode(doc["sig"]),
                    )
    except (KeyError, TypeError, ValueError) as exc:
        raise ChainBroken(0, f"malformed export ({type(exc).__name__})") from None
    if head is None and records:
        raise ChainBroken(records[-1].seq, "export has no signed head line (cut short?)")
    seq, prev = _start(key, anchor)
    begin = seq + 1
    seq, prev, count = _links(key, records, seq, prev, checkpoints)
    _head(key, head, seq, prev, count)
    return Verified(begin, seq, count, sum(1 for s in checkpoints if begin <= s <= seq))
