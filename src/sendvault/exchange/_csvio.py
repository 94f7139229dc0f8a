"""Real-world CSV in and out: sniffing, encodings and BOMs, streaming, atomic output.

A :class:`CsvInput` reads a file (or stdin) in constant memory, hashing the bytes it reads and
counting them for progress. Its :class:`CsvFormat` is sniffed from the first 64 KiB unless given:
encoding (BOM, else UTF-8, else Windows-1252), delimiter (``,`` ``;`` tab ``|``), line ending and
whether every field is quoted; the output is written in the same format, so every column the
conversion does not touch keeps its bytes.

An :class:`AtomicOutput` is invisible until :meth:`AtomicOutput.commit`: on Linux it is an
anonymous ``O_TMPFILE`` linked into place at the end, so even a ``kill -9`` leaves nothing behind;
elsewhere a hidden temporary file renamed over the target.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import hashlib
import io
import os
import re
import secrets
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from .._fs import check_replaceable
from ..errors import SendvaultError, StdoutFailed

__all__ = ["AtomicOutput", "CsvFormat", "CsvInput", "CsvProblem", "open_output", "sniff"]

_SAMPLE_BYTES = 64 * 1024
_DELIMITERS = (",", ";", "\t", "|")
# A field larger than this is a broken file (an unclosed quote swallowing the rest), not data.
FIELD_LIMIT = 1 << 20

csv.field_size_limit(FIELD_LIMIT)


class CsvProblem(SendvaultError):
    """The file cannot be read as CSV (or written in its format); the message names the line."""


@dataclass(frozen=True, slots=True)
class CsvFormat:
    """How a file is written: the output copies the input's format."""

    encoding: str = "utf-8"
    delimiter: str = ","
    line_terminator: str = "\r\n"
    quote_all: bool = False

    def writer(self, stream: IO[str], *, without_cr: bool = False) -> Any:
        """A csv writer in this format.

        ``without_cr``: for rows none of whose fields holds a CR, in a file whose records end
        with LF; the writer then ends records with LF itself, which is faster.
        """
        # csv quotes a field only for the characters of its own line terminator: with "\n", a
        # lone CR in a field would go out bare and split the row when read back. So the writer
        # ends records with CRLF (quoting any field that holds CR or LF), and each record's
        # ending is rewritten to the file's own, unless no field holds a CR: then "\n" quotes
        # the same fields.
        ending = "\r\n"
        sink: Any = stream
        if without_cr and self.line_terminator == "\n":
            ending = "\n"
        elif self.line_terminator != "\r\n":
            sink = _Ending(stream, self.line_terminator)
        return csv.writer(
            sink,
            delimiter=self.delimiter,
            quotechar='"',
            doublequote=True,
            lineterminator=ending,
            quoting=csv.QUOTE_ALL if self.quote_all else csv.QUOTE_MINIMAL,
        )

    def reader(self, stream: IO[str], *, strict: bool = False) -> Any:
        """A csv reader in this format; ``strict`` raises where the lenient reader would make
        the best of a quote out of place (and only there)."""
        return csv.reader(stream, delimiter=self.delimiter, quotechar='"', doublequote=True, strict=strict)


class _Ending:
    """A text sink that turns each record's CRLF ending into ``ending`` (one write per record)."""

    def __init__(self, stream: IO[str], ending: str) -> None:
        self._write = stream.write
        self._ending = ending

    def write(self, text: str) -> int:
        """Write one record, with the file's line ending."""
        if text.endswith("\r\n"):
            text = text[:-2] + self._ending
        return self._write(text)


def _codec(name: str) -> str:
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise CsvProblem(f"unknown encoding {name!r}") from None


_UTF16_BOMS = (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)
_UTF32_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)


def _bom_encoding(sample: bytes) -> str | None:
    """The encoding a file's BOM names, if it starts with one."""
    if sample.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    if sample.startswith(_UTF32_BOMS):
        return "utf-32"
    if sample.startswith(_UTF16_BOMS):
        return "utf-16"
    return None


