"""Verification of the audit chain (database or export), export and the signed head.

Verification raises :class:`ChainBroken` naming the first broken record and why: a changed
field (a hash mismatch, or a stored column or fingerprint row that differs from the hashed
body), a deleted record or reordered records (a gap or a wrong previous hash), a truncated tail
(the signed head is ahead of the last record), a forged checkpoint, head or anchor (a bad
signature under the trusted public key, or a checkpoint for no record), a purge anchor without
the ``audit:purge`` record that the purge wrote with it (whole-chain checks), an emptied log (no
signed head), and a log rolled back below a head kept elsewhere (``known``: a head kept by hand
or the heads a witness holds). A request that cannot be answered (a reversed range, a range or
known head that was purged) raises ValueError.

A range (``first``/``last``) is proven only by a signature at or after its end: the hash chain
runs forward, so a trusted later hash vouches for every record before it. The walk goes on past
``last`` to the nearest signed checkpoint or the signed head, and :attr:`Verified.covered_by`
names it; a range with no signed point after it (records after the head) is reported as not
covered rather than intact.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature

from .marks import Verifier
from .record import GENESIS, chain_hash, names_purge
from .store import AuditStore, Checkpoint, Mark, Stored, check_signature

__all__ = [
    "ChainBroken",
    "Verified",
    "signed_head",
    "verify_connection",
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
    # The signed point that vouches for the last record checked: ("checkpoint" | "head", seq).
    covered_by: tuple[str, int] | None = None


def _sig(key: Verifier, kind: str, mark: Mark, what: str | None = None) -> None:
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
        key: Verifier,
        seq: int,
        prev: bytes,
        checkpoints: dict[int, Checkpoint],
        *,
        fingerprints: Iterator[tuple[int, str]] | None = None,
        known: Sequence[Mark] = (),
        anchor: int | None = None,
    ) -> None:
        self.key = key
        # A purge anchor is vouched for by its purge's own record, which must follow it.
        self._anchor = anchor
        self._purge_seen = anchor is None
        self.first = seq + 1
        self.seq, self.prev = seq, prev
        self.count = 0
        self.matched = 0
        self.signed_at: int | None = None  # the last record a checkpoint signature vouched for
        self._checkpoints = dict(checkpoints)
        # Only the database has indexed columns and fingerprint rows besides the hashed body.
        self._fingerprints = _Peek(fingerprints) if fingerprints is not None else None
        self._newest = max(known, key=lambda m: m.seq) if known else None
        self._known: dict[int, bytes] = {}
        for mark in known:
            if self._known.setdefault(mark.seq, mark.hash) != mark.hash:
                raise ChainBroken(mark.seq, "two known heads name different hashes (a forked history)")
        if self._newest is not None and self._newest.seq < seq:
            raise ValueError(
                f"the known head (record {self._newest.seq}) was purged: the log starts after record {seq};"
                " give a newer known head"
            )
        if self._known.get(seq, prev) != prev:
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
            if checkpoint.hash != rec.hash:
                raise ChainBroken(rec.seq, "checkpoint does not match the record")
            dated = checkpoint.ts_us is not None
            mark = Mark(rec.seq, checkpoint.hash, checkpoint.sig, checkpoint.ts_us or 0)
            _sig(self.key, "head" if dated else "checkpoint", mark, "checkpoint")
            self.matched += 1
            self.signed_at = rec.seq
        if self._known.get(rec.seq, rec.hash) != rec.hash:
            raise ChainBroken(rec.seq, "differs from the known head (the log was rewritten)")
        if not self._purge_seen and self._anchor is not None:
            self._purge_seen = names_purge(rec.body, self._anchor)
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
        if self._newest is not None and self._newest.seq > self.seq:
            raise ChainBroken(
                self.seq + 1,
                f"the log ends at record {self.seq}, before the known head (record {self._newest.seq}):"
                " rolled back or truncated",
            )
        if not self._purge_seen:
            raise ChainBroken(
                self.first - 1,
                f"the purge anchor (record {self._anchor}) has no audit:purge record naming it: records"
                " were dropped without a purge, or the purge's record was deleted",
            )

    def covers(self, head: Mark | None) -> tuple[str, int] | None:
        """The signed point at the record just checked, if any (its signature is checked here)."""
        if self.signed_at == self.seq:
            return ("checkpoint", self.seq)
        if head is not None and head.seq == self.seq:
            _sig(self.key, "head", head)
            if head.hash != self.prev:
                raise ChainBroken(self.seq, "differs from the signed head")
            return ("head", self.seq)
        return None


def _start(key: Verifier, anchor: Mark | None) -> tuple[int, bytes]:
    if anchor is None:
        return 0, GENESIS
    _sig(key, "anchor", anchor)
    return anchor.seq, anchor.hash


def _trusted(store: AuditStore) -> Verifier:
    if store.public_key is None:
        raise ValueError("no trusted public key to verify with")
    return store.public_key


def _knowns(key: Verifier, known: Mark | Sequence[Mark] | None) -> list[Mark]:
    """The known heads as a list, each signature checked under the trusted key."""
    marks = [] if known is None else [known] if isinstance(known, Mark) else list(known)
    for mark in marks:
        _sig(key, "head", mark, "known head")
    return marks


def verify_store(
    store: AuditStore,
    *,
    first: int | None = None,
    last: int | None = None,
    known: Mark | Sequence[Mark] | None = None,
) -> Verified:
    """Verify the database in one consistent snapshot, while writers may keep appending.

    Without ``first`` the chain is checked from its start (the genesis or the signed purge
    anchor); with ``first`` the range starts from that record's stored link, and the record must
    be there, as must ``last``. Without ``last`` the chain must end exactly at the signed head;
    with it, the walk goes on to the nearest signed point (see the module's docstring). Every
    ``known`` head (kept elsewhere, or held by a witness) must still be in the chain, with the
    same hash, and the chain must reach the newest.
    """
    if first is not None and last is not None and first > last:
        raise ValueError(f"the range is reversed: --from {first} is after --to {last}")
    if known is not None and (first is not None or last is not None):
        raise ValueError("a known head is checked against the whole chain: give no range")
    knowns = _knowns(_trusted(store), known)
    try:
        with store.snapshot() as conn:
            return verify_connection(store, conn, first=first, last=last, known=knowns)
    except sqlite3.DatabaseError as exc:
        raise ChainBroken(0, f"the audit database cannot be read ({exc})") from None


def verify_connection(
    store: AuditStore,
    conn: sqlite3.Connection,
    *,
    first: int | None = None,
    last: int | None = None,
    known: Sequence[Mark] = (),
) -> Verified:
    """:func:`verify_store` inside a transaction the caller holds (purge verifies in its own)."""
    key = _trusted(store)
    marks = store.marks(conn)
    head = marks.get("head")
    start = _start(key, marks.get("anchor"))
    end = max(store.last_seq(conn) or 0, head.seq if head is not None else 0, start[0])
    if last is not None and last <= start[0]:
        raise ValueError(f"records up to {last} were purged: the log starts after record {start[0]}")
    if first is not None and first > end:
        raise ValueError(f"the log ends at record {end}")
    lo = first if first is not None and first > start[0] + 1 else None
    hi = min(last, end) if last is not None else None
    records = store.records(conn, "seq >= ?" if lo is not None else "", (lo,) if lo is not None else ())
    fingerprints = store.fingerprint_rows(conn, lo)
    checkpoints = store.checkpoints(conn)
    if lo is None:
        anchor = marks.get("anchor")
        walk = _Walk(
            key,
            *start,
            checkpoints,
            fingerprints=fingerprints,
            known=known,
            anchor=anchor.seq if anchor is not None else None,
        )
    else:
        opening = next(records, None)
        if opening is None or opening.seq != lo:
            raise ChainBroken(lo, "missing (deleted)")
        walk = _Walk(key, lo - 1, opening.prev_hash, checkpoints, fingerprints=fingerprints)
        walk.step(opening)
    if hi is None:
        for rec in records:
            walk.step(rec)
        walk.finish(head)
        assert head is not None  # finish raises without one
        return Verified(walk.first, walk.seq, walk.count, walk.matched, head, ("head", head.seq))
    covered = walk.covers(head) if walk.seq >= hi else None
    checked = (walk.seq, walk.count, walk.matched)
    for rec in records if covered is None else iter(()):
        walk.step(rec)
        if walk.seq <= hi:
            checked = (walk.seq, walk.count, walk.matched)
        if walk.seq >= hi and (covered := walk.covers(head)) is not None:
            break
    if checked[0] < hi:
        raise ChainBroken(checked[0] + 1, "missing (deleted)")
    if covered is None and head is not None and head.seq > walk.seq:
        raise ChainBroken(walk.seq + 1, f"missing (deleted): the signed head is record {head.seq}")
    return Verified(walk.first, checked[0], checked[1], checked[2], None, covered)


def signed_head(store: AuditStore) -> Mark:
    """The database's current head, its signature checked under the store's public key."""
    with store.snapshot() as conn:
        head = store.marks(conn).get("head")
    if head is None:
        raise ChainBroken(0, "no signed head: the log was emptied")
    _sig(_trusted(store), "head", head)
    return head
