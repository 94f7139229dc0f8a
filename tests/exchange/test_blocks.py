"""Files read in blocks of bytes convert exactly as files read record by record.

A block is cut after a line break with an even count of quotes before it, and converted whole
where it is parsed. These tests cut files into blocks of a few bytes, so that cuts fall inside
quoted fields, between CR and LF, after stray quotes and in the last unterminated line, and
compare every byte of the output, every reject and every count with the record-by-record path.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from sendvault.config import Settings
from sendvault.exchange import CsvInput, _csvio, _workers, convert, detokenize_file, tokenize_file
from sendvault.exchange._csvio import CsvProblem
from sendvault.vault import Kind, Vault


class Collect:
    def __init__(self) -> None:
        self.items: list[tuple[int, str, str]] = []

    def add(self, line: int, column: str, reason: str) -> None:
        self.items.append((line, column, reason))


_COUNTS = ("rows", "written", "rejected", "values", "empty", "attributes")


def _open(source: Path, blocks: int | None) -> CsvInput:
    """``source`` to be read in blocks of ``blocks`` bytes, or record by record from the header
    on (None), as files in encodings that cannot be cut are read."""
    real = _csvio.block_codec
    convert.BLOCK_BYTES = blocks or convert.BLOCK_BYTES
    _csvio.block_codec = real if blocks else (lambda encoding: None)  # type: ignore[assignment]
    try:
        src = CsvInput(str(source))
    finally:
        _csvio.block_codec = real  # type: ignore[method-assign]
    assert blocks is not None or src.block_codec is None
    return src


def _convert(
    vault: Vault, settings: Settings, source: Path, out: Path, *, tokenize: bool, blocks: int | None
) -> tuple[Any, ...]:
    """Output bytes, rejects and counts of one in-process run (see :func:`_open`). An error is
    the outcome too: its type and message."""
    src = _open(source, blocks)
    rejects = Collect()
    try:
        if tokenize:
            summary = tokenize_file(
                vault, settings, src, str(out), columns=[("Email", Kind.EMAIL)], rejects=rejects, workers=0
            )
        else:
            summary = detokenize_file(
                vault, settings, src, str(out), columns=["Email"], rejects=rejects, workers=0
            )
    except (CsvProblem, convert.TooManyErrors, convert.ColumnError) as exc:
        return ("error", type(exc).__name__, str(exc))
    finally:
        src.close()
    counts = {name: getattr(summary, name) for name in _COUNTS}
    return out.read_bytes(), rejects.items, counts, summary.created, summary.input_sha256


@pytest.fixture
def block_size() -> Iterator[None]:
    saved = convert.BLOCK_BYTES
    yield
    convert.BLOCK_BYTES = saved


@pytest.fixture
def converted(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each block handed to a worker was converted there (False: sent back)."""
    seen: list[bool] = []
    real = _workers.convert_block

    def spy(*args: Any) -> Any:
        result = real(*args)
        seen.append(result is not None)
        return result

    monkeypatch.setattr(_workers, "convert_block", spy)
    return seen


_EMAIL = st.builds(
    lambda user, host: f"{user}@{host}.com",
    st.text(alphabet="abcXYZ019._+", min_size=1, max_size=6).filter(
        lambda u: u[0] not in "._" and ".." not in u
    ),
    st.text(alphabet="abcdefxyz", min_size=1, max_size=5),
)
# Text made mostly of what the cuts and the writer care about: delimiters, quotes, CR and LF.
_TEXT = st.lists(
    st.one_of(
        st.sampled_from([",", '"', "\r", "\n", "\r\n", " ", "x", "\u00e9"]),
        st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
    ),
    max_size=6,
).map("".join)


