"""Hostile CSV input to `csv tokenize` (hostile round): one line, exit 2, nothing written, no value."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import run_cli

SECRET = "zhong.secretname@example.com"


def test_an_unencodable_value_names_the_output_encoding(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text(f"Email,Name\n{SECRET},\u4e2d\u6587\n", encoding="utf-8")
    out = tmp_path / "out.csv"
    done = run_cli(
        tmp_path / "home", "csv", "tokenize", str(src), str(out), "--column", "Email=Email",
        "--output-encoding", "latin-1",
    )  # fmt: skip
    assert done.returncode == 2
    assert "cannot be written in iso8859-1" in done.stderr  # it said utf-8, the input's encoding
    assert not out.exists()
    assert "\u4e2d" not in done.stderr


@pytest.mark.parametrize(
    ("content", "args", "said"),
    [
        (f"Email,Name\n{SECRET},A\0nn\n".encode(), [], "NUL"),
        (f"Email,Email\n{SECRET},{SECRET}\n".encode(), [], "appears 2 times"),
        (f'Email,Note\n{SECRET},"{"x" * 2_000_000}"\n'.encode(), [], "field limit"),
        (f"Email,Name\n{SECRET},Ann\n".encode(), ["--column", "Mail=Email"], "not in the header"),
        (b"", [], "empty"),
    ],
    ids=["nul", "duplicate-header", "huge-field", "missing-column", "empty"],
)
def test_hostile_files_are_one_line_and_leave_nothing(
    tmp_path: Path, content: bytes, args: list[str], said: str
) -> None:
    first = _refused(tmp_path, content, *(args or ["--column", "Email=Email"]))
    assert said in first


def _refused(tmp_path: Path, content: bytes, *args: str) -> str:
    """`csv tokenize` of ``content`` refused: exit 2, one error line (returned) with no value in
    it, no traceback, no output and no rejects file."""
    src = tmp_path / "in.csv"
    src.write_bytes(content)
    out = tmp_path / "out.csv"
    done = run_cli(tmp_path / "home", "csv", "tokenize", str(src), str(out), *args)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ")
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stderr + done.stdout
    assert not out.exists()
    assert not (tmp_path / "out.csv.rejects.csv").exists()
    return done.stderr.splitlines()[0]


def test_a_file_without_a_header_row_never_echoes_its_first_line(tmp_path: Path) -> None:
    # A careless export without a header: its first line (data) became the column list of the error.
    src = tmp_path / "in.csv"
    src.write_text(f"{SECRET},Ann,+447911123456\nbob@example.com,Bob,+447911123457\n")
    for command in (["tokenize", "--column", "Email=Email"], ["detokenize", "--column", "Email"]):
        done = run_cli(
            tmp_path / "home", "csv", command[0], str(src), str(tmp_path / "out.csv"), *command[1:]
        )
        assert done.returncode == 2
        assert "needs a header row" in done.stderr
        assert SECRET not in done.stderr
        assert "7911123456" not in done.stderr


def test_check_names_a_column_whose_header_is_a_clear_value_by_number(tmp_path: Path) -> None:
    src = tmp_path / "send.csv"
    src.write_text(f"SubscriberKey,{SECRET}\nK1,+447911123456\n")
    done = run_cli(tmp_path / "home", "exchange", "check", str(src))
    assert done.returncode == 1
    assert "column '#2': phone" in done.stdout
    assert SECRET not in done.stdout + done.stderr


def test_rejects_never_replace_or_remove_a_file_that_is_not_a_rejects_file(tmp_path: Path) -> None:
    # Hostile round: `--rejects IN` replaced the input by the rejects (exit 0), and with nothing
    # rejected any file given as --rejects was deleted as a "stale" rejects file.
    home = tmp_path / "home"
    src = tmp_path / "in.csv"
    text = "Email,Name\na@example.com,Ann\nnot-an-address,Bob\n"
    src.write_text(text)
    out = tmp_path / "out.csv"
    for rejects, said in ((src, "--rejects is the input file"), (out, "--rejects is OUT")):
        done = run_cli(
            home, "csv", "tokenize", str(src), str(out), "--column", "Email=Email", "--rejects", str(rejects)
        )
        assert done.returncode == 2, done.stderr
        assert said in done.stderr
        assert src.read_text() == text
        assert not out.exists()
    clean = tmp_path / "clean.csv"
    clean.write_text("Email\nb@example.com\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    done = run_cli(
        home, "csv", "tokenize", str(clean), str(out), "--column", "Email=Email", "--rejects", str(notes)
    )
    assert done.returncode == 0, done.stderr
    assert notes.read_text() == "my notes\n"
    stale = tmp_path / "stale.csv"
    stale.write_text("line,column,reason\n3,Email,invalid-email\n")
    out.unlink()
    done = run_cli(
        home, "csv", "tokenize", str(clean), str(out), "--column", "Email=Email", "--rejects", str(stale)
    )
    assert done.returncode == 0, done.stderr
    assert not stale.exists()  # a rejects file of an earlier run still goes


def _rows(first: int, last: int, newline: str = "\n") -> str:
    return "".join(f"{i},u{i}@example.com,n{i}{newline}" for i in range(first, last))


# (file bytes, options, line of the first byte that does not decode). Each bad value holds the
# secret: the error names the line and the encoding, never the value.
_UNDECODABLE = [
    # Past the 64 KiB sample the encoding was told from, in a file (3 MB) read in blocks by
    # workers: the block fails to decode there and is read again record by record.
    (("Id,Email,Note\n" + _rows(0, 90_000)).encode() + f"x,{SECRET}\xff,n\n".encode("latin-1")
     + _rows(90_001, 100_000).encode(), [], 90_002),
    # CRLF, with quoted line breaks (a record of 3 lines, one of 2) before the bad byte.
    (("Id,Email,Note\r\n" + _rows(0, 3_000, "\r\n") + '1,a@example.com,"x\r\ny\r\nz"\r\n'
      + '2,b@example.com,"p\nq"\r\n' + _rows(3_000, 5_000, "\r\n")).encode()
     + f"x,{SECRET},\x80\r\n".encode("latin-1") + b"y,z@example.com,n\r\n", [], 5_007),
    # An incomplete UTF-8 sequence at the very end of the file.
    (("Id,Email,Note\n" + _rows(0, 2_000)).encode() + f"x,{SECRET}".encode() + b"\xe2\x82", [], 2_002),
    # UTF-16 (with its BOM): an unpaired surrogate.
    ("Id,Email,Note\n".encode("utf-16") + _rows(0, 4_000).encode("utf-16-le")
     + f"x,{SECRET}".encode("utf-16-le") + b"\x00\xd8" + ",n\n".encode("utf-16-le")
     + _rows(4_001, 4_100).encode("utf-16-le"), [], 4_002),
    # Windows-1252 asked for: 0x81 is one of its five undefined bytes.
    (("Id,Email,Note\n" + _rows(0, 1_000)).encode() + f"x,{SECRET}\x81,n\n".encode("latin-1"),
     ["--encoding", "cp1252"], 1_002),
]  # fmt: skip


@pytest.mark.parametrize(
    ("content", "args", "line"), _UNDECODABLE, ids=["utf-8", "crlf", "end", "utf-16", "cp1252"]
)
def test_bytes_that_do_not_decode_are_reported_at_their_line(
    tmp_path: Path, content: bytes, args: list[str], line: int
) -> None:
    first = _refused(tmp_path, content, "--column", "Email=Email", *args)
    assert first.startswith(f"error: {tmp_path / 'in.csv'}: line {line}: not valid "), first


_BAD_AT_3002 = ("Id,Email,Note\n" + _rows(0, 3_000)).encode() + f"x,{SECRET}\xff,n\n".encode("latin-1")


def _tokenize_stdin(tmp_path: Path, **stdin: Any) -> str:
    """`csv tokenize -` with ``input=`` bytes or ``stdin=`` a descriptor: refused, its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "sendvault", "csv", "tokenize", "-", str(tmp_path / "out.csv"),
         "--column", "Email=Email"],
        capture_output=True, timeout=120, check=False,
        env={**os.environ, "SENDVAULT_HOME": str(tmp_path / "home")}, **stdin,
    )  # fmt: skip
    stderr = done.stderr.decode()
    assert done.returncode == 2, stderr
    assert SECRET not in stderr
    assert not (tmp_path / "out.csv").exists()
    return stderr


