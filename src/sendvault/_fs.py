"""Atomic file writes: a temporary file in the same folder, renamed over the target."""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

__all__ = ["not_a_regular_file", "write_atomic"]


def not_a_regular_file(path: Path) -> bool:
    """Whether ``path`` exists as something a rename must not replace: a device (/dev/null,
    /dev/full, run as root), a FIFO, a socket, a directory, or a symbolic link (the rename would
    replace the link, not write where it points)."""
    try:
        return not stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write ``data`` so the file is whole or absent, never half-written, and never exists with
    other permissions than ``mode``. Only a regular file is replaced: OSError (EEXIST) for a
    path that is a device, a FIFO, a directory or a link."""
    if not_a_regular_file(path):
        raise OSError(
            errno.EEXIST, "it exists and is not a regular file (a device, FIFO, link or folder)", str(path)
        )
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