def _quoted(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


# A cell as written in the file: plain, quoted (with delimiters, quotes, CR and LF inside),
# or malformed in the ways a lenient reader accepts: a stray quote inside a plain cell, and text
# after a closing quote.
_CELL = st.one_of(
    _EMAIL,
    _EMAIL.map(_quoted),
    _TEXT.filter(lambda t: not any(c in t for c in ',"\r\n')),
    _TEXT.map(_quoted),
    st.tuples(_TEXT, _TEXT).map(
        lambda p: f'x{p[0]}"{p[1]}'.replace("\r", "").replace("\n", "").replace(",", "")
    ),
    st.tuples(_TEXT, st.sampled_from(["a", "b c", '"'])).map(lambda p: _quoted(p[0]) + p[1]),
    st.just(""),
    st.just("not-an-email"),
)
# Mostly whole records with an address in the Email column (a file whose every row is rejected
# is an error, which tells little); some short, blank or with any cell there.
_RECORD = st.one_of(
    st.tuples(
        st.integers(0, 999).map(str),
        st.one_of(_EMAIL, _EMAIL, _EMAIL.map(_quoted), _CELL),
        st.lists(_CELL, min_size=0, max_size=2),
    ).map(lambda r: [r[0], r[1], *r[2]]),
    st.tuples(
        st.integers(0, 999).map(str),
        st.one_of(_EMAIL, _EMAIL, _EMAIL.map(_quoted), _CELL),
        st.lists(_CELL, min_size=0, max_size=2),
    ).map(lambda r: [r[0], r[1], *r[2]]),
    st.lists(_CELL, min_size=0, max_size=4),
)
_ENDING = st.sampled_from(["\n", "\r\n", "\n", "\r\n", "\r"])


@st.composite
def _files(draw: st.DrawFn) -> bytes:
    ending = draw(_ENDING)
    lines = ["Id,Email,Note", ending]
    for record in draw(st.lists(_RECORD, min_size=1, max_size=14)):
        if draw(st.integers(0, 9)) == 0:
            ending = draw(_ENDING)  # files that mix their line endings
        lines += [",".join(record), ending]
    text = "".join(lines)
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # no line break after the last record
    return text.encode()


@hsettings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=_files(), size=st.integers(1, 64), blocks_first=st.booleans())
def test_blocks_of_any_size_give_what_records_give(
    vault: Vault,
    settings: Settings,
    tmp_path: Path,
    block_size: None,
    data: bytes,
    size: int,
    blocks_first: bool,
) -> None:
    source, by_blocks, by_records = tmp_path / "in.csv", tmp_path / "b.csv", tmp_path / "r.csv"
    source.write_bytes(data)
    # Whichever runs first creates the tokens: both orders put the new-value path of blocks to
    # the test.
    order = [(by_blocks, size), (by_records, None)]
    if not blocks_first:
        order.reverse()
    outcome = {
        out: _convert(vault, settings, source, out, tokenize=True, blocks=blocks) for out, blocks in order
    }
    first, second = (outcome[out] for out, _ in order)
    assert outcome[by_blocks][:3] == outcome[by_records][:3]
    if first[0] != "error":
        assert first[4] == second[4]  # both read the whole file
        assert second[3] == 0  # the first run created every token
        back = {
            out: _convert(vault, settings, by_records, tmp_path / f"d{n}.csv", tokenize=False, blocks=blocks)
            for n, (out, blocks) in enumerate(order)
        }
        assert back[by_blocks][:3] == back[by_records][:3]