def test_bytes_that_do_not_decode_on_standard_input_are_reported_near_their_line(tmp_path: Path) -> None:
    stderr = _tokenize_stdin(tmp_path, input=_BAD_AT_3002)
    # Standard input cannot be read again: the line of the next record the reader stood at.
    near = int(stderr.split("near line ")[1].split(":")[0])
    assert 1 < near <= 3_002, stderr


def _true_line(data: bytes, encoding: str) -> int:
    """The line of the first undecodable bytes, found the slow way: the longest start of the
    whole file that decodes (no chunks), and its line breaks as the csv reader counts them."""
    import codecs
    import re

    good = 0
    for size in range(len(data) + 1):
        try:
            codecs.getincrementaldecoder(encoding)().decode(data[:size])
        except UnicodeDecodeError:
            break
        good = size
    text = codecs.getincrementaldecoder(encoding)().decode(data[:good])
    return len(re.findall("\r\n|\r|\n", text)) + 1


_SMALL_UNDECODABLE = {
    "lf": (b"Id,Email\n1,a@x.com\n2,b@x.com\n3,c\xff@x.com\n4,d@x.com\n", "utf-8"),
    "crlf-cr-quoted": (
        b'Id,Email\r\n1,a@x.com\r\n2,"b\r\nq\rr\nz",x\r3,c@x.com\r\n\r\n\xe9,c@x.com\r\n',
        "utf-8",
    ),
    "after-cr": (b"Id,Email\r1,a@x.com\r2,b@x.com\r\xff3,c@x.com\r", "utf-8"),
    "bom-first-on-line": (b"\xef\xbb\xbfId,Email\n1,a@x.com\n\n2,b@x.com\n\xe9,c@x.com\n", "utf-8-sig"),
    "cut-at-end": (b"Id,Email\n1,\xe2\x82\xac@x.com\n2,b@x.com\r\n3,\xe2\x82", "utf-8"),
    "utf-16": (
        "Id,Email\n1,a@x.com\r\n2,b".encode("utf-16") + b"\x00\xdc" + "@x.com\n".encode("utf-16-le"),
        "utf-16",
    ),
    # A two-byte character over every chunk boundary, then a lead byte with no valid second byte.
    "cp932": ("Id,Name\n1,日本語\n2,カナ\r\n3,漢字".encode("cp932") + b"\x81\x20\n4,x\n", "cp932"),
}


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64, 1 << 20])
@pytest.mark.parametrize("case", sorted(_SMALL_UNDECODABLE))
def test_the_line_of_undecodable_bytes_does_not_depend_on_where_chunks_end(
    tmp_path: Path, case: str, chunk: int
) -> None:
    from sendvault.exchange._csvio import _undecodable_line

    data, encoding = _SMALL_UNDECODABLE[case]
    junk = b"junk before the start"
    path = tmp_path / "in.csv"
    path.write_bytes(junk + data + b"bytes the run has not read")
    span, sha256 = (len(junk), len(data)), hashlib.sha256(data).hexdigest()
    with path.open("rb") as fh:
        assert _undecodable_line(fh.fileno(), span, sha256, encoding, chunk) == _true_line(data, encoding)


