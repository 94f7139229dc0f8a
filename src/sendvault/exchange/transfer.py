"""Push, pull, sweep and status as the CLI and the scheduler run them, each step audited.

``record(event, meta, counts)`` receives one audit event per transfer and per deletion (the
exchange package does not write the log itself: the CLI and ``serve`` hand it their own).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._fs import not_a_regular_file
from ._asyncssh import asyncssh
from ._state import TransferState
from .retention import (
    Deleted,
    RemoteStatus,
    check_remote_sweep_folder,
    remote_status,
    sweep_local,
    sweep_remote,
)
from .sftp import Remote, RemoteFile, SftpError, TransferResult, connect, list_files, pull, push

__all__ = ["Exchange"]

Record = Callable[[str, dict[str, Any], dict[str, Any] | None], None]


def _no_record(event: str, meta: dict[str, Any], counts: dict[str, Any] | None) -> None:
    return None


@dataclass
class Exchange:
    """The exchange operations with their state, audit hook and clock."""

    state: TransferState
    record: Record = _no_record
    clock: Callable[[], float] = time.time
    retention_days: float = 10.0
    warn_days: float = 2.0
    pulled_now: list[TransferResult] = field(default_factory=list)

    async def push(
        self, remote: Remote, files: Sequence[Path], *, verify: bool = True
    ) -> list[TransferResult]:
        """Upload ``files`` into the remote folder (or to the remote file name, for one file)."""
        results = []
        async with connect(remote) as sftp:
            folder_target = await _is_dir(sftp, remote.path) or remote.path.endswith("/") or len(files) > 1
            if len(files) > 1 and not await _is_dir(sftp, remote.path):
                raise SftpError(f"{remote.display} is not a folder; several files need one")
            for local in files:
                target = posixpath.join(remote.path, local.name) if folder_target else remote.path
                meta = {"direction": "push", "remote": remote.display, "source": str(local), "target": target}
                try:
                    result = await push(
                        sftp, remote, local, target, self.state, verify=verify, clock=self.clock
                    )
                except SftpError as exc:
                    self.record("exchange:transfer", {**meta, "status": "failed", "error": str(exc)}, None)
                    raise
                self.record(
                    "exchange:transfer",
                    {**meta, **_result_meta(result), "status": "ok"},
                    {"bytes": result.size},
                )
                results.append(result)
        return results

    async def pull(self, remote: Remote, local: Path, *, again: bool = False) -> list[TransferResult]:
        """Download a remote file, or every file of a remote folder not pulled yet, into ``local``."""
        results = []
        async with connect(remote) as sftp:
            if await _is_dir(sftp, remote.path):
                if not local.is_dir():
                    raise SftpError(f"{local} is not a local folder (pulling the folder {remote.display})")
                wanted = [
                    f for f in await list_files(sftp, remote.path) if again or not self._pulled(remote, f)
                ]
                targets = [(f, local / posixpath.basename(f.path)) for f in wanted]
            else:
                try:
                    attrs = await sftp.stat(remote.path)
                except asyncssh.SFTPNoSuchFile:
                    raise SftpError(f"{remote.display}: no such file or folder") from None
                entry = RemoteFile(remote.path, int(attrs.size or 0), float(attrs.mtime or 0))
                target = local / posixpath.basename(remote.path) if local.is_dir() else local
                if not target.parent.is_dir():
                    raise SftpError(f"{target.parent} is not a local folder")
                if not local.is_dir() and not_a_regular_file(target):
                    raise SftpError(
                        f"{target} exists and is not a regular file (a device, FIFO, link or folder)"
                    )
                targets = [(entry, target)]
            for entry, named in targets:
                target = self._free_target(remote, entry, named) if local.is_dir() else named
                meta = {
                    "direction": "pull",
                    "remote": remote.display,
                    "source": entry.path,
                    "target": str(target),
                }
                try:
                    result = await pull(sftp, remote, entry, target, self.state, clock=self.clock)
                except SftpError as exc:
                    self.record("exchange:transfer", {**meta, "status": "failed", "error": str(exc)}, None)
                    raise
                self.state.mark_pulled(
                    remote.server,
                    entry.path,
                    {
                        "size": entry.size,
                        "mtime": entry.mtime,
                        "sha256": result.sha256,
                        "local": str(target),
                        "at": self.clock(),
                    },
                )
                self.record(
                    "exchange:transfer",
                    {**meta, **_result_meta(result), "status": "ok"},
                    {"bytes": result.size},
                )
                results.append(result)
        return results

    def _free_target(self, remote: Remote, entry: RemoteFile, target: Path) -> Path:
        """Where a file pulled into a folder goes: its name, unless that would overwrite a file
        that is not this remote file's own earlier copy (unchanged since it was pulled); then the
        first free ``STEM.N.SUFFIX``. A pull never destroys a local file it did not write."""
        seen = self.state.pulled(remote.server, entry.path)
        if seen is not None and isinstance(seen.get("local"), str):
            mine = Path(seen["local"])
            if (
                mine.parent == target.parent
                and mine.is_file()
                and not mine.is_symlink()
                and _sha256(mine) == seen.get("sha256")
            ):
                return mine  # a newer version of a file we pulled here replaces our own copy
        if not os.path.lexists(target):
            return target
        for n in range(1, 1000):
            candidate = target.with_name(f"{target.stem}.{n}{target.suffix}")
            if not os.path.lexists(candidate):
                return candidate
        raise SftpError(f"{target}: no free name beside it (tried {target.stem}.1..999{target.suffix})")

    def _pulled(self, remote: Remote, entry: RemoteFile) -> bool:
        seen = self.state.pulled(remote.server, entry.path)
        return seen is not None and seen.get("size") == entry.size and seen.get("mtime") == entry.mtime

    def sweep_local(
        self, folders: Sequence[Path], *, days: float | None = None, dry_run: bool = False
    ) -> list[Deleted]:
        """Delete local exchange files older than the retention period."""
        return sweep_local(
            folders, days=self.retention_days if days is None else days, now=self.clock(), dry_run=dry_run,
            record=lambda meta: self.record("exchange:sweep", meta, None),
        )  # fmt: skip

    async def sweep_remote(
        self, remote: Remote, *, days: float | None = None, dry_run: bool = False
    ) -> list[Deleted]:
        """Delete remote exchange files older than the retention period."""
        check_remote_sweep_folder(remote)  # before connecting: refused is refused
        async with connect(remote) as sftp:
            return await sweep_remote(
                sftp, remote, self.state, now=self.clock(),
                days=self.retention_days if days is None else days,
                dry_run=dry_run, record=lambda meta: self.record("exchange:sweep", meta, None),
            )  # fmt: skip

    async def status(self, remote: Remote) -> RemoteStatus:
        """Remote files with their age, deadline and pulled state; warnings for those at risk."""
        async with connect(remote) as sftp:
            if not await _is_dir(sftp, remote.path):
                raise SftpError(f"{remote.display} is not a folder")
            return await remote_status(
                sftp,
                remote,
                self.state,
                now=self.clock(),
                retention_days=self.retention_days,
                warn_days=self.warn_days,
            )


def _sha256(path: Path) -> str | None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()


async def _is_dir(sftp: asyncssh.SFTPClient, path: str) -> bool:
    try:
        attrs = await sftp.stat(path)
    except asyncssh.SFTPNoSuchFile:
        return False
    return stat.S_ISDIR(attrs.permissions or 0)


def _result_meta(result: TransferResult) -> dict[str, Any]:
    return {
        "size": result.size,
        "sha256": result.sha256,
        "resumed_from": result.resumed_from,
        "seconds": result.seconds,
    }
