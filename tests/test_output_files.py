"""Files a command writes whole (scan reports, audit exports and bundles, certificates): a path
that cannot be a new or regular file is one error line, and a device, FIFO, link or folder is
never replaced. Run as root (CI containers), a rename over /dev/null replaced the device."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from tests.helpers import run_cli


def _nodes(tmp_path: Path) -> dict[str, str]:
    """Paths that are no file to replace, beside a regular file ``file`` that must keep its text."""
    nodes = tmp_path / "nodes"
    nodes.mkdir()
    (nodes / "file").write_text("kept")
    os.mkfifo(nodes / "fifo")
    (nodes / "link").symlink_to(nodes / "file")
    (nodes / "dangling").symlink_to(nodes / "nowhere")
    paths = {
        "empty": "",
        "folder": str(nodes),
        "slash-after-a-file": f"{nodes / 'file'}/",
        "dot-after-a-new-folder": f"{nodes / 'new'}/.",
        "under-a-file": str(nodes / "file" / "sub" / "x"),
        "under-a-dangling-link": str(nodes / "dangling" / "x"),
        "fifo": str(nodes / "fifo"),
        "link": str(nodes / "link"),
        "name-too-long": str(nodes / ("a" * 300)),
    }
    if os.geteuid() == 0:  # CI runs as root: a device node of its own, never /dev's
        os.mknod(nodes / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        paths["device"] = str(nodes / "null")
    return paths


def _untouched(tmp_path: Path) -> None:
    nodes = tmp_path / "nodes"
    assert (nodes / "file").read_text() == "kept"
    assert stat.S_ISFIFO(os.lstat(nodes / "fifo").st_mode)
    assert (nodes / "link").is_symlink()
    assert not (nodes / "new").exists()
    if (nodes / "null").exists():
        assert stat.S_ISCHR(os.lstat(nodes / "null").st_mode)


@pytest.mark.parametrize(
    "command",
    [
        ["audit", "export", "--output"],
        ["audit", "merge", "{file}", "--output"],
        ["scan", "tls", "127.0.0.1:1", "--sarif"],
        ["scan", "ssh", "127.0.0.1:1", "--html"],
    ],
    ids=["audit-export", "audit-merge", "scan-sarif", "scan-html"],
)
def test_an_output_that_cannot_be_a_file_is_one_usage_error(tmp_path: Path, command: list[str]) -> None:
    import shutil

    for where in _nodes(tmp_path):
        shutil.rmtree(tmp_path / "nodes")
        path = _nodes(tmp_path)[where]
        args = [a.format(file=tmp_path / "nodes" / "file") for a in command]
        run = run_cli(tmp_path / "home", *args, path)
        assert run.returncode == 2, (where, run.stderr)
        assert run.stderr.startswith("error: invalid value for '--"), (where, run.stderr)
        assert "Traceback" not in run.stderr
        assert len(run.stderr.splitlines()) == 2, (where, run.stderr)  # the error and its hint
        _untouched(tmp_path)
        written = {c.name for c in (tmp_path / "nodes").iterdir()} - {
            "file",
            "fifo",
            "link",
            "dangling",
            "null",
        }
        assert not written, where


@pytest.mark.parametrize("taken", ["server.pem", "server.key"])
def test_certificates_are_written_both_or_neither(tmp_path: Path, taken: str) -> None:
    # A FIFO where the certificate goes: the key was replaced first, then the certificate failed,
    # and the pair no longer matched. Now neither is written, and the error is one line.
    directory = tmp_path / "certs"
    directory.mkdir()
    os.mkfifo(directory / taken)
    run = run_cli(tmp_path / "home", "certs", "server", "localhost", "--dir", str(directory))
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith(f"error: cannot write the certificates in {directory}"), run.stderr
    assert "Traceback" not in run.stderr
    other = "server.key" if taken == "server.pem" else "server.pem"
    assert not (directory / other).exists()
    assert stat.S_ISFIFO(os.lstat(directory / taken).st_mode)


@pytest.mark.parametrize("name", ["../escape", ".hidden", " "])
def test_a_client_certificate_name_must_name_files_in_the_folder(tmp_path: Path, name: str) -> None:
    run = run_cli(tmp_path / "home", "certs", "client", name, "--dir", str(tmp_path / "certs"))
    assert run.returncode == 2, run.stderr
    assert "cannot name the files NAME.pem and NAME.key" in run.stderr
    assert not (tmp_path / "escape.pem").exists()


def test_an_atomic_write_never_replaces_a_fifo_or_a_folder(tmp_path: Path) -> None:
    # The guard for every writer (audit exports and bundles, certificates, dev-client.json).
    import errno

    from sendvault._fs import write_atomic

    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    for name in ("fifo", "folder"):
        with pytest.raises(OSError, match="not a regular file") as raised:
            write_atomic(tmp_path / name, b"x")
        assert raised.value.errno == errno.EEXIST
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    # A link is replaced as a link (what it points at is not written), as before; the CLI's
    # outputs refuse links before that (OutputFile).
    (tmp_path / "target").write_text("kept")
    (tmp_path / "link").symlink_to(tmp_path / "target")
    write_atomic(tmp_path / "link", b"new")
    assert (tmp_path / "target").read_text() == "kept"
    assert (tmp_path / "link").read_bytes() == b"new"
    write_atomic(tmp_path / "new", b"x")
    write_atomic(tmp_path / "new", b"y")
    assert (tmp_path / "new").read_bytes() == b"y"