def _run_both(
    vault: Vault, settings: Settings, tmp_path: Path, text: str, size: int
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    source = tmp_path / "in.csv"
    source.write_bytes(text.encode())
    by_records = _convert(vault, settings, source, tmp_path / "r.csv", tokenize=True, blocks=None)
    by_blocks = _convert(vault, settings, source, tmp_path / "b.csv", tokenize=True, blocks=size)
    return by_records, by_blocks


def test_a_quoted_line_break_is_never_a_cut(
    vault: Vault, settings: Settings, tmp_path: Path, block_size: None, converted: list[bool]
) -> None:
    text = "Id,Email,Note\n" + "".join(
        f'{i},u{i}@example.com,"two\nlines, and ""quotes"""\n' + f"{i},bad {i},x\n" for i in range(30)
    )
    by_records, by_blocks = _run_both(vault, settings, tmp_path, text, 20)
    assert by_blocks[:3] == by_records[:3]
    assert len(converted) == 30  # one block per pair of records, every one converted in blocks
    assert all(converted)
    # Rejects name the line a record starts on: 1 header line, then 3 lines per pair.
    assert by_blocks[1][:2] == [(4, "Email", "invalid-email"), (7, "Email", "invalid-email")]
    rows = list(csv.reader(io.StringIO(by_blocks[0].decode(), newline="")))
    assert len(rows) == 31
    assert all(row[2] == 'two\nlines, and "quotes"' for row in rows[1:])


def test_a_stray_quote_sends_the_rest_of_the_file_record_by_record(
    vault: Vault, settings: Settings, tmp_path: Path, block_size: None
) -> None:
    # 'a"b' holds a quote a lenient reader keeps as a character: the count of quotes is odd from
    # there, so no later cut is sure. What follows is still converted, as the reader reads it.
    text = "Id,Email,Note\n" + "".join(f"{i},u{i}@example.com,plain\n" for i in range(20))
    text += '20,u20@example.com,a"b\n21,bad,"x\ny"\n' + "".join(
        f"{i},u{i}@example.com,z\n" for i in range(22, 40)
    )
    by_records, by_blocks = _run_both(vault, settings, tmp_path, text, 64)
    assert by_blocks[:3] == by_records[:3]
    assert by_blocks[1] == [(23, "Email", "invalid-email")]
    assert by_blocks[2]["written"] == 39


def test_a_value_two_blocks_draw_a_token_for_gets_one_token(
    vault: Vault, settings: Settings, tmp_path: Path, block_size: None
) -> None:
    # Both blocks are planned before either is stored, so each draws its own token for the
    # value; the store keeps one, and the block whose token lost is converted again.
    text = "Id,Email\n" + "".join(f"{i},Same.Person@Example.com\n" for i in range(12))
    source = tmp_path / "in.csv"
    source.write_bytes(text.encode())
    first = _convert(vault, settings, source, tmp_path / "b.csv", tokenize=True, blocks=40)
    tokens = {line.split(",")[1] for line in first[0].decode().splitlines()[1:]}
    assert len(tokens) == 1
    assert first[3] == 1  # created once
    (known,) = vault.tokenize_many([(Kind.EMAIL, "same.person@example.com")], create=False)
    assert tokens == {known.token}


def test_an_output_encoding_that_cannot_hold_a_value_is_the_same_error(
    vault: Vault, settings: Settings, tmp_path: Path, block_size: None
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes("Id,Email,Note\n1,a@example.com,caf\u00e9\n2,b@example.com,\u2603\n".encode())
    outcomes = []
    for blocks in (None, 16):
        convert.BLOCK_BYTES = blocks or convert.BLOCK_BYTES
        src = CsvInput(str(source))
        with pytest.raises(CsvProblem) as caught:
            tokenize_file(
                vault, settings, src, str(tmp_path / "o.csv"), columns=[("Email", Kind.EMAIL)],
                rejects=Collect(), workers=0, output_encoding="cp1252",
            )  # fmt: skip
        src.close()
        outcomes.append(str(caught.value))
    assert outcomes[0] == outcomes[1]
    assert "cannot be written in cp1252" in outcomes[0]
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("data", [
    b"\xef\xbb\xbfId;Email\r\n1;A@Example.com\r\n2;\"b@example.com\"\r\n",
    "Id\tEmail\tNom\n1\tx@example.com\tRen\u00e9e\n".encode("cp1252"),
    b"Id,Email\r1,r@example.com\r2,s@example.com\r",
    b'"Id","Email"\n"1","q@example.com"\n"2","bad"\n',
])  # fmt: skip
def test_formats_read_in_blocks_as_they_are_read_by_records(
    vault: Vault, settings: Settings, tmp_path: Path, block_size: None, data: bytes
) -> None:
    source = tmp_path / "in.csv"
    source.write_bytes(data)
    by_records = _convert(vault, settings, source, tmp_path / "r.csv", tokenize=True, blocks=None)
    by_blocks = _convert(vault, settings, source, tmp_path / "b.csv", tokenize=True, blocks=8)
    assert by_blocks[:3] == by_records[:3]
    assert by_blocks[2]["written"] >= 1


def test_a_cr_inside_a_field_of_an_lf_file_stays_quoted(
    vault: Vault, settings: Settings, tmp_path: Path, block_size: None, converted: list[bool]
) -> None:
    # An LF file's writer ends records with LF itself only for rows without a CR: a bare CR in
    # a field would split the row when the file is read back.
    text = "Id,Email,Note\n" + "".join(
        f'{i},u{i}@example.com,"a\rb"\n{i},v{i}@example.com,c\n' for i in range(5)
    )
    by_records, by_blocks = _run_both(vault, settings, tmp_path, text, 40)
    assert by_blocks[:3] == by_records[:3]
    assert all(converted)
    assert by_blocks[0].count(b'"a\rb"') == 5
    assert by_blocks[0].count(b"\r") == 5


@pytest.mark.parametrize("blocks", [None, 2_000])
def test_max_errors_stops_at_the_row_past_it_whatever_the_block_or_chunk(
    vault: Vault, settings: Settings, tmp_path: Path, block_size: None, blocks: int | None
) -> None:
    # It stopped at the end of the 5,000-row chunk or the 256 KiB block that went past it, so the
    # count in the message and the rejects kept depended on how the file was cut. A row with two
    # bad cells is one rejected row.
    rows = "".join(
        f"{i},{'bad ' if i % 7 == 3 else ''}u{i}@example.com,{'x' if i % 14 == 3 else '+12125550123'}\n"
        for i in range(400)
    )
    source = tmp_path / "in.csv"
    source.write_text("Id,Email,Mobile\n" + rows)
    src = _open(source, blocks)
    rejects = Collect()
    both = [("Email", Kind.EMAIL), ("Mobile", Kind.MOBILE)]
    with pytest.raises(convert.TooManyErrors) as caught:
        tokenize_file(
            vault, settings, src, str(tmp_path / "o.csv"), columns=both,
            rejects=rejects, workers=0, max_errors=4,
        )  # fmt: skip
    src.close()
    assert str(caught.value).startswith("5 rows rejected, more than --max-errors 4")
    # Rows 3, 10, 17, 24 and 31 (lines 5, 12, ...); 3, 17 and 31 have a bad mobile number too.
    assert [line for line, _, _ in rejects.items] == [5, 5, 12, 19, 19, 26, 33, 33]
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize("blocks", [None, 4_000])
def test_tokens_committed_before_a_key_change_count_as_created(
    vault: Vault, settings: Settings, tmp_path: Path, block_size: None, blocks: int | None
) -> None:
    # The blind-index key is rotated between two transactions of one bulk insert: the second
    # is refused (StaleKeys) and everything is planned again under the new keys, where the
    # first transaction's rows are known values. They were made by this run all the same.
    from sendvault.vault import open_vault
    from sendvault.vault.lifecycle import rotate_index_key

    operator = open_vault(settings)
    real_insert = vault.store.insert_bulk
    calls: list[int] = []

    def insert_then_rotate(rows: Any) -> Any:
        calls.append(len(rows))
        if len(calls) > 1:
            return real_insert(rows)
        found = dict(real_insert(rows[:150]))
        rotate_index_key(operator)
        found.update(real_insert(rows[150:]))  # refused: StaleKeys
        return found

    vault.store.insert_bulk = insert_then_rotate  # type: ignore[method-assign]
    source = tmp_path / "in.csv"
    source.write_text("Id,Email\n" + "".join(f"{i},k{i}@example.com\n" for i in range(400)))
    done = _convert(vault, settings, source, tmp_path / "o.csv", tokenize=True, blocks=blocks)
    operator.close()
    assert calls[0] == 400
    assert len(calls) == 2, calls
    assert done[2]["written"] == 400
    assert done[3] == 400  # created: 150 before the change and 250 after
    assert vault.store.count() == 400
    tokens = [line.split(",")[1] for line in done[0].decode().splitlines()[1:]]
    assert len(set(tokens)) == 400


@pytest.mark.parametrize("text", [
    # LF, with a blank line, a short row, an empty cell and no line break at the end.
    "Id,Email,Note\n1,a@example.com,x\n\n2\n3,,y\n4,b@example.com,n\n5,bad,z\n6,c@example.com,w",
    # CRLF throughout, and a CRLF file with bare LF lines and a bare CR in some blocks.
    "Id,Email\r\n" + "".join(f"{i},u{i}@example.com\r\n" for i in range(12)),
    "Id,Email\r\n" + "".join(f"{i},u{i}@example.com\r\n{i},v{i}@example.com\n" for i in range(6)),
    "Id,Email,Note\r\n" + "".join(f"{i},u{i}@example.com,a\rb\r\n" for i in range(6)),
    # An LF file with a CR in a field, and tabs, semicolons and pipes as delimiters.
    "Id,Email,Note\n" + "".join(f"{i},u{i}@example.com,a\rb\n" for i in range(6)),
    "Id\tEmail\n" + "".join(f"{i}\tu{i}@example.com\n" for i in range(12)),
    "Id;Email\n" + "".join(f"{i};u{i}@example.com\n" for i in range(12)),
    "Id|Email|Note\n" + "".join(f"{i}|U{i}@Example.com|{'bad' if i % 5 else 'x'}\n" for i in range(12)),
])  # fmt: skip
@pytest.mark.parametrize("size", [8, 40, 4096])
def test_blocks_without_quotes_are_split_as_the_parser_reads_them(
    vault: Vault, settings: Settings, tmp_path: Path, block_size: None, text: str, size: int
) -> None:
    # A block without a quote character is split at its line ends and delimiters, and written
    # back by joining, where that gives what the parser and the writer give.
    by_records, by_blocks = _run_both(vault, settings, tmp_path, text, size)
    assert by_blocks[:3] == by_records[:3]
    back = [
        _convert(vault, settings, tmp_path / "r.csv", tmp_path / f"d{n}.csv", tokenize=False, blocks=blocks)
        for n, blocks in enumerate((None, size))
    ]
    assert back[0][:3] == back[1][:3]


def test_a_clear_value_that_holds_the_delimiter_is_quoted_when_a_plain_block_is_joined(
    vault: Vault, settings: Settings, tmp_path: Path, block_size: None, converted: list[bool]
) -> None:
    # `a|b@example.com` is a valid address. The file of tokens holds no quote, so its blocks are
    # split plainly; the clear values coming back must still be quoted in a `|` file.
    source = tmp_path / "in.csv"
    source.write_text("Id|Email\n" + "".join(f'{i}|"u{i}|x@example.com"\n' for i in range(6)))
    tokens = _convert(vault, settings, source, tmp_path / "t.csv", tokenize=True, blocks=None)
    assert b'"' not in tokens[0]
    back = [
        _convert(vault, settings, tmp_path / "t.csv", tmp_path / f"d{n}.csv", tokenize=False, blocks=blocks)
        for n, blocks in enumerate((None, 20))
    ]
    assert back[0][:3] == back[1][:3]
    assert converted
    assert all(converted)
    assert back[1][0].decode().splitlines()[1:] == [f'{i}|"u{i}|x@example.com"' for i in range(6)]


@pytest.mark.parametrize(("rows", "early"), [(200, False), (4000, True)])
def test_workers_start_before_the_first_block_when_the_file_needs_them(
    vault: Vault, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int, early: bool
) -> None:
    # They used to start only once 2 MiB had been handed out, and the run then waited most of a
    # second for them. A regular file says its size: past the threshold they start at once.
    monkeypatch.setattr(convert, "PARALLEL_AFTER_BYTES", 64 << 10)
    monkeypatch.setattr(convert, "BLOCK_BYTES", 8 << 10)
    source = tmp_path / "in.csv"
    source.write_text("Id,Email\n" + "".join(f"{i},user.{i}@example.com\n" for i in range(rows)))
    blocks: list[bytes] = []
    blocks_at_start: list[int] = []
    real_start, real_submit = _workers.Planner.start_workers, _workers.Planner.submit_block

    def start(planner: _workers.Planner, *, wait: bool = False) -> None:
        if planner._pool is None:
            blocks_at_start.append(len(blocks))
        real_start(planner, wait=wait)

    def submit(planner: _workers.Planner, tag: Any, job: Any, block: bytes) -> None:
        blocks.append(block)
        real_submit(planner, tag, job, block)

    monkeypatch.setattr(_workers.Planner, "start_workers", start)
    monkeypatch.setattr(_workers.Planner, "submit_block", submit)
    src = CsvInput(str(source))
    try:
        summary = tokenize_file(
            vault, settings, src, str(tmp_path / "out.csv"), columns=[("Email", Kind.EMAIL)],
            rejects=Collect(), workers=2,
        )  # fmt: skip
    finally:
        src.close()
    assert summary.rows == rows
    assert len(blocks) > 10 if early else len(blocks) == 1
    assert blocks_at_start == ([0] if early else [])
    if not early:
        assert summary.workers == 0


def _small_groups(monkeypatch: pytest.MonkeyPatch, *, chunk_rows: int) -> None:
    """The converter's group sizes scaled down: 600 new rows, 960 held, at most 3,000 new."""
    monkeypatch.setattr(convert, "CHUNK_ROWS", chunk_rows)
    monkeypatch.setattr(convert, "FLUSH_NEW_ROWS", 600)
    monkeypatch.setattr(convert, "HELD_ROWS", 960)
    monkeypatch.setattr(convert, "MAX_FLUSH_NEW_ROWS", 3_000)


@pytest.mark.parametrize(
    ("store_rows", "mark", "expected"),
    [
        (0, 600, [600] * 10),  # no measure yet: the converter's own size
        (400, 600, [600] * 10),  # smaller transactions: never less than its own size
        # Larger ones (a long bulk lock): gathered to a tenth below their size, so that the
        # chunk crossing the mark (300 rows here) still fits in one transaction.
        (2_400, 2_160, [2_400, 2_400, 1_200]),
        (10_000, 3_000, [3_000, 3_000]),  # at most MAX_FLUSH_NEW_ROWS, whatever the store says
    ],
)
@pytest.mark.parametrize("blocks", [None, 2_000])
def test_new_rows_per_bulk_insert_follow_the_store_transaction_size(
    vault: Vault,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    block_size: None,
    blocks: int | None,
    store_rows: int,
    mark: int,
    expected: list[int],
) -> None:
    _small_groups(monkeypatch, chunk_rows=300)
    # The store's own figure is timed for real in tests/store/test_sqlite.py; here it is set.
    monkeypatch.setattr(vault.store, "bulk_batch_rows", lambda: store_rows)
    real_insert = vault.store.insert_bulk
    calls: list[int] = []

    def recording(rows: Any) -> Any:
        calls.append(len(rows))
        return real_insert(rows)

    monkeypatch.setattr(vault.store, "insert_bulk", recording)
    source = tmp_path / "in.csv"
    source.write_text("Id,Email\n" + "".join(f"{i},f{i}@example.com\n" for i in range(6_000)))
    done = _convert(vault, settings, source, tmp_path / "o.csv", tokenize=True, blocks=blocks)
    assert done[3] == 6_000
    assert vault.store.count() == 6_000
    if blocks is None:
        assert calls == expected
    else:  # blocks of about 2,000 bytes (about 95 rows) end a group anywhere past the mark
        assert sum(calls) == 6_000
        assert all(mark <= size < mark + 200 for size in calls[:-1]), calls
        assert calls[-1] < mark + 200, calls


@pytest.mark.parametrize(("store_rows", "groups"), [(0, [960] * 6 + [240]), (2_400, [2_520, 2_520, 960])])
def test_groups_of_known_values_grow_only_by_what_new_rows_gained(
    vault: Vault,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    block_size: None,
    store_rows: int,
    groups: list[int],
) -> None:
    # Rows held before they are written, whatever their count of new rows: HELD_ROWS, plus as
    # many as the store's larger transactions add to the new rows' mark (2,160 - 600 here).
    _small_groups(monkeypatch, chunk_rows=120)
    source = tmp_path / "in.csv"
    source.write_text("Id,Email\n" + "".join(f"{i},k{i}@example.com\n" for i in range(6_000)))
    _convert(vault, settings, source, tmp_path / "first.csv", tokenize=True, blocks=None)
    monkeypatch.setattr(vault.store, "bulk_batch_rows", lambda: store_rows)
    real = convert._store_and_write
    held: list[int] = []

    def recording(vault_: Vault, run: Any, waiting: list[Any], **kwargs: Any) -> None:
        held.append(sum(len(item.rows) for item in waiting))
        real(vault_, run, waiting, **kwargs)

    monkeypatch.setattr(convert, "_store_and_write", recording)
    done = _convert(vault, settings, source, tmp_path / "again.csv", tokenize=True, blocks=None)
    assert done[3] == 0  # every value known
    assert held == groups
