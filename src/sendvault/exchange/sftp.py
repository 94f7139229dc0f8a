"""SFTP transfers with asyncssh: strict host keys, resume, size and checksum checks, atomic names.

A :class:`Remote` is where files go or come from: ``sftp://user@host[:port]/path`` plus how to
authenticate (a key file, or a password from an environment variable, or the user's agent and
default keys) and how to trust the server: a ``known_hosts`` file or a pinned SHA-256
fingerprint. An unknown or changed host key is an error that shows the key the server presented,
never a prompt and never silently accepted.

Uploads go to a hidden temporary name in the target folder (``.NAME.sendvault-part``), are
checked there (size, then SHA-256 read back), and renamed into place, so the platform never picks
up a half-written file. Downloads land in a hidden local part file and are renamed after the same
checks. Both resume: an interrupted transfer continues from the bytes already there when the
source is unchanged (same SHA-256 locally, same size and mtime remotely), and the final checksum
catches anything else, in which case the file is sent again from the start, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import posixpath
import shutil
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlsplit

from .._fs import check_replaceable
from ..config import ExchangeRemote
from ..errors import SendvaultError
from ._asyncssh import asyncssh
from ._state import TransferState

__all__ = [
    "HostKeyError",
    "Remote",
    "RemoteFile",
    "SftpError",
    "TransferResult",
    "connect",
    "parse_remote",
    "remote_from_settings",
    "safe_name",
]

log = logging.getLogger("sendvault.exchange")

_BLOCK = 256 * 1024
_PART = ".sendvault-part"


class SftpError(SendvaultError):
    """An SFTP connection or transfer failed; the message says what and where, never a secret."""


class HostKeyError(SftpError):
    """The server's host key is unknown or changed: the connection was refused."""


@dataclass(frozen=True, slots=True)
class Remote:
    """An SFTP location and how to reach it."""

    host: str
    port: int
    username: str | None
    path: str
    identity_file: str | None = None
    password_env: str | None = None
    known_hosts: str | None = None
    host_key_fingerprint: str | None = None
    connect_timeout: float = 20.0

    @property
    def server(self) -> str:
        """``sftp://user@host[:port]``: the server and account, without a path."""
        user = f"{self.username}@" if self.username else ""
        port = f":{self.port}" if self.port != 22 else ""
        return f"sftp://{user}{self.host}{port}"

    @property
    def display(self) -> str:
        """The URL without credentials (for messages and audit records)."""
        return self.server + self.path

    def at(self, path: str) -> Remote:
        """The same server, another path."""
        return Remote(
            self.host, self.port, self.username, path, self.identity_file, self.password_env,
            self.known_hosts, self.host_key_fingerprint, self.connect_timeout,
        )  # fmt: skip


def parse_remote(url: str, **options: Any) -> Remote:
    """``sftp://[user@]host[:port]/path`` and the connection ``options`` as a :class:`Remote`."""
    parts = urlsplit(url)
    if parts.scheme != "sftp" or not parts.hostname:
        raise SftpError(f"{url!r} is not an sftp://[user@]host[:port]/path URL")
    if parts.password:
        raise SftpError(
            "a password in the URL is refused; give it through an environment variable (--password-env)"
        )
    try:
        port = parts.port or 22
    except ValueError:
        raise SftpError(f"{url!r} has an invalid port") from None
    path = unquote(parts.path) or "/"
    return Remote(parts.hostname, port, unquote(parts.username) if parts.username else None, path, **options)


def remote_from_settings(configured: ExchangeRemote) -> Remote:
    """A remote of the config file's ``[exchange.remotes.NAME]``."""
    return parse_remote(
        configured.url,
        identity_file=configured.identity_file,
        password_env=configured.password_env,
        known_hosts=configured.known_hosts,
        host_key_fingerprint=configured.host_key_fingerprint,
    )


@dataclass(frozen=True, slots=True)
class RemoteFile:
    """A file in a remote folder."""

    path: str
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class TransferResult:
    """What a push or pull moved."""

    source: str
    target: str
    size: int
    sha256: str
    resumed_from: int
    seconds: float


