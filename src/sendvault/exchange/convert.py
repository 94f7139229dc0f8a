"""Bulk CSV conversion: tokenize the named columns of a contact file, or detokenize them back.

Both stream. A file whose encoding allows it is cut into blocks of bytes that worker processes
parse, convert (look up, normalize, draw and seal new tokens, or open ciphertexts) and write
whole (see ``_blocks``); otherwise, and from a block a worker cannot vouch for on, rows are read
here in chunks that workers plan. New rows are stored in bulk in this process, and everything is
written in order to an output that appears only when everything succeeded. A bad row never
stops the run: it goes to the rejects sink with its line, column and a reason code, never its
value, and is left out of the output (an invalid address written as it was would be a clear
value in a file bound for the platform). Tokens committed before a failure stay valid, so a
second run gives the same tokens.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any, Protocol

from ..config import Settings
from ..errors import SendvaultError, StaleKeys, WorkerStopped
from ..store.base import NewContact
from ..vault import Kind, Vault
from ..vault.service import TokenPlan
from ._blocks import (
    BlockJob,
    BlockResult,
    Chunk,
    converted_count,
    fill_resolved,
    parse_block,
    prepare,
    split_rows,
)
from ._csvio import AtomicOutput, CsvInput, CsvProblem, block_codec, open_output
from ._workers import Planner, ResolvePlan
from .check import column_label

__all__ = [
    "ColumnError",
    "RejectSink",
    "Summary",
    "TooManyErrors",
    "detokenize_file",
    "tokenize_file",
    "unwritten",
]

# Rows per chunk handed to a worker; new rows gathered before one bulk insert (the store's
# transactions can be no larger: larger ones write fewer pages per row), and rows held at most
# before they are written whatever their count of new rows. Both bound memory, whatever the file.
# Where the store's transactions are larger (SQLite with a long ``sqlite_bulk_lock_seconds``, for
# a migration with no online traffic), new rows gather up to MAX_FLUSH_NEW_ROWS, and rows held by
# as many more: a group of known values gains nothing from size, so it grows no further.
CHUNK_ROWS = 5_000
FLUSH_NEW_ROWS = 100_000
HELD_ROWS = 160_000
MAX_FLUSH_NEW_ROWS = 225_000
# Below this many rows (bytes, for a file read in blocks) a file is converted in-process:
# starting workers costs more than it saves.
PARALLEL_AFTER_ROWS = 30_000
PARALLEL_AFTER_BYTES = 2 << 20
# Bytes per block of a file read in blocks (a block goes whole to a worker: see ``_blocks``).
BLOCK_BYTES = 256 << 10
_MAX_ATTRIBUTE_VALUE = 4096

Progress = Callable[[int, int], None]


class ColumnError(SendvaultError):
    """A named column is missing from the header, or named twice."""


class TooManyErrors(SendvaultError):
    """More rows were rejected than ``--max-errors`` allows; nothing was written."""


class RejectSink(Protocol):
    """Where rejected rows go: line, column and reason, never the value."""

    def add(self, line: int, column: str, reason: str) -> None:
        """Record one rejected cell."""


@dataclass
class Summary:
    """What a conversion did: counts and checksums, never a value (the audit record's meta)."""

    operation: str
    input: str
    output: str
    rows: int = 0
    written: int = 0
    rejected: int = 0
    values: int = 0
    created: int = 0
    empty: int = 0
    attributes: int = 0
    input_sha256: str = ""
    output_sha256: str = ""
    input_bytes: int = 0
    output_bytes: int = 0
    seconds: float = 0.0
    workers: int = 0  # worker processes that converted part of the file
    rejects: str | None = None
    status: str = "running"
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        out = asdict(self)
        out.pop("extra")
        out.update(self.extra)
        return out


def _account(summary: Summary, src: CsvInput, out: AtomicOutput, started: float) -> None:
    """Checksums, sizes and time, whatever ended the run; once the output is in place, a Ctrl-C
    (while the workers stop, say) no longer undoes the run: it is marked written."""
    summary.input_sha256, summary.input_bytes = src.sha256, src.bytes_read
    summary.output_sha256, summary.output_bytes = out.sha256, out.bytes_written
    summary.seconds = round(time.perf_counter() - started, 3)
    if out.in_place:
        summary.status = "written"


def unwritten(output: str) -> str:
    """What became of the output of a run that stopped: a file is never written half, but what
    went to stdout cannot be taken back."""
    return "no output was written" if output != "-" else "stdout holds only part of the output: discard it"


def _refuse_all_rejected(summary: Summary) -> None:
    """A file whose every row was rejected is a wrong column or a wrong file, not a result."""
    if summary.rows and not summary.written:
        raise TooManyErrors(
            f"every row ({summary.rejected:,}) was rejected; {unwritten(summary.output)}. "
            "Is --column the right column?"
        )


def _index(header: Sequence[str], names: Sequence[str], what: str) -> list[int]:
    positions = []
    stripped = [h.strip() for h in header]
    for name in names:
        hits = [i for i, h in enumerate(stripped) if h == name.strip()]
        if not hits:
            hits = [i for i, h in enumerate(stripped) if h.lower() == name.strip().lower()]
        if not hits:
            labels = [column_label(h, i) for i, h in enumerate(stripped[:30])]
            shown = ", ".join(
                repr(h) if h == label else label for h, label in zip(stripped, labels, strict=False)
            )
            data = any(label != h for h, label in zip(stripped, labels, strict=False))
            raise ColumnError(
                f"{what} column {name!r} is not in the header (columns: {shown})"
                + ("; the first line looks like data: IN needs a header row" if data else "")
            )
        if len(hits) > 1:
            raise ColumnError(f"{what} column {name!r} appears {len(hits)} times in the header")
        positions.append(hits[0])
    if len(set(positions)) != len(positions):
        raise ColumnError(f"a {what} column is named twice")
    return positions


@dataclass
class _Block:
    """A block of the file handed to a worker, then its result and the lines before it."""

    data: bytes
    result: BlockResult | None = None
    line: int = 0


def _block_job(
    src: CsvInput, out: AtomicOutput, spec: Sequence[tuple[int, int]], *, tokenize: bool
) -> BlockJob | None:
    """The job for reading ``src`` in blocks, or None where it is read record by record."""
    out_codec = block_codec(out.text.encoding)
    if src.block_codec is None or out_codec is None:
        return None
    return BlockJob(src.format, src.block_codec, out_codec, tuple(spec), tokenize)


def _chunks(src: CsvInput) -> Iterator[list[tuple[int, list[str]]]]:
    rows = src.rows()
    while True:
        chunk = list(islice(rows, CHUNK_ROWS))
        if not chunk:
            return
        yield chunk


class _Run:
    """State shared by both directions: output, rejects, counts, progress, max-errors."""

    def __init__(
        self,
        *,
        summary: Summary,
        src: CsvInput,
        out: AtomicOutput,
        header: list[str],
        rejects: RejectSink,
        max_errors: int | None,
        progress: Progress | None,
    ) -> None:
        self.summary, self.src, self.out, self.header = summary, src, out, header
        self.rejects, self.max_errors, self.progress = rejects, max_errors, progress

    def write(self, chunk: Chunk, keep: list[int] | None) -> None:
        """Write the chunk's good rows (only ``keep`` columns if given); the bad ones go to the
        rejects."""
        good, rejects = split_rows(chunk, keep)
        self._reject(rejects, 0)
        try:
            self.out.writer.writerows(good)
        except UnicodeEncodeError:
            raise CsvProblem(
                f"a value cannot be written in {self.out.text.encoding}; give --output-encoding utf-8"
            ) from None
        self.summary.empty += chunk.empty
        self._count(len(chunk.rows), len(good), converted_count(chunk))

    def write_block(self, block: _Block) -> None:
        """Write a converted block's output, its rejects numbered from the lines before it."""
        done = block.result
        assert done is not None
        self._reject(done.rejects, block.line)
        self.out.write_bytes(done.data)
        self.summary.empty += done.empty
        self._count(done.rows, done.written, done.values)

    def _reject(self, rejects: list[tuple[int, int, str]], before: int) -> None:
        """Record the problems of rejected rows (consecutive per row); stop at the row that goes
        past --max-errors, whatever the size of the chunk or block it came in."""
        last = None
        for line, col, reason in rejects:
            if line != last:
                self._within_max_errors()
                last = line
                self.summary.rejected += 1
            self.rejects.add(before + line, column_label(self.header[col], col) if col >= 0 else "", reason)
        self._within_max_errors()

    def _within_max_errors(self) -> None:
        if self.max_errors is not None and self.summary.rejected > self.max_errors:
            raise TooManyErrors(
                f"{self.summary.rejected} rows rejected, more than --max-errors {self.max_errors}; "
                + unwritten(self.summary.output)
            )

    def _count(self, rows: int, written: int, values: int) -> None:
        self.summary.rows += rows
        self.summary.written += written
        self.summary.values += values
        if self.progress is not None:
            self.progress(self.summary.rows, self.src.bytes_read)


def tokenize_file(
    vault: Vault,
    settings: Settings,
    src: CsvInput,
    output: str,
    *,
    columns: Sequence[tuple[str, Kind]],
    attributes: Sequence[str] = (),
    rejects: RejectSink,
    max_errors: int | None = None,
    workers: int = 2,
    progress: Progress | None = None,
    output_encoding: str | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Replace ``columns`` of ``src`` by tokens (creating them) and write ``output`` atomically.

    ``attributes`` columns are stored as the contact's attributes (on every token of the row)
    and left out of the output. Returns the summary; raises :class:`TooManyErrors`,
    :class:`ColumnError` or :class:`CsvProblem` with nothing written.
    """
    summary = summary or Summary("tokenize", src.name, output)
    started = time.perf_counter()
    positions = _index(src.header, [name for name, _ in columns], "tokenize")
    attr_pos = _index(src.header, attributes, "attribute") if attributes else []
    if set(attr_pos) & set(positions):
        raise ColumnError("a column cannot be both tokenized and an attribute")
    spec = [(p, int(kind)) for p, (_, kind) in zip(positions, columns, strict=True)]
    keep = [j for j in range(len(src.header)) if j not in set(attr_pos)] if attr_pos else None
    header = src.header
    out = open_output(output, src.format, encoding=output_encoding)
    planner = Planner(vault, settings, workers=workers)
    try:
        _start_early(src, planner)
        out.writer.writerow(header if keep is None else [header[j] for j in keep])
        run = _Run(
            summary=summary, src=src, out=out, header=header, rejects=rejects, max_errors=max_errors,
            progress=progress,
        )  # fmt: skip
        job = None if attr_pos else _block_job(src, out, spec, tokenize=True)
        _tokenize_rows(vault, run, planner, spec=spec, attr_pos=attr_pos, keep=keep, job=job)
        summary.workers = planner.workers_used
        _refuse_all_rejected(summary)
        src.drain()
        out.commit()
    except WorkerStopped as exc:
        out.discard()
        raise WorkerStopped(f"{exc}; {unwritten(output)}") from None
    except BaseException:
        out.discard()
        raise
    finally:
        _account(summary, src, out, started)
        planner.close()
    return summary


def _start_early(src: CsvInput, planner: Planner) -> None:
    """Start the workers now when the input is a file large enough to need them: they import
    and open the vault (most of a second) while this process converts the first blocks."""
    if src.size is not None and src.size > PARALLEL_AFTER_BYTES:
        planner.start_workers()


def _convert_blocks(run: _Run, planner: Planner, job: BlockJob, done: Callable[[_Block], None]) -> None:
    """Hand the file to the planner block by block; ``done`` takes each converted block, in order.

    Returns when the file is read, or at the first block that comes back unconverted (or where
    the file cannot be cut): the blocks from there on, converted or not, are read again record by
    record (``CsvInput.resume``), and ``run.src.rows()`` goes on with them.
    """
    line = run.src.line
    handed = 0

    def take() -> bool:
        nonlocal line
        block, result = planner.take()
        if result is None:
            later = [tag.data for tag in planner.abandon()]
            run.src.resume(b"".join([block.data, *later]), line)
            return False
        block.result, block.line = result, line
        line += result.lines
        done(block)
        return True

    for data in run.src.blocks(BLOCK_BYTES):
        handed += len(data)
        if handed > PARALLEL_AFTER_BYTES:
            planner.start_workers()
        planner.submit_block(_Block(data), job, data)
        while planner.backlog >= planner.capacity:
            if not take():
                return
    while planner.backlog:
        if not take():
            return
    run.src.resume(b"", line)


def _tokenize_rows(
    vault: Vault,
    run: _Run,
    planner: Planner,
    *,
    spec: Sequence[tuple[int, int]],
    attr_pos: Sequence[int],
    keep: list[int] | None,
    job: BlockJob | None,
) -> None:
    """Plan blocks or chunks (in workers once the file is large), store new rows in bulk, write
    in order.

    Storing and writing a group of blocks or chunks runs on a writer thread while this thread
    reads and plans the next group (SQLite releases the GIL while it inserts); at most two groups
    are in memory at once, and groups are written in order.
    """
    waiting: list[Chunk | _Block] = []
    pending_new = held = 0
    seen = 0
    writer = ThreadPoolExecutor(1, thread_name_prefix="sendvault-bulk-writer")
    last: Future[None] | None = None

    def flush() -> None:
        nonlocal last, pending_new, held
        if last is not None:
            last.result()
        last = writer.submit(
            _store_and_write, vault, run, list(waiting), spec=spec, attr_pos=attr_pos, keep=keep, job=job,
            stale=planner.refresh_keys,
        )  # fmt: skip
        waiting.clear()
        pending_new = held = 0

    def hold(item: Chunk | _Block, new: int, rows: int) -> None:
        nonlocal pending_new, held
        waiting.append(item)
        pending_new += new
        held += rows
        flush_new = _flush_new_rows(vault.store.bulk_batch_rows())
        if pending_new >= flush_new or held >= HELD_ROWS + flush_new - FLUSH_NEW_ROWS:
            flush()

    def done_block(block: _Block) -> None:
        assert block.result is not None
        hold(block, len(block.result.new), block.result.rows)

    try:
        if job is not None:
            _convert_blocks(run, planner, job, done_block)
        for raw in _chunks(run.src):
            seen += len(raw)
            if seen > PARALLEL_AFTER_ROWS:
                planner.start_workers()
            chunk, items, _ = prepare(raw, spec)
            planner.submit_plan(chunk, items, create=True)
            while planner.backlog >= planner.capacity:
                done, plan = planner.take()
                done.plan = plan
                hold(done, len(plan.new), len(done.rows))
        while planner.backlog:
            done, plan = planner.take()
            done.plan = plan
            waiting.append(done)
        flush()
        assert last is not None
        last.result()
    finally:
        writer.shutdown(wait=True, cancel_futures=True)


def _flush_new_rows(store_rows: int) -> int:
    """New rows to gather before a bulk insert: FLUSH_NEW_ROWS, or where the store's transactions
    are larger, a tenth below their size (a group ends with the block or chunk that crosses the
    mark, and should still go in one transaction), at most MAX_FLUSH_NEW_ROWS."""
    return max(FLUSH_NEW_ROWS, min(store_rows - store_rows // 10, MAX_FLUSH_NEW_ROWS))


def _kept(rows: Sequence[NewContact], found: dict[bytes, str]) -> int:
    """How many of ``rows`` the store kept: those whose value it answered with their own token."""
    return sum(1 for row in rows if found.get(row.bidx) == row.token)


def _store_and_write(
    vault: Vault,
    run: _Run,
    waiting: list[Chunk | _Block],
    *,
    spec: Sequence[tuple[int, int]],
    attr_pos: Sequence[int],
    keep: list[int] | None,
    job: BlockJob | None,
    stale: Callable[[], None],
) -> None:
    """One bulk insert for the waiting blocks' and chunks' new rows, then their rows in order.

    A block's output holds the tokens its worker drew for its new values: it is written as it is
    when the store kept every one of them. Where the store answered another token (the value was
    stored meanwhile, by this run's other block or by another writer) or none (the drawn token
    was taken), the block is converted again here, record by record.
    """
    new: list[NewContact] = [row for item in waiting for row in _new_rows(item)]
    try:
        found = vault.store.insert_bulk(new) if new else {}
    except StaleKeys:
        # The keys changed while the chunks were planned (a data key retired, the blind-index key
        # rotated or retired): plan them again here under the reloaded keys. Insert-or-get: rows
        # of an earlier chunk already committed are found by the new plan's lookups.
        drawn = {row.token for row in new}
        vault.refresh_keys()
        stale()  # and the workers reload theirs
        replanned = [_replanned(vault, item, spec, job) for item in waiting]
        waiting = list(replanned)
        new = [row for chunk in replanned for row in chunk.plan.new]
        found = vault.store.insert_bulk(new) if new else {}
        # Transactions of the refused call that committed before the change made these: the new
        # plans find them as known values.
        run.summary.created += len({t for chunk in replanned for t in chunk.plan.tokens if t in drawn})
    run.summary.created += _kept(new, found)
    for item in waiting:
        if isinstance(item, _Block):
            assert item.result is not None
            if _kept(item.result.new, found) == len(item.result.new):
                run.write_block(item)
                continue
            chunk = _replanned(vault, item, spec, job)
            again = vault.store.insert_bulk(chunk.plan.new) if chunk.plan.new else {}
            run.summary.created += _kept(chunk.plan.new, again)
            _write_planned(vault, run, chunk, again, spec=spec, attr_pos=attr_pos, keep=keep)
            continue
        _write_planned(vault, run, item, found, spec=spec, attr_pos=attr_pos, keep=keep)


def _new_rows(item: Chunk | _Block) -> list[NewContact]:
    if isinstance(item, _Block):
        assert item.result is not None
        return item.result.new
    plan: TokenPlan = item.plan
    return plan.new


def _replanned(
    vault: Vault, item: Chunk | _Block, spec: Sequence[tuple[int, int]], job: BlockJob | None
) -> Chunk:
    """The item as a chunk planned here, under the vault's current keys and rows."""
    if isinstance(item, _Block):
        assert job is not None
        rows, _ = parse_block(item.data, job, strict=False)  # parsed strictly once: same records
        chunk, _, _ = prepare([(item.line + line, fields) for line, fields in rows], spec)
    else:
        chunk = item
    kinds = dict(spec)
    values = [(Kind(kinds[col]), chunk.rows[pos][1][col]) for pos, col in chunk.where]
    chunk.plan = vault.plan_tokens(values)
    return chunk


def _write_planned(
    vault: Vault,
    run: _Run,
    chunk: Chunk,
    found: dict[bytes, str],
    *,
    spec: Sequence[tuple[int, int]],
    attr_pos: Sequence[int],
    keep: list[int] | None,
) -> None:
    """Put the chunk's tokens in its rows, given what the store answered, and write it."""
    kinds = dict(spec)
    plan: TokenPlan = chunk.plan
    # Without new rows the plan is the outcome: no object per value (the common case when a
    # file is converted again or holds known contacts).
    pairs: Iterable[tuple[str | None, str | None]] = (
        ((o.token, o.reason) for o in Vault.finish_plan(plan, found))
        if plan.new_of
        else zip(plan.tokens, plan.reasons, strict=True)
    )
    for (pos, col), (planned, why) in zip(chunk.where, pairs, strict=True):
        fields = chunk.rows[pos][1]
        token, reason = planned, why
        if token is None and reason == "retry":
            # The drawn token collided with an existing one: draw again the normal way.
            (outcome,) = vault.tokenize_many([(Kind(kinds[col]), fields[col])])
            run.summary.created += int(outcome.created)
            token, reason = outcome.token, outcome.reason
        if token is not None:
            fields[col] = token
        else:
            chunk.bad.setdefault(pos, []).append((col, reason or "invalid"))
    if attr_pos:
        _attributes(vault, run, chunk, spec, attr_pos)
    run.write(chunk, keep)


def _attributes(
    vault: Vault, run: _Run, chunk: Chunk, spec: Sequence[tuple[int, int]], attr_pos: Sequence[int]
) -> None:
    header = run.header
    items: list[tuple[str, dict[str, str]]] = []
    for pos, (_, fields) in enumerate(chunk.rows):
        if pos in chunk.bad or len(fields) <= max(attr_pos, default=0):
            continue
        attrs = {header[j].strip(): fields[j] for j in attr_pos if fields[j] != ""}
        too_long = [j for j in attr_pos if len(fields[j]) > _MAX_ATTRIBUTE_VALUE]
        if too_long:
            chunk.bad[pos] = [(j, "invalid-attribute-value") for j in too_long]
            continue
        if attrs:
            items.extend((fields[col], attrs) for col, _ in spec if fields[col])
    if items:
        run.summary.attributes += vault.merge_attributes_many(items)


def detokenize_file(
    vault: Vault,
    settings: Settings,
    src: CsvInput,
    output: str,
    *,
    columns: Sequence[str],
    rejects: RejectSink,
    max_errors: int | None = None,
    workers: int = 2,
    progress: Progress | None = None,
    output_encoding: str | None = None,
    summary: Summary | None = None,
) -> Summary:
    """Replace the tokens in ``columns`` of ``src`` by their clear values; write ``output``.

    A token the vault does not know (or erased) rejects its row (``unknown-token``, ``erased``).
    """
    summary = summary or Summary("detokenize", src.name, output)
    started = time.perf_counter()
    positions = _index(src.header, columns, "detokenize")
    spec = [(p, 0) for p in positions]
    out = open_output(output, src.format, encoding=output_encoding)
    planner = Planner(vault, settings, workers=workers)
    try:
        _start_early(src, planner)
        out.writer.writerow(src.header)
        run = _Run(
            summary=summary, src=src, out=out, header=src.header, rejects=rejects, max_errors=max_errors,
            progress=progress,
        )  # fmt: skip
        job = _block_job(src, out, spec, tokenize=False)
        if job is not None:
            _convert_blocks(run, planner, job, run.write_block)
        seen = 0
        for raw in _chunks(src):
            seen += len(raw)
            if seen > PARALLEL_AFTER_ROWS:
                planner.start_workers()
            chunk, tokens, _ = prepare(raw, spec)
            planner.submit_resolve(chunk, tokens)
            while planner.backlog >= planner.capacity:
                _write_resolved(run, *planner.take())
        while planner.backlog:
            _write_resolved(run, *planner.take())
        summary.workers = planner.workers_used
        _refuse_all_rejected(summary)
        src.drain()
        out.commit()
    except WorkerStopped as exc:
        out.discard()
        raise WorkerStopped(f"{exc}; {unwritten(output)}") from None
    except BaseException:
        out.discard()
        raise
    finally:
        _account(summary, src, out, started)
        planner.close()
    return summary


def _write_resolved(run: _Run, chunk: Chunk, resolved: ResolvePlan) -> None:
    fill_resolved(chunk, *resolved)
    run.write(chunk, None)
