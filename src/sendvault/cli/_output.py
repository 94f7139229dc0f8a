"""Tables that survive a pipe.

On a terminal, a rich table that folds long cells onto more lines instead of cutting them. Piped
(CI logs, ``| grep``, ``> file``), plain aligned columns, one line per row, as wide as the data
needs: nothing is ever cut at 80 columns, and every row stays greppable.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without the typing import (the `scan ssh` short path)
if TYPE_CHECKING:
    from typing import NoReturn

__all__ = ["cell", "print_table", "printable", "stdout_failed"]


def cell(value: object) -> str:
    """A value as table text: ``-`` for nothing, ``k=v`` pairs for a mapping, never ``null``."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict):
        return " ".join(f"{k}={cell(v)}" for k, v in value.items()) or "-"
    if isinstance(value, (list, tuple)):
        return ", ".join(cell(v) for v in value) or "-"
    return str(value)


def printable(text: str) -> str:
    """``text`` with every control or format character but newline written as an escape
    (``\\x1b``): what a server, a file or a targets file sent never drives the terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\n" else c.encode("unicode_escape").decode() for c in text)


def stdout_failed(exc: OSError) -> NoReturn:
    """Standard output cannot be written (a full disk, /dev/full): one error line and exit 2,
    not a traceback (or Python's exit 120 when it flushes at exit, which is sent to /dev/null)."""
    import os  # noqa: PLC0415 - loaded by the interpreter already

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.stderr.write(f"error: cannot write to standard output ({exc.strerror or exc})\n"
                     "hint: send the output to a file or a pipe that takes it\n")  # fmt: skip
    sys.exit(2)


def _one_line(text: str) -> str:
    return " / ".join(part.strip() for part in text.splitlines() if part.strip()) or "-"


def print_table(
    headers: Sequence[str], rows: Sequence[Sequence[object]], *, title: str | None = None
) -> None:
    """Print ``rows`` under ``headers`` on stdout: rich on a terminal, plain columns otherwise."""
    texts = [[printable(cell(v)) for v in row] for row in rows]
    if sys.stdout.isatty():
        from rich.console import Console  # noqa: PLC0415 - rich loads only for a terminal
        from rich.table import Table  # noqa: PLC0415
        from rich.text import Text  # noqa: PLC0415

        table = Table(title=title)
        for header in headers:
            table.add_column(header, overflow="fold")
        for row in texts:
            # Text, never markup: cells carry what servers and clients sent (a banner, a
            # certificate name), and "[/red]" would raise, "[link=...]" would make a link.
            table.add_row(*(Text(v) for v in row))
        Console().print(table)
        return
    lines = [list(headers), *([_one_line(v) for v in row] for row in texts)]
    widths = [max(len(line[i]) for line in lines) for i in range(len(headers))]
    out = sys.stdout
    if title:
        out.write(title + "\n")
    for line in lines:
        padded = [v.ljust(w) for v, w in zip(line[:-1], widths[:-1], strict=True)]
        out.write("  ".join([*padded, line[-1]]).rstrip() + "\n")
