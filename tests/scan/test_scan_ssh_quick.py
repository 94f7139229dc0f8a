"""`sendvault scan ssh HOST` takes a short path without click: it must answer as the click command does."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests.scan.ssh_servers import Sshd

# The click command, as the console script ran it before the short path existed.
_CLICK = "import sys; from sendvault.cli._app import cli; cli(sys.argv[1:], prog_name='sendvault')"


def _run(*args: str, click: bool = False) -> subprocess.CompletedProcess[str]:
    head = [sys.executable, "-c", _CLICK] if click else [sys.executable, "-m", "sendvault"]
    return subprocess.run([*head, "scan", "ssh", *args], capture_output=True, text=True, timeout=120,
                          check=False)  # fmt: skip


@pytest.mark.parametrize(
    "options",
    [
        ["--json"],
        ["--json", "--fail-on", "low"],
        ["--json", "--timeout=3", "--fingerprints"],
        ["--fail-on=high"],
        [],
    ],
)
def test_the_short_path_answers_as_the_click_command(sshd_legacy: Sshd, options: list[str]) -> None:
    target = f"127.0.0.1:{sshd_legacy.port}"
    quick, slow = _run(target, *options), _run(*options, target, click=True)
    assert (quick.returncode, quick.stderr) == (slow.returncode, slow.stderr)
    assert quick.returncode == 1  # high findings: exit 1 at every --fail-on
    if "--json" in options:
        assert json.loads(quick.stdout) == json.loads(slow.stdout)
    else:
        assert quick.stdout == slow.stdout


def test_a_modern_server_passes_on_both_paths(sshd_modern: Sshd) -> None:
    quick = _run(f"127.0.0.1:{sshd_modern.port}", "--json")
    slow = _run(f"127.0.0.1:{sshd_modern.port}", "--json", click=True)
    assert quick.returncode == slow.returncode == 0, quick.stderr
    assert json.loads(quick.stdout) == json.loads(slow.stdout)


def test_the_short_path_loads_neither_click_nor_typing(sshd_modern: Sshd) -> None:
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sendvault", "scan", "ssh",
         f"127.0.0.1:{sshd_modern.port}", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    loaded = {
        line.rsplit("|", 1)[1].strip() for line in run.stderr.splitlines() if line.startswith("import time:")
    }
    assert "sendvault.scan.ssh" in loaded
    assert not loaded & {"click", "typing", "dataclasses", "pathlib", "threading", "msgspec", "rich"}


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--timeout", "nan", "127.0.0.1:22"], "--timeout"),  # click's range check
        (["--timeout", "0", "127.0.0.1:22"], "--timeout"),
        (["--fail-on", "severe", "127.0.0.1:22"], "--fail-on"),
        (["--timeout"], "--timeout"),
        (["127.0.0.1:99999"], "port"),
        (["--verbose", "127.0.0.1:22"], "--verbose"),
        ([], "TARGETS"),
    ],
)
def test_what_the_short_path_does_not_take_gets_click_s_usage_error(args: list[str], expected: str) -> None:
    run = _run(*args)
    assert run.returncode == 2
    assert expected in run.stderr
    assert "Traceback" not in run.stderr
    assert run.stderr == _run(*args, click=True).stderr


def test_help_and_reports_go_to_the_click_command(sshd_modern: Sshd, tmp_path: Path) -> None:
    assert "--fingerprints" in _run("--help").stdout
    sarif = tmp_path / "r.sarif"
    run = _run(f"127.0.0.1:{sshd_modern.port}", "--sarif", str(sarif))
    assert run.returncode == 0, run.stderr
    assert json.loads(sarif.read_text())["version"] == "2.1.0"


@pytest.mark.parametrize("closed", ["1", "2"])
def test_a_closed_stdout_or_stderr_changes_no_exit_code(
    sshd_modern: Sshd, closed: str, tmp_path: Path
) -> None:
    # cron and daemons may start a command with a standard stream closed (``2>&-``); --sarif
    # takes the click command.
    for target, code in ((f"127.0.0.1:{sshd_modern.port}", 0), ("127.0.0.1:1", 2)):
        for tail in ("", f"--sarif {tmp_path / 'r.sarif'}"):
            command = f"exec {sys.executable} -m sendvault scan ssh {target} --json {tail} {closed}>&-"
            run = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120,
                                 check=False)  # fmt: skip
            assert run.returncode == code, (command, run.stdout, run.stderr)


def test_a_reader_that_went_away_is_exit_1_without_a_traceback(sshd_modern: Sshd) -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "sendvault", "scan", "ssh", f"127.0.0.1:{sshd_modern.port}", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    ) as process:  # fmt: skip
        assert process.stdout is not None
        assert process.stderr is not None
        process.stdout.close()  # before the scan has written anything
        stderr = process.stderr.read().decode()
        assert process.wait(timeout=120) == 1
    assert "Traceback" not in stderr
    assert "Exception" not in stderr


def test_a_descriptor_a_caller_holds_is_left_alone(tmp_path: Path) -> None:
    # main() called in a process whose sys.stdout is None while descriptor 1 is its own socket.
    script = tmp_path / "host.py"
    script.write_text(
        "import os, socket, stat, sys\n"
        "os.close(1)\n"
        "sock = socket.socket()\n"
        "assert sock.fileno() == 1\n"
        "sys.stdout = None\n"
        "from sendvault.cli import _open_closed_streams\n"
        "_open_closed_streams()\n"
        "assert stat.S_ISSOCK(os.fstat(1).st_mode)\n"
        "print('written to /dev/null')\n"
        "sys.exit(7)\n"
    )
    run = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert run.returncode == 7, run.stderr


@pytest.mark.parametrize(
    ("target", "error"),
    [
        ("", "a target needs a host"),
        (":22", "a target needs a host"),
        ("[]:22", "a target needs a host"),
        (" ", "' ' is not a host name or address"),
        (
            "\udcff\udcfe.example:22",
            "'\\udcff\\udcfe.example' is not a host name",
        ),  # bytes that are not UTF-8
        (
            "\x1b[31mhost\x07",
            "'\\x1b[31mhost\\x07' is not a host",
        ),
        ("127.0.0.1:\u0662\u0662", "the port must be a number"),  # Arabic-Indic digits
    ],
    ids=["empty", "port-only", "empty-brackets", "blank", "not-utf8", "escape", "arabic-digits"],
)
def test_a_target_without_a_plain_host_is_a_usage_error(target: str, error: str, tmp_path: Path) -> None:
    for run in (_run(target), _run(target, click=True), _run(target, "--sarif", str(tmp_path / "r.sarif"))):
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith(f"error: {error}"), run.stderr
        assert "Traceback" not in run.stderr
        assert "\x1b" not in run.stderr


@pytest.mark.parametrize(
    "where",
    [
        "empty",
        "directory",
        "under-a-file",
        "file-slash",
        "no-such-dir-in-proc",
        "fifo",
        "symlink",
        "device",
    ],
)
def test_a_report_that_cannot_be_written_is_one_error_line_and_replaces_nothing(
    sshd_modern: Sshd, tmp_path: Path, where: str
) -> None:
    # A report is written to a temporary file renamed over the path: run as root (CI containers),
    # `--sarif /dev/null` replaced the device with a regular file. Only a regular file is replaced.
    import os
    import stat

    (tmp_path / "file").write_text("kept")
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "link").symlink_to(tmp_path / "file")
    if where == "device":
        if os.geteuid() != 0:
            pytest.skip("a device node needs root (CI runs as root)")
        os.mknod(tmp_path / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    path = {"empty": "", "directory": str(tmp_path), "under-a-file": str(tmp_path / "file" / "r.sarif"),
            "file-slash": f"{tmp_path / 'file'}/", "no-such-dir-in-proc": "/proc/sendvault-nope/r.sarif",
            "fifo": str(tmp_path / "fifo"), "symlink": str(tmp_path / "link"),
            "device": str(tmp_path / "null")}[where]  # fmt: skip
    for option in ("--sarif", "--html"):
        run = _run(f"127.0.0.1:{sshd_modern.port}", option, path)
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith("error: "), run.stderr
        assert repr(path) in run.stderr or path in run.stderr
        assert "Traceback" not in run.stderr
        assert len(run.stderr.splitlines()) == 2  # the error and its hint
    assert (tmp_path / "file").read_text() == "kept"
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo").st_mode)
    assert (tmp_path / "link").is_symlink()
    if where == "device":
        assert stat.S_ISCHR(os.lstat(tmp_path / "null").st_mode)


@pytest.mark.parametrize("tail", ["", "--fail-on high", "--sarif {dir}/r.sarif"])
def test_a_full_stdout_is_one_error_line_and_exit_2(sshd_modern: Sshd, tmp_path: Path, tail: str) -> None:
    # /dev/full: every write fails with ENOSPC, as on a full disk. The short path and the click
    # command (--fail-on takes the first, --sarif the second) say so and exit 2, never 120.
    for as_json in ("--json", ""):
        command = (f"exec {sys.executable} -m sendvault scan ssh 127.0.0.1:{sshd_modern.port} {as_json} "
                   f"{tail.format(dir=tmp_path)} >/dev/full")  # fmt: skip
        run = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=120, check=False)
        assert run.returncode == 2, (command, run.stderr)
        assert run.stderr.startswith("error: cannot write to standard output (No space left on device)")
        assert "Traceback" not in run.stderr
        assert "Exception ignored" not in run.stderr