class _Client(asyncssh.SSHClient):
    """Remembers the key the server presented; accepts it only if it matches a pinned fingerprint."""

    def __init__(self, pinned: str | None) -> None:
        self._pinned = pinned
        self.presented: str | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        self.presented = key.get_fingerprint("sha256")
        return self._pinned is not None and _same_fingerprint(self.presented, self._pinned)


def _same_fingerprint(presented: str, pinned: str) -> bool:
    want = pinned.strip()
    if not want.startswith("SHA256:"):
        want = "SHA256:" + want
    return presented.rstrip("=") == want.rstrip("=")


def _known_entries(path: str, remote: Remote) -> bool:
    """Whether ``known_hosts`` has any key for the server (then a refused key has changed)."""
    try:
        known = asyncssh.read_known_hosts(path)
    except (OSError, ValueError):
        return False
    trusted = known.match(remote.host, "", remote.port)
    return any(trusted[:2])


@contextlib.asynccontextmanager
async def connect(remote: Remote) -> AsyncIterator[asyncssh.SFTPClient]:
    """An SFTP session on ``remote``, or :class:`HostKeyError` / :class:`SftpError`."""
    options: dict[str, Any] = {"username": remote.username, "config": None}
    if remote.host_key_fingerprint:
        # Nothing is trusted up front: every key goes through the pinned-fingerprint check.
        options["known_hosts"] = ([], [], [])
    else:
        known = remote.known_hosts or str(Path("~/.ssh/known_hosts").expanduser())
        if not Path(known).is_file():
            raise HostKeyError(
                f"no known_hosts file at {known}: add the server's host key (checked out of band) "
                "or pin it with --host-key-fingerprint SHA256:..."
            )
        options["known_hosts"] = known
    if remote.identity_file:
        options["client_keys"] = [remote.identity_file]
    if remote.password_env:
        password = os.environ.get(remote.password_env)
        if password is None:
            raise SftpError(f"the environment variable {remote.password_env} (the SFTP password) is not set")
        options["password"] = password
        if not remote.identity_file:
            options["client_keys"] = None
    client = _Client(remote.host_key_fingerprint)
    try:
        conn = await asyncio.wait_for(
            asyncssh.connect(remote.host, remote.port, client_factory=lambda: client, **options),
            timeout=remote.connect_timeout,
        )
    except asyncssh.HostKeyNotVerifiable:
        raise _host_key_error(remote, client.presented) from None
    except asyncssh.PermissionDenied:
        raise SftpError(f"{remote.display}: authentication refused (check the key or password)") from None
    except (asyncssh.Error, OSError, TimeoutError) as exc:
        raise SftpError(f"{remote.display}: cannot connect ({_reason(exc)})") from None
    try:
        async with conn, conn.start_sftp_client() as sftp:
            yield sftp
    except asyncssh.SFTPError as exc:
        raise SftpError(f"{remote.display}: {_reason(exc)}") from None
    except (asyncssh.Error, OSError) as exc:
        raise SftpError(f"{remote.display}: connection lost ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    return str(text).splitlines()[0][:200]


def _host_key_error(remote: Remote, presented: str | None) -> HostKeyError:
    shown = f" (the server presented {presented})" if presented else ""
    if remote.host_key_fingerprint:
        return HostKeyError(
            f"{remote.display}: the host key does not match the pinned fingerprint{shown}; "
            "refusing to connect. If the server's key really changed, verify it out of band and update "
            "the pin"
        )
    known = remote.known_hosts or "~/.ssh/known_hosts"
    if _known_entries(str(Path(known).expanduser()), remote):
        return HostKeyError(
            f"{remote.display}: the host key has CHANGED since it was recorded in {known}{shown}; "
            "refusing to connect (this may be an attack). Verify the new key out of band before replacing it"
        )
    return HostKeyError(
        f"{remote.display}: unknown host key{shown}, not in {known}; refusing to connect. "
        "Verify it out of band, then add it to known_hosts or pin it with --host-key-fingerprint"
    )


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def _remote_sha256(sftp: asyncssh.SFTPClient, path: str) -> str:
    digest = hashlib.sha256()
    async with sftp.open(path, "rb", encoding=None) as fh:
        while chunk := await fh.read(_BLOCK):
            digest.update(cast(bytes, chunk))
    return digest.hexdigest()


_OVERLAP = 64 * 1024


async def _same_tail(sftp: asyncssh.SFTPClient, path: str, part: Path, offset: int) -> bool:
    """Whether the last bytes of a partial download are still what the remote file holds there.

    SFTP has no checksum of its own, and a size and a time (whole seconds) can stay the same
    while a platform rewrites an export: before resuming, the last 64 KiB kept are read again
    and compared, so a resume never glues two versions of a file together.
    """
    start = max(0, offset - _OVERLAP)
    with part.open("rb") as fh:
        fh.seek(start)
        kept = fh.read(offset - start)
    async with sftp.open(path, "rb", encoding=None) as remote:
        again = cast(bytes, await remote.read(offset - start, start))
    return again == kept


async def _size(sftp: asyncssh.SFTPClient, path: str) -> int | None:
    try:
        attrs = await sftp.stat(path)
    except asyncssh.SFTPNoSuchFile:
        return None
    return int(attrs.size or 0)


async def push(
    sftp: asyncssh.SFTPClient,
    remote: Remote,
    local: Path,
    target: str,
    state: TransferState,
    *,
    verify: bool = True,
    clock: Callable[[], float],
) -> TransferResult:
    """Upload ``local`` to ``target`` through a hidden part file, resuming one left by an earlier run."""
    started = clock()
    size = local.stat().st_size
    sha = _sha256_file(local)
    folder, name = posixpath.split(target)
    part = posixpath.join(folder, f".{name}{_PART}")
    key = f"push|{remote.server}|{part}"
    offset = 0
    existing = await _size(sftp, part)
    if existing is not None and state.get(key) == sha and existing <= size:
        offset = existing
    for attempt in range(2):
        await _upload(sftp, local, part, offset)
        state.put(key, sha)
        got = await _size(sftp, part)
        if got == size and (not verify or await _remote_sha256(sftp, part) == sha):
            break
        if attempt == 1:
            raise SftpError(f"{remote.display}{part}: the uploaded file does not match (size or SHA-256)")
        offset = 0  # what was there was not a prefix of this file: send it whole
    await _replace(sftp, part, target)
    state.drop(key)
    return TransferResult(str(local), target, size, sha, offset, round(clock() - started, 3))


async def _upload(sftp: asyncssh.SFTPClient, local: Path, part: str, offset: int) -> None:
    mode = "r+b" if offset else "wb"
    async with sftp.open(part, mode, encoding=None) as out:
        if offset:
            await out.truncate(offset)
        with local.open("rb") as fh:
            fh.seek(offset)
            position = offset
            while chunk := fh.read(_BLOCK):
                await out.write(chunk, position)
                position += len(chunk)


async def _replace(sftp: asyncssh.SFTPClient, part: str, target: str) -> None:
    try:
        await sftp.posix_rename(part, target)
    except asyncssh.SFTPOpUnsupported:
        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
            await sftp.remove(target)
        await sftp.rename(part, target)


def safe_name(name: str) -> bool:
    """Whether a name from a remote listing may be used: one path component, printable.

    A server (or whoever can write to its folder) chooses these names: ``../x``, ``/etc/x`` or
    ``a/../../x`` would lead a pull, a sweep or a status elsewhere, and control characters (a
    line break, an escape sequence) would forge lines of our output on a terminal or in a log.
    """
    return bool(name) and "/" not in name and "\\" not in name and name.isprintable()


async def list_files(sftp: asyncssh.SFTPClient, folder: str, *, recursive: bool = False) -> list[RemoteFile]:
    """Regular files of a remote folder (hidden files, our part files among them, left out).

    Names that are not one printable path component (:func:`safe_name`) are left out too, with
    a warning that shows them escaped.
    """
    out: list[RemoteFile] = []
    for entry in await sftp.readdir(folder):
        name = str(entry.filename)
        if name in (".", "..") or name.startswith("."):
            continue
        if not safe_name(name):
            log.warning("%s: skipped a remote file whose name is unsafe: %s", folder, ascii(name)[:200])
            continue
        path = posixpath.join(folder, name)
        mode = entry.attrs.permissions or 0
        if stat.S_ISDIR(mode) and recursive:
            out.extend(await list_files(sftp, path, recursive=True))
        elif stat.S_ISREG(mode):
            out.append(RemoteFile(path, int(entry.attrs.size or 0), float(entry.attrs.mtime or 0)))
    return sorted(out, key=lambda f: f.path)


def _local_part(local: Path) -> Path:
    """The hidden part file a download of ``local`` goes to. A link there is removed (our
    hidden name, but not our file: a planted link is never written through); a device, FIFO or
    folder is left alone, and said."""
    part = local.parent / f".{local.name}{_PART}"
    if part.is_symlink():
        part.unlink()
    try:
        check_replaceable(part)
    except OSError as exc:
        raise SftpError(f"{part}: {exc.strerror}; remove it, or pull to another name") from None
    return part


async def pull(
    sftp: asyncssh.SFTPClient,
    remote: Remote,
    source: RemoteFile,
    local: Path,
    state: TransferState,
    *,
    clock: Callable[[], float],
) -> TransferResult:
    """Download ``source`` to ``local`` through a hidden part file, resuming an earlier one."""
    started = clock()
    part = _local_part(local)
    key = f"pull|{remote.server}|{source.path}"
    stamp = f"{source.size}|{source.mtime}"
    offset = 0
    if (
        part.is_file()
        and not part.is_symlink()
        and state.get(key) == stamp
        and part.stat().st_size <= source.size
    ):
        offset = part.stat().st_size
    free = shutil.disk_usage(local.parent).free
    if source.size - offset > free:
        raise SftpError(
            f"{remote.display}{source.path}: {source.size - offset:,} bytes to download, only {free:,} "
            f"free in {local.parent}"
        )
    if offset and not await _same_tail(sftp, source.path, part, offset):
        offset = 0  # the remote file changed under the same size and time: start again
    state.put(key, stamp)
    digest = hashlib.sha256()
    if offset:
        with part.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
    # O_NOFOLLOW: a link planted as the part file cannot send the download elsewhere.
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | (0 if offset else os.O_TRUNC), 0o600)
    with os.fdopen(fd, "r+b" if offset else "wb") as out:
        out.seek(offset)
        async with sftp.open(source.path, "rb", encoding=None) as fh:
            position = offset
            # Never more than the size the listing declared (and one byte to see a lie): a server
            # that streams on and on cannot fill the disk.
            while chunk := await fh.read(min(_BLOCK, source.size - position + 1), position):
                data = cast(bytes, chunk)
                if position + len(data) > source.size:
                    out.close()
                    state.drop(key)
                    part.unlink()
                    raise SftpError(
                        f"{remote.display}{source.path}: the server sent more than the {source.size:,} "
                        "bytes it declared; nothing kept"
                    )
                out.write(data)
                digest.update(data)
                position += len(data)
        out.flush()
        os.fsync(out.fileno())
    after = await sftp.stat(source.path)
    size = part.stat().st_size
    if size != source.size or int(after.size or 0) != source.size or float(after.mtime or 0) != source.mtime:
        state.drop(key)
        part.unlink()
        raise SftpError(
            f"{remote.display}{source.path}: changed or cut short while downloading; pull it again"
        )
    try:
        check_replaceable(local)  # what appeared there during the download is left alone
    except OSError as exc:
        raise SftpError(f"{local}: {exc.strerror}; the download is kept in {part}") from None
    part.replace(local)
    state.drop(key)
    return TransferResult(
        source.path, str(local), size, digest.hexdigest(), offset, round(clock() - started, 3)
    )
