"""Atomic file writes: a temporary file in the same folder, renamed over the target."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = [
    "check_replaceable",
    "input_problem",
    "not_a_regular_file",
    "output_problem",
    "read_small",
    "write_atomic",
]


def not_a_regular_file(path: Path) -> bool:
    """Whether ``path`` exists as anything but a regular file: a device (/dev/null, /dev/full),
    a FIFO, a socket, a directory, or a symbolic link. OSError when it cannot be told (a parent
    that is a file, a name too long, a loop of links)."""
    try:
        return not stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def input_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file, or None: a device (/dev/zero reads without end), a
    socket or a folder. A FIFO is read (``<(...)``); a missing file is the caller's to report."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "is a device, not a file"
    if stat.S_ISSOCK(mode):
        return "is a socket, not a file"
    if stat.S_ISDIR(mode):
        return "is a folder, not a file"
    return None


def read_small(path: Path, limit: int = 1 << 20) -> bytes:
    """The bytes of a small file (a key, a head record); OSError when it is not a file to read or
    holds more than ``limit`` bytes."""
    why = input_problem(path)
    if why is not None:
        raise OSError(errno.EINVAL, why, str(path))
    with path.open("rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"is over {limit >> 10} KiB", str(path))
    return data


# A file written whole first exists under a longer hidden name beside it (".NAME.partial",
# ".NAME.sendvault-part", ".NAME.sendvault-<12 hex>.tmp": up to 28 bytes more), and a name
# holds 255 bytes (NAME_MAX): a longer one failed after the work, with a traceback.
_LONGEST_NAME = 200


def output_problem(text: str) -> str | None:
    """Why ``text`` cannot name a file a command writes whole (renamed into place), or None: it
    is empty, ends with ``/`` or ``/.`` (``FILE/`` would overwrite FILE), has a name too long for
    its temporary file, lies under a file or a dangling link, or names a device, FIFO, socket,
    folder or link, which is never replaced."""
    if not text.strip() or text.endswith("/") or text.rpartition("/")[2] in ("", ".", ".."):
        return "is not a file path"
    path = Path(text)
    if len(os.fsencode(path.name)) > _LONGEST_NAME:
        return f"has a name over {_LONGEST_NAME} bytes (the temporary file beside it needs room)"
    try:
        folder = path.parent
        while not os.path.lexists(folder) and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            return "is under something that is not a folder"
        if not_a_regular_file(path):
            return "exists and is not a regular file (a device, FIFO, link or folder): it is never replaced"
    except OSError as exc:  # a name too long, a loop of links
        return f"cannot be checked ({exc.strerror or exc})"
    return None


def check_replaceable(*paths: Path) -> None:
    """OSError (EEXIST) for a path a rename must not replace: a device (run as root, a rename
    over /dev/null replaces the device), a FIFO, a socket or a directory. A symbolic link is
    replaced, the link and not what it points at."""
    for path in paths:
        try:
            mode = os.lstat(path).st_mode
        except FileNotFoundError:
            continue
        if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
            why = "it exists and is not a regular file (a device, FIFO, socket or folder)"
            raise OSError(errno.EEXIST, why, str(path))


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` so the file is whole or absent, never half-written, and never exists with
    other permissions than ``mode``. A device, FIFO, socket or folder at ``path`` is never
    replaced (OSError, ``check_replaceable``)."""
    check_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
