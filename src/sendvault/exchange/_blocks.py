"""Chunks of rows, and whole blocks of a file converted where they are parsed.

A :class:`Chunk` is rows with the cells to convert (``where``) and the problems found
(``bad``). The process that reads a file in blocks of bytes (``CsvInput.blocks``) hands each
block whole to :func:`convert_block`, which runs in a worker: it decodes and parses the block,
converts its cells and writes its output rows, so the reading process only moves bytes. A block
it cannot vouch for (its parse is not strictly well-formed, so the cut may not be a record's end;
a byte its codec cannot decode; a value the output encoding cannot hold) comes back as None, and
the reading process reads on record by record from that block.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..store.base import NewContact
from ..vault import Kind, Vault
from ._csvio import CsvFormat

__all__ = ["BlockJob", "BlockResult", "Chunk", "convert_block", "fill_resolved", "prepare", "split_rows"]

_KINDS = {int(k): k for k in Kind}


@dataclass
class Chunk:
    """Rows ``(line, fields)``, the cells to convert and the problems found, by row position."""

    rows: list[tuple[int, list[str]]]
    where: list[tuple[int, int]]
    bad: dict[int, list[tuple[int, str]]]
    empty: int = 0  # empty cells in the columns to convert
    plan: Any = None


def prepare(
    chunk: list[tuple[int, list[str]]], columns: Sequence[tuple[int, int]]
) -> tuple[Chunk, list[Any], int]:
    """Split rows into the values to convert and the rows too short to hold them; count the
    empty cells. Values are ``(kind, value)`` where ``kind`` is non-zero, else the bare value."""
    need = max(i for i, _ in columns) + 1
    items: list[Any] = []
    where: list[tuple[int, int]] = []
    bad: dict[int, list[tuple[int, str]]] = {}
    empty = 0
    for pos, (_, fields) in enumerate(chunk):
        if len(fields) < need:
            if fields:  # a blank line is kept as it is
                bad[pos] = [(-1, "missing-column")]
            continue
        for col, kind in columns:
            value = fields[col]
            if not value or value.isspace():
                empty += 1
                continue
            items.append((kind, value) if kind else value)
            where.append((pos, col))
    return Chunk(chunk, where, bad, empty), items, empty


def split_rows(chunk: Chunk, keep: list[int] | None) -> tuple[list[list[str]], list[tuple[int, int, str]]]:
    """The rows to write (only ``keep`` columns if given), and ``(line, column, reason)`` of each
    problem of the rows left out (column -1: the row as a whole)."""
    if not chunk.bad and keep is None:
        return [fields for _, fields in chunk.rows], []  # the common case: no test per row
    good: list[list[str]] = []
    rejects: list[tuple[int, int, str]] = []
    for pos, (line, fields) in enumerate(chunk.rows):
        problems = chunk.bad.get(pos)
        if problems:
            rejects.extend((line, col, reason) for col, reason in problems)
            continue
        good.append(fields if keep is None else [fields[j] for j in keep if j < len(fields)])
    return good, rejects


def fill_resolved(chunk: Chunk, values: Sequence[str | None], reasons: Sequence[str | None]) -> None:
    """Put each token's clear value in its cell; a token without one rejects its row."""
    for (pos, col), value, reason in zip(chunk.where, values, reasons, strict=True):
        if value is not None:
            chunk.rows[pos][1][col] = value
        else:
            chunk.bad.setdefault(pos, []).append((col, reason or "unknown-token"))


def converted_count(chunk: Chunk) -> int:
    """Cells converted in the rows written."""
    return sum(1 for pos, _ in chunk.where if pos not in chunk.bad) if chunk.bad else len(chunk.where)


@dataclass(frozen=True)
class BlockJob:
    """What every block of one conversion shares: its formats, columns and direction."""

    fmt: CsvFormat  # the input's (the writer copies it)
    codec: str  # the input's, for a block past the BOM
    out_codec: str  # the output's
    spec: tuple[tuple[int, int], ...]  # (column, kind); kind 0 for tokens
    tokenize: bool


@dataclass
class BlockResult:
    """A converted block: its output bytes, what it counted, and the new rows its tokens assume.

    Line numbers in ``rejects`` count from the block's first line (1). The output holds the
    tokens drawn for ``new``: it is right once the store keeps every one of them.
    """

    data: bytes
    lines: int
    rows: int
    written: int
    values: int
    empty: int
    rejects: list[tuple[int, int, str]]
    new: list[NewContact] = field(default_factory=list)


def parse_block(block: bytes, job: BlockJob, *, strict: bool) -> tuple[list[tuple[int, list[str]]], int]:
    """The block's records ``(line, fields)`` (lines from 1) and its count of lines."""
    reader = job.fmt.reader(io.StringIO(block.decode(job.codec), newline=""), strict=strict)
    rows: list[tuple[int, list[str]]] = []
    line = 0
    for fields in reader:
        rows.append((line + 1, fields))
        line = reader.line_num
    return rows, line


def _write(fmt: CsvFormat, rows: list[list[str]]) -> str:
    """The rows as CSV text in ``fmt``."""
    if fmt.line_terminator == "\n":
        # Tokens and clear values hold no CR: most files' rows then hold none.
        fast = io.StringIO()
        fmt.writer(fast, without_cr=True).writerows(rows)
        if "\r" not in (text := fast.getvalue()):
            return text
    out = io.StringIO()
    fmt.writer(out).writerows(rows)
    return out.getvalue()


def convert_block(vault: Vault, job: BlockJob, block: bytes) -> BlockResult | None:
    """Convert one block (see the module docstring); None where it must be read record by record."""
    try:
        rows, lines = parse_block(block, job, strict=True)
    except (csv.Error, UnicodeDecodeError):
        return None
    chunk, items, empty = prepare(rows, job.spec)
    new: list[NewContact] = []
    if job.tokenize:
        plan = vault.plan_tokens([(_KINDS[k], v) for k, v in items], create=True)
        new = plan.new
        drawn = {row.bidx: row.token for row in new}
        outcomes = zip(plan.tokens, plan.reasons, strict=True)
        for index, ((pos, col), (planned, reason)) in enumerate(zip(chunk.where, outcomes, strict=True)):
            token = drawn[plan.new_of[index]] if planned is None and index in plan.new_of else planned
            if token is not None:
                chunk.rows[pos][1][col] = token
            else:
                chunk.bad.setdefault(pos, []).append((col, reason or "invalid"))
    else:
        resolved = vault.resolve_many(items)
        fill_resolved(chunk, [r.value for r in resolved], [r.reason for r in resolved])
    good, rejects = split_rows(chunk, None)
    try:
        data = _write(job.fmt, good).encode(job.out_codec)
    except UnicodeEncodeError:
        return None
    return BlockResult(data, lines, len(rows), len(good), converted_count(chunk), empty, rejects, new)
