"""Retention on both sides: delete exchange files older than the period, and warn before the
platform deletes an export nobody has pulled yet.

Platforms delete exchange files after a short period (10 days in one notice); our own copies
should not outlive theirs. Time comes from an injected ``now`` so tests (and dry runs at a chosen
date) are exact. A file's age is measured from its modification time.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import SendvaultError
from ._asyncssh import asyncssh
from ._state import TransferState
from .sftp import Remote, RemoteFile, list_files

__all__ = [
    "DAY",
    "Deleted",
    "RemoteStatus",
    "SweepRefused",
    "check_remote_sweep_folder",
    "check_sweep_folder",
    "remote_status",
    "sweep_local",
    "sweep_remote",
]

DAY = 86_400.0
Record = Callable[[dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Deleted:
    """A file the sweep deleted (or would delete, in a dry run)."""

    where: str
    path: str
    size: int
    age_days: float
    sha256: str | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (also the audit record's meta)."""
        return {
            "where": self.where, "path": self.path, "size": self.size,
            "age_days": round(self.age_days, 2), "sha256": self.sha256,
        }  # fmt: skip


class SweepRefused(SendvaultError):
    """A local sweep folder that could lead the sweep outside itself: nothing was deleted."""


def _sha256_at(dirfd: int, name: str) -> str | None:
    digest = hashlib.sha256()
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dirfd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def check_sweep_folder(folder: Path) -> None:
    """:class:`SweepRefused` unless ``folder`` is a plain folder that cannot lead the sweep elsewhere.

    A folder given as a symbolic link (``inbox -> /``), through ``..``, or the root itself is
    refused outright: the sweep deletes recursively, and it only ever deletes under what was named.
    """
    if ".." in folder.parts:
        raise SweepRefused(f"{folder}: a sweep folder may not go through '..'; name the folder itself")
    if folder.is_symlink():
        raise SweepRefused(
            f"{folder} is a symbolic link (to {folder.readlink()}); a sweep folder must be the real "
            "folder, not a link to it"
        )
    if not folder.is_dir():
        raise SweepRefused(f"{folder} is not a folder")
    if folder.resolve() == Path(folder.resolve().anchor):
        raise SweepRefused(f"{folder} is the root of the file system; refusing to sweep it")


def sweep_local(
    folders: Iterable[Path], *, days: float, now: float, dry_run: bool, record: Record | None = None
) -> list[Deleted]:
    """Delete files older than ``days`` under ``folders`` (recursively; symlinks are not followed).

    Every folder is checked first (:func:`check_sweep_folder`; nothing is deleted if one is
    refused). The walk holds each folder open and deletes relative to it (``dir_fd``), so a
    subfolder swapped for a symbolic link during the sweep cannot lead it elsewhere. Each deletion
    is handed to ``record`` (path, size, age and SHA-256 of what was deleted).
    """
    folders = list(folders)
    for folder in folders:
        check_sweep_folder(folder)
    cutoff = now - days * DAY
    out: list[Deleted] = []
    for folder in folders:
        for root, _, names, dirfd in os.fwalk(folder, follow_symlinks=False):
            for name in sorted(names):
                try:
                    info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(info.st_mode) or info.st_mtime > cutoff:
                    continue
                path = Path(root) / name
                item = Deleted(
                    "local", str(path), info.st_size, (now - info.st_mtime) / DAY, _sha256_at(dirfd, name)
                )
                if not dry_run:
                    try:
                        os.unlink(name, dir_fd=dirfd)
                    except FileNotFoundError:
                        continue
                    if record is not None:
                        record(item.as_dict())
                out.append(item)
    return out


def check_remote_sweep_folder(remote: Remote) -> None:
    """:class:`SweepRefused` for the account's root (``sftp://user@host`` without a folder would
    sweep every folder of the account, recursively) or a path through ``..``."""
    parts = [p for p in remote.path.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise SweepRefused(
            f"{remote.display}: a remote sweep needs the folder itself (not the account's root, "
            "nor a path through '..'), e.g. sftp://user@host/Export"
        )


async def sweep_remote(
    sftp: asyncssh.SFTPClient,
    remote: Remote,
    state: TransferState,
    *,
    days: float,
    now: float,
    dry_run: bool,
    record: Record | None = None,
) -> list[Deleted]:
    """Delete files older than ``days`` in the remote folder (recursively), after
    :func:`check_remote_sweep_folder`."""
    check_remote_sweep_folder(remote)
    cutoff = now - days * DAY
    out: list[Deleted] = []
    for entry in await list_files(sftp, remote.path, recursive=True):
        if entry.mtime > cutoff:
            continue
        item = Deleted(remote.display, entry.path, entry.size, (now - entry.mtime) / DAY, None)
        if not dry_run:
            try:
                await sftp.remove(entry.path)
            except asyncssh.SFTPNoSuchFile:
                continue
            state.forget_pulled(remote.server, entry.path)
            if record is not None:
                record(item.as_dict())
        out.append(item)
    return out


@dataclass(frozen=True, slots=True)
class FileStatus:
    """One remote file: its age, when the platform deletes it, whether it was pulled."""

    path: str
    size: int
    age_days: float
    deleted_in_days: float
    pulled: bool
    warning: str | None

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "path": self.path, "size": self.size, "age_days": round(self.age_days, 2),
            "deleted_in_days": round(self.deleted_in_days, 2), "pulled": self.pulled, "warning": self.warning,
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """The files of a remote folder and the warnings about them."""

    remote: str
    files: list[FileStatus]

    @property
    def warnings(self) -> list[FileStatus]:
        """Files that need someone's attention."""
        return [f for f in self.files if f.warning]


def classify(
    files: Iterable[RemoteFile],
    pulled: Callable[[RemoteFile], bool],
    *,
    now: float,
    retention_days: float,
    warn_days: float,
) -> list[FileStatus]:
    """Age and deadline of each file; a warning for those not pulled within ``warn_days`` of it."""
    out = []
    for entry in files:
        age = (now - entry.mtime) / DAY
        left = retention_days - age
        done = pulled(entry)
        warning = None
        if not done and left <= 0:
            warning = "past the platform's retention period and never pulled: it may be gone at any moment"
        elif not done and left <= warn_days:
            warning = f"not pulled, and the platform deletes it in {left:.1f} day(s)"
        out.append(FileStatus(entry.path, entry.size, age, left, done, warning))
    return out


async def remote_status(
    sftp: asyncssh.SFTPClient,
    remote: Remote,
    state: TransferState,
    *,
    now: float,
    retention_days: float,
    warn_days: float,
) -> RemoteStatus:
    """Every file of the remote folder with its age and deadline, warnings for unpulled ones."""
    files = await list_files(sftp, remote.path, recursive=False)

    def pulled(entry: RemoteFile) -> bool:
        seen = state.pulled(remote.server, entry.path)
        return seen is not None and seen.get("size") == entry.size and seen.get("mtime") == entry.mtime

    return RemoteStatus(
        remote.display, classify(files, pulled, now=now, retention_days=retention_days, warn_days=warn_days)
    )