def _cp932_split_then_breaks() -> bytes:
    """cp932 whose chunks of 64 bytes start inside a two-byte character, with line breaks after
    it and then the bad bytes, all in the same chunk (the decoder drops the held byte when it
    raises: the error's offset then lies)."""
    data = b"Id,Name\n" + b"x" * (63 - len(b"Id,Name\n")) + "日".encode("cp932")
    return data + b"\n1,a\n2,b\r\n3,c" + b"\x81\x20" + b"\n" * 80


def test_a_two_byte_character_across_a_chunk_start_counts_the_lines_after_it(tmp_path: Path) -> None:
    from sendvault.exchange._csvio import _undecodable_line

    data = _cp932_split_then_breaks()
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    with path.open("rb") as fh:
        got = _undecodable_line(fh.fileno(), (0, len(data)), hashlib.sha256(data).hexdigest(), "cp932", 64)
    assert got == _true_line(data, "cp932") == 5


def test_the_line_is_exact_only_for_the_bytes_the_run_read(tmp_path: Path) -> None:
    from sendvault.exchange._csvio import _undecodable_line

    data = b"Id,Email\n1,a@x.com\n2,\xff@x.com\n"
    path = tmp_path / "in.csv"
    path.write_bytes(data)
    sha256 = hashlib.sha256(data).hexdigest()
    with path.open("rb") as fh:
        assert _undecodable_line(fh.fileno(), (0, len(data)), sha256, "utf-8") == 3
        # Rewritten in place (same inode) since: another first error, or none; either way not exact.
        path.write_bytes(b"\xff" + data[1:])
        assert _undecodable_line(fh.fileno(), (0, len(data)), sha256, "utf-8") is None
        path.write_bytes(data + b"grown since: never read\n" * 1000)
        assert _undecodable_line(fh.fileno(), (0, len(data)), sha256, "utf-8") == 3
        path.write_bytes(data[:10])  # truncated
        assert _undecodable_line(fh.fileno(), (0, len(data)), sha256, "utf-8") is None
    bomless = "Id,Email\n".encode("utf-16-le")  # the utf-16 codec needs its BOM: a UnicodeError
    path.write_bytes(bomless)
    with path.open("rb") as fh:
        assert _undecodable_line(fh.fileno(), (0, len(bomless)), "", "utf-16") is None


