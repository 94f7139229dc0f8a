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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from ..store.base import NewContact
from ..vault import Kind, Vault
from ._csvio import FIELD_LIMIT, CsvFormat

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
    where, items, bad, empty = _cells([fields for _, fields in chunk], columns, lambda kind: kind)
    return Chunk(chunk, where, bad, empty), items, empty


def _cells(
    rows: list[list[str]], columns: Sequence[tuple[int, int]], kind_of: Callable[[int], Any]
) -> tuple[list[tuple[int, int]], list[Any], dict[int, list[tuple[int, str]]], int]:
    """:func:`prepare` of bare rows: where the values are, the values (``(kind_of(kind),
    value)``, or the bare value for tokens), the rows too short, the count of empty cells."""
    need = max(i for i, _ in columns) + 1
    items: list[Any] = []
    where: list[tuple[int, int]] = []
    bad: dict[int, list[tuple[int, str]]] = {}
    empty = 0
    kinds = [(col, kind_of(kind) if kind else None) for col, kind in columns]
    for pos, fields in enumerate(rows):
        if len(fields) < need:
            if fields:  # a blank line is kept as it is
                bad[pos] = [(-1, "missing-column")]
            continue
        for col, kind in kinds:
            value = fields[col]
            if not value or value.isspace():
                empty += 1
                continue
            items.append((kind, value) if kind is not None else value)
            where.append((pos, col))
    return where, items, bad, empty


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
    rows = [fields for _, fields in chunk.rows]
    _fill(rows, chunk.where, values, reasons, chunk.bad, missing="unknown-token")


def _fill(
    rows: list[list[str]],
    where: Sequence[tuple[int, int]],
    values: Sequence[str | None],
    reasons: Sequence[str | None],
    bad: dict[int, list[tuple[int, str]]],
    *,
    missing: str,
) -> None:
    """Put each converted value in its cell; a cell without one rejects its row (for its
    reason, else ``missing``)."""
    for (pos, col), value, reason in zip(where, values, reasons, strict=True):
        if value is not None:
            rows[pos][col] = value
        else:
            bad.setdefault(pos, []).append((col, reason or missing))


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


def _plain_rows(text: str, fmt: CsvFormat) -> list[list[str]] | None:
    """The block's records split at line ends and delimiters, where that is exactly what the
    parser gives (and the writer gives back): a block without a quote character whose lines all
    end as the file's do (no CR at all in an LF file), with no field over the parser's limit.
    Most machine-made exports are such; splitting them costs a fraction of parsing."""
    if '"' in text or fmt.quote_all or len(text) > FIELD_LIMIT:
        return None
    ending = fmt.line_terminator
    if ending == "\n":
        if "\r" in text:
            return None
    elif ending != "\r\n" or not text.count("\r") == text.count("\n") == text.count("\r\n"):
        return None
    lines = text.split(ending)
    if not lines[-1]:
        lines.pop()  # the block ends with a line end (all but maybe the file's last one do)
    delimiter = fmt.delimiter
    return [line.split(delimiter) if line else [] for line in lines]


def _plain_text(rows: list[list[str]], fmt: CsvFormat, values: Sequence[str | None]) -> str | None:
    """:func:`_write` of rows that came from :func:`_plain_rows`, by joining, where none of the
    converted ``values`` needs quoting (a token never does; a clear value may)."""
    added = "".join(value for value in values if value is not None)
    if fmt.delimiter in added or '"' in added or "\r" in added or "\n" in added:
        return None
    ending, delimiter = fmt.line_terminator, fmt.delimiter
    return "".join([delimiter.join(fields) + ending for fields in rows])


def _one_column(rows: list[list[str]], spec: Sequence[tuple[int, int]]) -> list[str] | None:
    """The values of the only column to convert, when every row holds a non-blank one (most
    blocks): they are then converted without noting where each one is."""
    if len(spec) != 1:
        return None
    col = spec[0][0]
    try:
        values = [fields[col] for fields in rows]
    except IndexError:  # a short row or a blank line
        return None
    return values if all(value and not value.isspace() for value in values) else None


def _convert(
    vault: Vault, job: BlockJob, items: list[Any]
) -> tuple[list[str | None], list[str | None], list[NewContact]]:
    """Each item's token (or clear value) or reason, and the new rows the tokens assume."""
    if not job.tokenize:
        resolved = vault.resolve_many(items)
        return [r.value for r in resolved], [r.reason or "unknown-token" for r in resolved], []
    plan = vault.plan_tokens(items, create=True)
    tokens = plan.tokens
    if plan.new_of:
        tokens = list(tokens)  # the plan's own list keeps None where a token is drawn
        drawn = {row.bidx: row.token for row in plan.new}
        for index, bidx in plan.new_of.items():
            tokens[index] = drawn[bidx]
    return tokens, plan.reasons, plan.new


def _records(block: bytes, job: BlockJob) -> tuple[list[list[str]], int, bool] | None:
    """The block's records, its count of lines, and whether it was split plainly (see
    :func:`_plain_rows`); None where it cannot be decoded or is not strictly well-formed."""
    try:
        text = block.decode(job.codec)
    except UnicodeDecodeError:
        return None
    plain = _plain_rows(text, job.fmt)
    if plain is not None:
        return plain, len(plain), True
    reader = job.fmt.reader(io.StringIO(text, newline=""), strict=True)
    try:
        rows = list(reader)
    except csv.Error:
        return None
    return rows, reader.line_num, False


def convert_block(vault: Vault, job: BlockJob, block: bytes) -> BlockResult | None:
    """Convert one block (see the module docstring); None where it must be read record by record."""
    records = _records(block, job)
    if records is None:
        return None
    rows, lines, plain = records
    column = _one_column(rows, job.spec)
    where: list[tuple[int, int]] = []
    bad: dict[int, list[tuple[int, str]]] = {}
    empty = 0
    if column is not None:
        col, kind = job.spec[0]
        items: list[Any] = [(_KINDS[kind], value) for value in column] if job.tokenize else column
    else:
        where, items, bad, empty = _cells(rows, job.spec, _KINDS.__getitem__)
    values, reasons, new = _convert(vault, job, items)
    good: list[list[str]] = rows
    rejects: list[tuple[int, int, str]] = []
    if column is not None and None not in values:
        for fields, out in zip(rows, cast("list[str]", values), strict=True):  # no test per row
            fields[col] = out
        converted = len(rows)
    else:
        if column is not None:
            where = [(pos, col) for pos in range(len(rows))]
        _fill(rows, where, values, reasons, bad, missing="invalid")
        chunk = Chunk([], where, bad, empty)
        if bad:  # line numbers, for the rejects only (a plain block's records are its lines)
            numbered = parse_block(block, job, strict=True)[0] if not plain else enumerate(rows, 1)
            chunk.rows = [(line, fields) for (line, _), fields in zip(numbered, rows, strict=True)]
            good, rejects = split_rows(chunk, None)
        converted = converted_count(chunk)
    joined = _plain_text(good, job.fmt, values) if plain else None
    try:
        data = (joined if joined is not None else _write(job.fmt, good)).encode(job.out_codec)
    except UnicodeEncodeError:
        return None
    return BlockResult(data, lines, len(rows), len(good), converted, empty, rejects, new)