def _bare_wide(sample: bytes) -> str | None:
    """UTF-16 or UTF-32 without a BOM, told by where its NUL bytes are: a CSV's header,
    delimiters, line ends and addresses are ASCII, whose characters have a NUL byte beside them
    in UTF-16 (three in UTF-32), on the side of the byte order. None for anything else."""
    size = len(sample) - len(sample) % 4
    units = size // 4
    if units < 2 or b"\x00" not in sample[:size]:
        return None
    nuls = [sample[lane:size:4].count(0) for lane in range(4)]  # per byte of each 4-byte unit
    rare = units // 100  # characters that put a NUL on the other side (U+0100, U+0200...)
    if nuls[2] == nuls[3] == units and nuls[0] <= rare:
        return "utf-32-le"
    if nuls[0] == nuls[1] == units and nuls[3] <= rare:
        return "utf-32-be"
    if nuls[0] + nuls[2] <= 2 * rare and nuls[1] + nuls[3] >= units:
        return "utf-16-le"
    if nuls[1] + nuls[3] <= 2 * rare and nuls[0] + nuls[2] >= units:
        return "utf-16-be"
    return None


def sniff(sample: bytes, *, encoding: str | None = None, delimiter: str | None = None) -> CsvFormat:
    """The format of a file from its first bytes; ``encoding``/``delimiter`` override the guess."""
    if sample.startswith(b"PK\x03\x04"):
        raise CsvProblem("this is a ZIP file (an Excel .xlsx workbook?), not CSV: save it as CSV first")
    # UTF-16 and UTF-32 text holds NUL bytes: a BOM says which (UTF-32's first: FF FE 00 00
    # starts like UTF-16's FF FE), or where the NULs are, or --encoding.
    found = _bom_encoding(sample) or (_bare_wide(sample) if encoding is None else None)
    wide = (
        (found or encoding or "").lower().replace("_", "-").startswith(("utf-16", "utf-32", "utf16", "utf32"))
    )
    if b"\x00" in sample and not wide:
        raise CsvProblem("this file holds binary data (NUL bytes), not CSV text")
    if encoding is None:
        encoding = found or _guess_encoding(sample)
    else:
        encoding = _codec(encoding)
        if encoding == "utf-8" and sample.startswith(codecs.BOM_UTF8):
            encoding = "utf-8-sig"
    try:
        text = codecs.getincrementaldecoder(encoding)(errors="replace").decode(sample, final=False)
    except UnicodeError as exc:  # utf-16/utf-32 without a BOM: the byte order is unknown
        order = f"; without a BOM, name the byte order: --encoding {encoding}-le or {encoding}-be"
        raise CsvProblem(
            f"the file does not read as {encoding} ({exc})" + (order if encoding in _WITH_BOM else "")
        ) from None
    first, _, rest = text.partition("\n")
    if delimiter is None:
        delimiter = _guess_delimiter(first)
    elif len(delimiter) != 1 or delimiter in '"\r\n':
        raise CsvProblem("the delimiter must be one character other than a quote or a line break")
    if "\n" in text:
        terminator = "\r\n" if first.endswith("\r") else "\n"
    else:
        terminator = "\r" if "\r" in text else "\r\n"
    second = rest.partition("\n")[0]
    quote_all = _all_quoted(first.rstrip("\r"), delimiter) and (
        not second.strip() or _all_quoted(second.rstrip("\r"), delimiter)
    )
    return CsvFormat(encoding, delimiter, terminator, quote_all)


def _guess_encoding(sample: bytes) -> str:
    try:
        codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        pass
    else:
        return "utf-8"
    try:
        sample.decode("cp1252")
    except UnicodeDecodeError:
        return "latin-1"
    return "cp1252"


def _outside_quotes(line: str) -> str:
    out, quoted = [], False
    for char in line:
        if char == '"':
            quoted = not quoted
        elif not quoted:
            out.append(char)
    return "".join(out)


def _guess_delimiter(header: str) -> str:
    bare = _outside_quotes(header)
    counts = {d: bare.count(d) for d in _DELIMITERS}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _all_quoted(line: str, delimiter: str) -> bool:
    if not line.startswith('"') or not line.endswith('"'):
        return False
    fields = next(csv.reader([line], delimiter=delimiter, quotechar='"'), [])
    separators = f'"{delimiter}"'
    return len(fields) >= 1 and line.count(separators) >= len(fields) - 1


