"""Rejects: one line per refused cell (line, column, reason), never the value."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable
from pathlib import Path

from ._csvio import AtomicOutput, CsvFormat

__all__ = ["RejectsFile", "RejectsStream"]

_HEADER = ["line", "column", "reason"]


class RejectsFile:
    """A rejects CSV written atomically; present after the run only if something was rejected."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._out: AtomicOutput | None = None

    def add(self, line: int, column: str, reason: str) -> None:
        """Record one rejected cell."""
        if self._out is None:
            self._out = AtomicOutput(str(self.path), CsvFormat("utf-8", ",", "\n", quote_all=False))
            self._out.writer.writerow(_HEADER)
        self._out.writer.writerow([line, column, reason])
        self.count += 1

    def finish(self) -> None:
        """Move the file into place, or, with nothing rejected, remove a stale one of an earlier run
        (only a rejects file: whatever else is at that path is left alone)."""
        if self._out is not None:
            self._out.commit()
        elif _is_rejects_file(self.path):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()

    def discard(self) -> None:
        """Drop what was written."""
        if self._out is not None:
            self._out.discard()


def _is_rejects_file(path: Path) -> bool:
    try:
        if path.is_symlink() or not path.is_file():
            return False
        with path.open("rb") as fh:
            first = fh.readline(64)
    except OSError:
        return False
    return first.rstrip(b"\r\n") == ",".join(_HEADER).encode()


class RejectsStream:
    """Rejects written as lines to a callback (stderr when the output is stdout)."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self.count = 0
        self._writer = csv.writer(self, lineterminator="")

    def write(self, text: str) -> int:
        """csv's sink: pass each formatted line on."""
        self._emit(f"rejected: {text}")
        return len(text)

    def add(self, line: int, column: str, reason: str) -> None:
        """Record one rejected cell."""
        self._writer.writerow([line, column, reason])
        self.count += 1