def test_a_path_replaced_during_the_run_is_not_read(tmp_path: Path) -> None:
    from sendvault.exchange import CsvInput
    from sendvault.exchange._csvio import CsvProblem

    path = tmp_path / "in.csv"
    path.write_bytes(("Id,Email,Note\n" + _rows(0, 3_000)).encode() + b"x,y\xff@x.com,n\n")
    src = CsvInput(str(path), encoding="utf-8")
    other = tmp_path / "other.csv"
    other.write_bytes(b"Id,Email\n\xff\n")  # its first error is on line 2
    other.replace(path)
    try:
        with pytest.raises(CsvProblem, match=r": line 3002: not valid utf-8"):
            for _ in src.rows():
                pass
    finally:
        src.close()


def test_a_named_pipe_is_never_read_twice(tmp_path: Path) -> None:
    # Reading a FIFO again would wait for a writer that never comes: the line is "near" instead.
    import threading

    fifo = tmp_path / "in.csv"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as fh:
            fh.write(_BAD_AT_3002)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    out = tmp_path / "out.csv"
    done = run_cli(tmp_path / "home", "csv", "tokenize", str(fifo), str(out), "--column", "Email=Email")
    feeder.join(timeout=10)
    assert done.returncode == 2, done.stderr
    assert f"error: {fifo}: near line " in done.stderr
    assert SECRET not in done.stderr
    assert not out.exists()


def test_standard_input_from_a_file_gets_the_exact_line(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    before = b"a file handed over part read\nlines count from where the run starts\n"
    src.write_bytes(before + _BAD_AT_3002)
    stdin = os.open(src, os.O_RDONLY)
    try:
        os.lseek(stdin, len(before), os.SEEK_SET)
        stderr = _tokenize_stdin(tmp_path, stdin=stdin)
    finally:
        os.close(stdin)
    assert stderr.startswith("error: -: line 3002: not valid utf-8"), stderr