class _Counting(io.RawIOBase):
    """A raw stream that hashes and counts what passes through it."""

    def __init__(self, inner: IO[bytes], *, writing: bool = False, name: str | None = None) -> None:
        self._inner = inner
        self._writing = writing
        self._name = name
        self.digest = hashlib.sha256()
        self.count = 0

    def readable(self) -> bool:
        return not self._writing

    def writable(self) -> bool:
        return self._writing

    def readinto(self, buffer: Any) -> int:
        try:
            data = self._inner.read(len(buffer))
        except OSError as exc:
            if exc.filename is None and self._name is not None:
                # A read that fails (EIO) names the file, as a failed open does.
                raise OSError(exc.errno, exc.strerror, self._name) from None
            raise
        if not data:
            return 0
        size = len(data)
        buffer[:size] = data
        self.digest.update(data)
        self.count += size
        return size

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        try:
            self._inner.write(view)
        except BrokenPipeError:
            raise
        except OSError as exc:
            if self._inner is not sys.stdout.buffer:
                raise
            raise StdoutFailed(exc.errno, exc.strerror) from exc
        self.digest.update(view)
        self.count += len(view)
        return len(view)


# Encodings in which each of a CSV's line breaks, quotes and delimiters is one byte of its own
# (never part of another character), and which need no state from one block to the next.
_BLOCK_CODECS = {
    "utf-8": "utf-8",
    "utf-8-sig": "utf-8",
    "cp1252": "cp1252",
    "iso8859-1": "iso8859-1",
    "ascii": "ascii",
}


# Encodings whose files start with a BOM giving their byte order: the codec to write the rest
# in after it (little-endian, as Python's own codecs write them on this platform's CPUs).
_WITH_BOM = {
    "utf-16": ("utf-16-le", codecs.BOM_UTF16_LE),
    "utf-32": ("utf-32-le", codecs.BOM_UTF32_LE),
}


def block_codec(encoding: str) -> str | None:
    """The codec for a block of a file in ``encoding`` (past its BOM), or None where a file in
    that encoding cannot be cut into blocks of bytes."""
    try:
        return _BLOCK_CODECS.get(codecs.lookup(encoding).name)
    except LookupError:
        return None


def _cut(buf: bytes, window: int) -> int | None:
    """The end of the last line in ``buf[:window]`` with an even count of quotes before it."""
    end = buf.rfind(b"\n", 0, window)
    if end < 0:
        return None
    quotes = buf.count(b'"', 0, end)
    while quotes % 2:
        previous = buf.rfind(b"\n", 0, end)
        if previous < 0:
            return None
        quotes -= buf.count(b'"', previous, end)
        end = previous
    return end + 1


def _header_span(sample: bytes, fmt: CsvFormat) -> tuple[list[str], int, int] | None:
    """The header row parsed from the sample, the bytes it spans and its count of lines; None
    where the sample's complete lines do not hold it or it is not strictly well-formed CSV
    (the csv reader then reads it, as for any file)."""
    complete = sample[: sample.rfind(b"\n") + 1]
    try:
        text = complete.decode(fmt.encoding)
    except UnicodeDecodeError:
        return None
    reader = fmt.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error:
        return None
    if header is None:
        return None
    lines = reader.line_num
    span = 0
    for _ in range(lines):
        cr, lf = complete.find(b"\r", span), complete.find(b"\n", span)
        # A line ends at LF, CR LF or a lone CR, as the csv reader's lines do.
        span = (cr + 2 if cr + 1 == lf else cr + 1) if 0 <= cr < lf else lf + 1
    return header, span, lines


_LINE_BREAK = re.compile("\r\n|\r|\n")  # where the csv reader's lines end


def _regular_start(raw: IO[bytes]) -> int | None:
    """Where the run starts reading ``raw`` when it is a regular file (so it can be read again
    at that offset); None for a pipe, a terminal or a socket."""
    try:
        fd = raw.fileno()
        return os.lseek(fd, 0, os.SEEK_CUR) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    except (OSError, ValueError, io.UnsupportedOperation):
        return None


