"""The `sendvault` command line: thin commands over the packages; no logic of their own.

Exit codes: 0 done, 1 failed (or, for checks, something needs attention), 2 usage error (a bad
option, argument or setting). Every error is one ``error:`` line on stderr, usually followed by a
``hint:`` line saying what to run; never a traceback for something the user typed.

The click application is ``_app``; `scan ssh` of one server, with options it knows, takes a
short path first (``_quick``): nothing else loads, click included.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without the typing import
if TYPE_CHECKING:
    import click

__all__ = ["cli", "main"]


def main() -> None:
    """Console-script entry point."""
    _open_closed_streams()
    _replace_unencodable()
    args = sys.argv[1:]
    try:
        if args[:2] == ["scan", "ssh"]:
            from ._quick import scan_ssh  # noqa: PLC0415

            scan_ssh(args[2:])  # exits, unless the arguments need the whole command line
        from ._app import cli  # noqa: PLC0415
    except KeyboardInterrupt:
        # Ctrl-C while the CLI loads (a tenth of a second or so), before click handles it.
        sys.stderr.write("\ninterrupted\n")
        sys.exit(130)  # _common.EXIT_INTERRUPTED
    cli(prog_name="sendvault")


def _replace_unencodable() -> None:
    """On a standard output that is not UTF-8 (``PYTHONIOENCODING=ascii``, a Latin-1 locale, a
    Windows code page), a character it cannot encode (a server's banner, a file's name) is
    written as ``?``: a UnicodeEncodeError traceback exited 1, which a scan's caller reads as
    "affected". A UTF-8 output is left as Python sets it up."""
    stdout = sys.stdout
    encoding = (getattr(stdout, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    if encoding != "utf8" and hasattr(stdout, "reconfigure"):
        stdout.reconfigure(errors="replace")


def _open_closed_streams() -> None:
    """A process started with its stdin, stdout or stderr closed (cron, a daemon: ``2>&-``,
    ``<&-``) has None there: every write raised, and the exit code said so whatever the outcome;
    reading ``-`` was a traceback. They use /dev/null instead (standard input reads as empty),
    on their own descriptors, so that no file or socket opened later takes
    descriptor 1 or 2 and gets what was meant for them."""
    if sys.stdout is not None and sys.stderr is not None and sys.stdin is not None:
        return
    import os  # noqa: PLC0415 - loaded by the interpreter already

    for name, fd, mode, flags in (
        ("stdin", 0, "r", os.O_RDONLY),
        ("stdout", 1, "w", os.O_WRONLY),
        ("stderr", 2, "w", os.O_WRONLY),
    ):
        if getattr(sys, name) is not None:
            continue
        try:
            os.fstat(fd)
        except OSError:  # closed: /dev/null takes the descriptor (standard input reads as empty)
            null = os.open(os.devnull, flags)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)
            setattr(sys, name, open(fd, mode, encoding="utf-8", closefd=False))  # noqa: SIM115
        else:  # a caller's own file or socket holds it: leave it alone
            setattr(sys, name, open(os.devnull, mode, encoding="utf-8"))  # noqa: SIM115, PTH123 - no pathlib here


def __getattr__(name: str) -> click.Group:
    # `from sendvault.cli import cli` (tests, the reference generator) loads click only then.
    if name == "cli":
        from ._app import cli  # noqa: PLC0415

        return cli
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
