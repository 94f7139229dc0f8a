"""Pull, sweep and status against a hostile SFTP server (a real asyncssh server on 127.0.0.1).

The server lies: its listings carry names that are not one path component (``a/../../x``,
``/x``) or that hold a line break and an escape sequence, it declares sizes the files do not
have, streams a file without end, or drops the connection in the middle of a download. Whatever
it does, nothing may land or be deleted outside the folders named, no local file we did not
write may be overwritten, and a resumed download must come out exact.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.exchange.sftp_server import SftpServer
from tests.helpers import run_cli

from sendvault.exchange import Exchange, SftpError, SweepRefused, TransferState, parse_remote
from sendvault.exchange._asyncssh import asyncssh
from sendvault.exchange.retention import DAY

NOW = 1_900_000_000.0


class Lies:
    """What the hostile server does, set by each test."""

    def __init__(self) -> None:
        self.names: dict[bytes, list[bytes]] = {}  # folder -> extra names its listing shows
        self.sizes: dict[bytes, int] = {}  # path -> size it declares
        self.endless: set[bytes] = set()  # paths whose reads never reach an end
        self.drop_at: dict[bytes, int] = {}  # path -> offset at which the connection is cut

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


LIES = Lies()


class HostileSFTP(asyncssh.SFTPServer):
    def __init__(self, chan: Any, chroot: str | None = None) -> None:
        super().__init__(chan, chroot=chroot)
        self._paths: dict[int, bytes] = {}

    def _declared(self, path: bytes, attrs: asyncssh.SFTPAttrs) -> asyncssh.SFTPAttrs:
        if path in LIES.sizes:
            attrs.size = LIES.sizes[path]
        return attrs

    async def scandir(self, path: bytes) -> AsyncIterator[asyncssh.SFTPName]:
        folder = path.rstrip(b"/") or b"/"
        async for entry in super().scandir(path):
            name = entry.filename if isinstance(entry.filename, bytes) else entry.filename.encode()
            entry.attrs = self._declared(folder + b"/" + name, entry.attrs)
            yield entry
        for name in LIES.names.get(folder, []):
            attrs = asyncssh.SFTPAttrs(
                type=asyncssh.FILEXFER_TYPE_REGULAR,
                permissions=stat.S_IFREG | 0o644,
                size=LIES.sizes.get(name, 5),
                mtime=int(NOW - 30 * DAY),
            )
            yield asyncssh.SFTPName(name, attrs=attrs)

    @staticmethod
    def _local(result: Any) -> asyncssh.SFTPAttrs:
        return result if isinstance(result, asyncssh.SFTPAttrs) else asyncssh.SFTPAttrs.from_local(result)

    def stat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return self._declared(path, self._local(super().stat(path)))

    def lstat(self, path: bytes) -> asyncssh.SFTPAttrs:
        return self._declared(path, self._local(super().lstat(path)))

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        handle = super().open(path, pflags, attrs)
        self._paths[id(handle)] = path
        return handle

    def read(self, file_obj: object, offset: int, size: int) -> bytes:
        path = self._paths.get(id(file_obj), b"")
        if path in LIES.endless:
            return b"A" * size
        cut = LIES.drop_at.get(path)
        if cut is not None and offset + size > cut:
            self.channel.get_connection().abort()
            return b""
        data = super().read(file_obj, offset, size)
        assert isinstance(data, bytes)
        return data


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    base = tmp_path_factory.mktemp("hostile-sftp")
    srv = SftpServer(base / "root", base / "keys", sftp_class=HostileSFTP)
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _honest_again() -> Iterator[None]:
    yield
    LIES.reset()


def _remote(server: SftpServer, path: str) -> Any:
    return parse_remote(
        server.url(path), known_hosts=str(server.known_hosts), identity_file=str(server.client_key)
    )


def _ex(tmp_path: Path, events: list[tuple[str, dict[str, Any]]] | None = None) -> Exchange:
    def record(event: str, meta: dict[str, Any], counts: dict[str, Any] | None) -> None:
        if events is not None:
            events.append((event, meta))

    return Exchange(TransferState(tmp_path / "state.json"), record, clock=lambda: NOW)


def _run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


def test_listed_names_that_leave_the_folder_or_forge_output_are_never_used(
    server: SftpServer, tmp_path: Path
) -> None:
    root = server.root
    folder = root / "out"
    (folder / "a").mkdir(parents=True)
    (folder / "ok.csv").write_text("SubscriberKey\nK1\n")
    evil = "evil\n\x1b[2Jwarning: all clear.csv"
    (folder / evil).write_text("SubscriberKey\nK2\n")
    (root / "secret.csv").write_text("outside the exchange folder\n")
    (root / "top.csv").write_text("outside too\n")
    LIES.names[b"/out"] = [b"a/../../secret.csv", b"/top.csv"]
    for path in [folder / "ok.csv", folder / evil, root / "secret.csv", root / "top.csv"]:
        os.utime(path, (NOW - 30 * DAY, NOW - 30 * DAY))

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    pulled = _run(_ex(tmp_path).pull(_remote(server, "/out"), inbox))
    assert [r.source for r in pulled] == ["/out/ok.csv"]
    assert sorted(p.name for p in inbox.iterdir()) == ["ok.csv"]

    status = _run(_ex(tmp_path).status(_remote(server, "/out")))
    assert [f.path for f in status.files] == ["/out/ok.csv"]

    deleted = _run(_ex(tmp_path).sweep_remote(_remote(server, "/out"), days=10))
    assert [d.path for d in deleted] == ["/out/ok.csv"]
    assert (root / "secret.csv").exists()
    assert (root / "top.csv").exists()
    assert (folder / evil).exists()  # not ours to judge: left for a human


def test_a_server_that_streams_past_the_declared_size_is_cut_off(server: SftpServer, tmp_path: Path) -> None:
    folder = server.root / "endless"
    folder.mkdir()
    (folder / "export.csv").write_bytes(b"x" * 1000)
    LIES.sizes[b"/endless/export.csv"] = 1000
    LIES.endless.add(b"/endless/export.csv")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with pytest.raises(SftpError, match="more than the 1,000 bytes it declared"):
        _run(_ex(tmp_path).pull(_remote(server, "/endless"), inbox))
    assert list(inbox.iterdir()) == []  # no part file, no target


def test_a_declared_size_beyond_the_free_space_is_refused_before_writing(
    server: SftpServer, tmp_path: Path
) -> None:
    folder = server.root / "huge"
    folder.mkdir()
    (folder / "export.csv").write_bytes(b"x" * 10)
    LIES.sizes[b"/huge/export.csv"] = 1 << 60
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with pytest.raises(SftpError, match="free in"):
        _run(_ex(tmp_path).pull(_remote(server, "/huge"), inbox))
    assert list(inbox.iterdir()) == []


def test_a_download_cut_by_the_server_resumes_exactly(server: SftpServer, tmp_path: Path) -> None:
    folder = server.root / "drop"
    folder.mkdir()
    data = os.urandom(900_000)
    (folder / "tracking.csv").write_bytes(data)
    LIES.drop_at[b"/drop/tracking.csv"] = 400_000
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    events: list[tuple[str, dict[str, Any]]] = []
    with pytest.raises(SftpError):
        _run(_ex(tmp_path, events).pull(_remote(server, "/drop"), inbox))
    assert not (inbox / "tracking.csv").exists()
    part = inbox / ".tracking.csv.sendvault-part"
    assert 0 < part.stat().st_size <= 400_000
    assert part.read_bytes() == data[: part.stat().st_size]
    kept = part.stat().st_size
    LIES.drop_at.clear()
    (result,) = _run(_ex(tmp_path, events).pull(_remote(server, "/drop"), inbox))
    assert result.resumed_from == kept
    assert (inbox / "tracking.csv").read_bytes() == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert not part.exists()


def test_a_pull_never_overwrites_a_local_file_it_did_not_write(server: SftpServer, tmp_path: Path) -> None:
    folder = server.root / "clash"
    folder.mkdir()
    (folder / "opens.csv").write_text("SubscriberKey,Event\nK1,open\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "opens.csv").write_text("my own notes\n")
    ex = _ex(tmp_path)
    (first,) = _run(ex.pull(_remote(server, "/clash"), inbox))
    assert Path(first.target) == inbox / "opens.1.csv"
    assert (inbox / "opens.csv").read_text() == "my own notes\n"
    # The platform re-exports the file: the new version replaces our own copy, not the user's file.
    (folder / "opens.csv").write_text("SubscriberKey,Event\nK1,open\nK2,open\n")
    os.utime(folder / "opens.csv", (NOW + 60, NOW + 60))
    (again,) = _run(ex.pull(_remote(server, "/clash"), inbox))
    assert Path(again.target) == inbox / "opens.1.csv"
    assert (inbox / "opens.1.csv").read_text().endswith("K2,open\n")
    assert (inbox / "opens.csv").read_text() == "my own notes\n"


def test_a_link_planted_as_the_part_file_is_not_written_through(server: SftpServer, tmp_path: Path) -> None:
    folder = server.root / "plant"
    folder.mkdir()
    (folder / "clicks.csv").write_text("SubscriberKey,Event\nK1,click\n")
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / ".clicks.csv.sendvault-part").symlink_to(victim)
    _run(_ex(tmp_path).pull(_remote(server, "/plant"), inbox))
    assert victim.read_text() == "precious\n"
    assert (inbox / "clicks.csv").read_text() == "SubscriberKey,Event\nK1,click\n"


def test_cli_status_never_prints_a_hostile_name(server: SftpServer, tmp_path: Path) -> None:
    folder = server.root / "names"
    folder.mkdir()
    (folder / "ok.csv").write_text("a\n")
    (folder / "x\x1b]0;owned\x07.csv").write_text("a\n")
    home = tmp_path / "home"
    done = run_cli(
        home,
        "exchange",
        "status",
        server.url("/names"),
        "--known-hosts",
        str(server.known_hosts),
        "--identity",
        str(server.client_key),
    )
    assert "\x1b" not in done.stdout + done.stderr
    assert "/names/ok.csv" in done.stdout


def test_careless_pull_and_push_arguments_are_one_line_usage_errors(tmp_path: Path) -> None:
    home = tmp_path / "home"
    for args, said in [
        (["exchange", "push", __file__, "sftp://mc@127.0.0.1:99999/in/"], "invalid port"),
        (
            ["exchange", "pull", "sftp://mc@127.0.0.1:1/out", str(tmp_path / "no" / "such")],
            "not a local folder",
        ),
        (["exchange", "pull", "sftp://mc@127.0.0.1:1/out", "-"], "cannot be `-`"),
    ]:
        done = run_cli(home, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.startswith("error: "), done.stderr
        assert said in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_a_remote_sweep_of_the_account_root_is_refused(server: SftpServer, tmp_path: Path) -> None:
    old = server.root / "Export" / "old.csv"
    old.parent.mkdir(parents=True, exist_ok=True)
    old.write_text("x")
    os.utime(old, (NOW - 30 * DAY, NOW - 30 * DAY))
    for path in ("/", "/Export/../"):
        with pytest.raises(SweepRefused, match="needs the folder itself"):
            _run(_ex(tmp_path).sweep_remote(_remote(server, path), days=10))
    assert old.exists()
    done = run_cli(
        tmp_path / "home", "exchange", "sweep", "--remote", f"sftp://mc@127.0.0.1:{server.port}",
        "--known-hosts", str(server.known_hosts), "--identity", str(server.client_key),
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ")
    assert old.exists()


def test_a_resume_never_glues_two_versions_of_a_file_together(server: SftpServer, tmp_path: Path) -> None:
    # The platform rewrites the export between the cut and the resume: same size, same time
    # (SFTP's times are whole seconds). The size check passed a file made of both versions.
    folder = server.root / "rewrite"
    folder.mkdir()
    first, second = os.urandom(700_000), os.urandom(700_000)
    export = folder / "opens.csv"
    export.write_bytes(first)
    os.utime(export, (NOW - DAY, NOW - DAY))
    LIES.drop_at[b"/rewrite/opens.csv"] = 300_000
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with pytest.raises(SftpError):
        _run(_ex(tmp_path).pull(_remote(server, "/rewrite"), inbox))
    assert (inbox / ".opens.csv.sendvault-part").stat().st_size > 0
    LIES.drop_at.clear()
    export.write_bytes(second)
    os.utime(export, (NOW - DAY, NOW - DAY))
    (result,) = _run(_ex(tmp_path).pull(_remote(server, "/rewrite"), inbox))
    assert result.resumed_from == 0
    assert (inbox / "opens.csv").read_bytes() == second