def _undecodable_line(
    fd: int, span: tuple[int, int], sha256: str, encoding: str, chunk_bytes: int = 1 << 20
) -> int | None:
    """The line (from 1) of the first bytes that ``encoding`` cannot decode in the regular file
    open as ``fd``: its bytes ``span`` (start offset, size: what the run has read) read again
    with pread, so the run's own position is left as it is and a path replaced meanwhile is not
    followed. None where they cannot be read again, decode whole, or are not the bytes the run
    read (``sha256``: the file changed in place since)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    digest = hashlib.sha256()
    breaks, after_cr, line = 0, False, None
    offset, end = span[0], span[0] + span[1]
    try:
        while offset < end and (chunk := os.pread(fd, min(chunk_bytes, end - offset), offset)):
            offset += len(chunk)
            digest.update(chunk)
            if line is not None:
                continue  # found: the rest only for the checksum
            state = decoder.getstate()
            try:
                text, bad = decoder.decode(chunk), False
            except UnicodeDecodeError:
                text, bad = _decodable_prefix(encoding, state, chunk), True
            breaks += len(_LINE_BREAK.findall(text)) - (after_cr and text.startswith("\n"))
            after_cr = text.endswith("\r") or (after_cr and not text)
            if bad:
                line = breaks + 1
        if line is None:
            decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        line = breaks + 1  # an incomplete sequence at the very end
    except (OSError, UnicodeError):  # e.g. a UTF-16 file that lost its BOM since
        return None
    return line if offset == end and digest.hexdigest() == sha256 else None


def _decodable_prefix(encoding: str, state: tuple[bytes, int], chunk: bytes) -> str:
    """The text of the longest start of ``chunk`` that decodes after ``state``. Found by bisection
    rather than from the error's position, which some decoders give relative to bytes they held
    back or dropped (a BOM, half of a two-byte character)."""

    def decoded(size: int) -> str | None:
        decoder = codecs.getincrementaldecoder(encoding)()
        decoder.setstate(state)
        try:
            return decoder.decode(chunk[:size])
        except UnicodeDecodeError:
            return None

    good, bad, text = 0, len(chunk), ""  # chunk[:good] decodes (as text); chunk[:bad] does not
    while bad - good > 1:
        middle = (good + bad) // 2
        got = decoded(middle)
        if got is None:
            bad = middle
        else:
            good, text = middle, got
    return text


class _Chain(io.RawIOBase):
    """Bytes already read, then the rest of a stream."""

    def __init__(self, first: bytes, rest: IO[bytes]) -> None:
        self._first = memoryview(first)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._first:
            size = min(len(buffer), len(self._first))
            buffer[:size] = self._first[:size]
            self._first = self._first[size:]
            return size
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class CsvInput:
    """A CSV file read row by row, with its header, format, byte count and SHA-256."""

    def __init__(self, path: str, *, encoding: str | None = None, delimiter: str | None = None) -> None:
        self.name = path
        if path == "-":
            raw: IO[bytes] = sys.stdin.buffer
            self.size: int | None = None
        else:
            try:
                raw = Path(path).open("rb")  # noqa: SIM115 - closed in close()
                self.size = os.fstat(raw.fileno()).st_size
            except FileNotFoundError:
                raise CsvProblem(f"{path}: no such file") from None
            except IsADirectoryError:
                raise CsvProblem(f"{path} is a directory") from None
            except PermissionError:
                raise CsvProblem(f"{path}: permission denied") from None
        self._raw = raw
        self._start = _regular_start(raw)
        self._counting = _Counting(raw, name="standard input" if path == "-" else path)
        self._buffered = io.BufferedReader(self._counting, buffer_size=_SAMPLE_BYTES)
        sample = self._buffered.peek(_SAMPLE_BYTES)[:_SAMPLE_BYTES]
        self.format = sniff(sample, encoding=encoding, delimiter=delimiter)
        self._line = 0  # lines of the file before the next record
        self._reader: Any = None
        self._carry = b""  # bytes read from the file and not yet handed out
        self._eof = False
        # Files in an encoding where a line break is the byte 0x0A are read in blocks of bytes
        # (see blocks()); the header is then parsed from the sample and the rest read raw.
        self.block_codec = block_codec(self.format.encoding)
        spanned = _header_span(sample, self.format) if self.block_codec else None
        if spanned is not None:
            self.header: list[str] = spanned[0]
            self._buffered.read(spanned[1])
            self._line = spanned[2]
            return
        self.block_codec = None
        self._open_text(self.format.encoding, b"")
        header = self._next()
        if header is None:
            raise CsvProblem(f"{path} is empty: a header row is needed")
        self.header = header[1]

    def _open_text(self, encoding: str, pending: bytes) -> None:
        """Read records from ``pending``, then from the rest of the file, with the csv reader."""
        source = io.BufferedReader(_Chain(pending, self._buffered)) if pending else self._buffered
        self._text = io.TextIOWrapper(source, encoding=encoding, newline="")
        self._reader = self.format.reader(self._text)

    @property
    def line(self) -> int:
        """Lines of the file read as records so far (the header's, before any row)."""
        return self._line

    @property
    def bytes_read(self) -> int:
        """Bytes consumed from the file so far (read-ahead included)."""
        return self._counting.count

    @property
    def sha256(self) -> str:
        """SHA-256 of the bytes read so far (of the whole file once it is read to the end)."""
        return self._counting.digest.hexdigest()

    def _next(self) -> tuple[int, list[str]] | None:
        start = self._line + 1
        try:
            row = next(self._reader)
        except StopIteration:
            return None
        except csv.Error as exc:
            # csv's messages describe the problem (field limit, NUL, quoting), never the data.
            raise CsvProblem(f"{self.name}: line {start}: {exc}") from None
        except UnicodeDecodeError:
            raise self._undecodable(start) from None
        self._line = start - 1 + self._reader.line_num
        return start, row

    def rows(self) -> Iterator[tuple[int, list[str]]]:
        """``(line, fields)`` of every record after the header (or after the blocks handed out);
        ``line`` is where it starts."""
        if self._reader is None:
            self.resume(b"", self._line)
        reader = self._reader
        line = self._line
        base = line - reader.line_num  # the reader has read the header's lines, or none
        try:
            for row in reader:
                start, line = line + 1, base + reader.line_num
                yield start, row
        except csv.Error as exc:
            raise CsvProblem(f"{self.name}: line {line + 1}: {exc}") from None
        except UnicodeDecodeError:
            raise self._undecodable(line + 1) from None
        finally:
            self._line = line

    def _undecodable(self, near: int) -> CsvProblem:
        """The error for bytes the file's encoding cannot decode, at their line: read again from
        the start for a regular file (the reader decodes ahead of the records it returns), else
        (a pipe) the line of the next record (they are at or after it)."""
        line = None
        if self._start is not None:
            span = (self._start, self._counting.count)
            line = _undecodable_line(self._raw.fileno(), span, self.sha256, self.format.encoding)
        where = f"line {line}" if line is not None else f"near line {near}"
        return CsvProblem(f"{self.name}: {where}: not valid {self.format.encoding}")

    def blocks(self, size: int) -> Iterator[bytes]:
        """The records after the header as blocks of about ``size`` bytes, each cut after a line
        break with an even count of quote characters before it (so outside quotes, in any file
        whose quotes are all opening, closing or doubled ones; the parser of each block checks
        that its end is a record's end).

        Stops early where no such cut is found within 16 blocks' size, or at the end of an odd
        count of quotes: :meth:`resume` with the bytes of every block not yet converted then
        reads the rest as records. Only for files with a :attr:`block_codec`.
        """
        assert self.block_codec is not None
        assert self._reader is None
        window = size
        while True:
            if len(self._carry) < window and not self._eof:
                more = self._buffered.read(window - len(self._carry))
                self._eof = len(more) < window - len(self._carry)
                self._carry += more
            buf = self._carry
            if not buf:
                return
            cut = _cut(buf, window)
            if cut is None and self._eof and len(buf) <= window and buf.count(b'"') % 2 == 0:
                cut = len(buf)
            if cut is None:
                if self._eof or window >= 16 * size:
                    return
                window *= 2
                continue
            window = size
            self._carry = buf[cut:]
            yield buf[:cut]

    def resume(self, pending: bytes, line: int) -> None:
        """Go on record by record from ``pending`` (bytes of blocks handed out and not
        converted, in order), whose first record starts on line ``line + 1``."""
        assert self.block_codec is not None
        self._open_text(self.block_codec, pending + self._carry)
        self._carry = b""
        self._line = line

    def drain(self) -> None:
        """Read the rest of the file (so the checksum covers all of it)."""
        while self._buffered.read(1 << 20):
            pass

    def close(self) -> None:
        """Close the file (not stdin)."""
        if self._raw is not sys.stdin.buffer:
            self._raw.close()


class AtomicOutput:
    """An output file that appears, complete, only on :meth:`commit`.

    ``-`` writes to stdout (nothing can be atomic there). Files are created with mode 0600: a
    detokenized file holds clear contact data.
    """

    def __init__(self, path: str, fmt: CsvFormat) -> None:
        self.name = path
        self._target: Path | None = None if path == "-" else Path(path)
        self._named_tmp: Path | None = None
        self._fd: int | None = None
        if self._target is None:
            sink: IO[bytes] = sys.stdout.buffer
        else:
            if self._target.is_dir():
                raise CsvProblem(f"{path} is a directory; name the output file")
            folder = self._target.parent
            if not folder.is_dir():
                raise CsvProblem(f"{folder} does not exist")
            self._fd = self._open_hidden(folder)
            sink = os.fdopen(self._fd, "wb", closefd=False)
        self._sink = sink
        self._counting = _Counting(sink, writing=True)
        self._buffered = io.BufferedWriter(self._counting, buffer_size=1 << 16)
        # The output never writes a BOM of its own unless the input had one (utf-8-sig does), or
        # its encoding needs one: UTF-16 and UTF-32 say their byte order in it. TextIOWrapper
        # writes theirs only to a stream it can seek, and ours cannot: it is written here.
        encoding, bom = _WITH_BOM.get(codecs.lookup(fmt.encoding).name, (fmt.encoding, b""))
        self._buffered.write(bom)
        self.text = io.TextIOWrapper(
            self._buffered, encoding=encoding, newline="", errors="strict", write_through=False
        )
        self.writer = fmt.writer(self.text)
        self.in_place = False  # the whole output is where it was asked for (see commit)

    def _open_hidden(self, folder: Path) -> int:
        flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
        tmpfile = getattr(os, "O_TMPFILE", 0)
        if tmpfile:
            with contextlib.suppress(OSError):
                return os.open(folder, flags | tmpfile, 0o600)
        assert self._target is not None
        self._named_tmp = folder / f".{self._target.name}.sendvault-{secrets.token_hex(6)}.tmp"
        try:
            return os.open(self._named_tmp, flags | os.O_CREAT | os.O_EXCL, 0o600)
        except PermissionError:
            raise CsvProblem(f"{folder}: permission denied") from None
        except OSError as exc:
            # Not the hidden file's name: the user never named it (procfs, say, makes no files).
            raise CsvProblem(f"{self.name}: cannot create a file in {folder} ({exc.strerror})") from None

    def write_bytes(self, data: bytes) -> None:
        """Write records already encoded in the output's encoding, after those written so far."""
        self.text.flush()
        self._buffered.write(data)

    @property
    def bytes_written(self) -> int:
        """Bytes written so far."""
        return self._counting.count

    @property
    def sha256(self) -> str:
        """SHA-256 of what was written (complete after :meth:`commit`)."""
        return self._counting.digest.hexdigest()

    def commit(self) -> None:
        """Flush, sync and move the file into place."""
        try:
            self.text.flush()
            self._buffered.flush()
        except UnicodeEncodeError:
            raise CsvProblem(
                f"a value cannot be written in this file's encoding ({self.name}); "
                "give --output-encoding utf-8"
            ) from None
        if self._target is None:
            self._sink.flush()
            self.in_place = True
            return
        assert self._fd is not None
        os.fsync(self._fd)
        if self._named_tmp is None:
            self._named_tmp = self._link_anonymous(self._fd)
        try:
            check_replaceable(self._target)  # what appeared there since the start is left alone
        except OSError as exc:
            raise CsvProblem(f"{self.name}: {exc.strerror}") from None
        self._named_tmp.replace(self._target)
        self._named_tmp = None
        self.in_place = True  # from here on the run is done, whatever interrupts it
        self._close_fd()
        _sync_dir(self._target.parent)

    def _link_anonymous(self, fd: int) -> Path:
        """Give the anonymous file a (hidden) name beside the target."""
        assert self._target is not None
        staging = self._target.parent / f".{self._target.name}.sendvault-{secrets.token_hex(6)}.tmp"
        try:
            # os.link calls link(2), which does not follow /proc's magic link, unless a directory
            # fd is given: then it is linkat(2) with AT_SYMLINK_FOLLOW, as open(2)'s manual shows.
            proc = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.link(str(fd), staging, src_dir_fd=proc, follow_symlinks=True)
            finally:
                os.close(proc)
        except OSError:
            # No /proc: copy the content out instead.
            out = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                while chunk := os.read(fd, 1 << 20):
                    os.write(out, chunk)
                os.fsync(out)
            finally:
                os.close(out)
        return staging

    def discard(self) -> None:
        """Drop everything written; the target is left as it was."""
        if self._target is None:
            return
        self._close_fd()
        if self._named_tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                self._named_tmp.unlink()
            self._named_tmp = None

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._sink.close()
                os.close(self._fd)
            self._fd = None


def _sync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def open_output(path: str, fmt: CsvFormat, *, encoding: str | None = None) -> AtomicOutput:
    """An atomic output in ``fmt`` (with another ``encoding`` if given)."""
    if encoding is not None:
        fmt = replace(fmt, encoding=_codec(encoding))
    return AtomicOutput(path, fmt)
