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
        "dangling-link": str(nodes / "dangling"),
        "name-too-long": str(nodes / ("a" * 300)),
        # Short enough for the file, not for its temporary name beside it (up to 28 bytes more).
        "name-too-long-for-its-temporary": str(nodes / ("b" * 240)),
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
        ["audit", "export", "--output", "{path}"],
        ["audit", "merge", "{file}", "--output", "{path}"],
        ["scan", "tls", "127.0.0.1:1", "--sarif", "{path}"],
        ["scan", "ssh", "127.0.0.1:1", "--html", "{path}"],
        ["csv", "tokenize", "{file}", "{path}", "--column", "Email=Email"],
        ["csv", "detokenize", "{file}", "{out}", "--rejects", "{path}", "--column", "Email"],
        ["harness", "check", "--html", "{path}"],
        ["harness", "check", "--queue", "{path}"],
        ["exchange", "pull", "sftp://nobody@127.0.0.1:1/x.csv", "{path}"],
        ["backup", "{path}"],
    ],
    ids=["audit-export", "audit-merge", "scan-sarif", "scan-html", "csv-out", "csv-rejects", "harness-html",
         "harness-queue", "exchange-pull", "backup"],
)  # fmt: skip
def test_an_output_that_cannot_be_a_file_is_one_usage_error(tmp_path: Path, command: list[str]) -> None:
    import shutil

    for where in _nodes(tmp_path):
        shutil.rmtree(tmp_path / "nodes")
        path = _nodes(tmp_path)[where]
        if command[0] == "exchange" and where == "folder":
            continue  # LOCAL may be a folder: the file goes into it
        nodes = tmp_path / "nodes"
        args = [a.format(file=nodes / "file", out=tmp_path / "out.csv", path=path) for a in command]
        run = run_cli(tmp_path / "home", *args)
        assert run.returncode == 2, (where, run.stderr)
        assert run.stderr.startswith("error: "), (where, run.stderr)
        assert repr(path) in run.stderr, (where, run.stderr)
        assert "Traceback" not in run.stderr
        assert len(run.stderr.splitlines()) == 2, (where, run.stderr)  # the error and its hint
        _untouched(tmp_path)
        made = {"file", "fifo", "link", "dangling", "null"}
        assert {c.name for c in nodes.iterdir()} <= made, where
        assert not (tmp_path / "out.csv").exists()


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


@pytest.mark.parametrize("name", ["../escape", ".hidden", " ", "ca", "server", "database"])
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


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["server", ""], "'' is not a DNS name or IP address"),
        (["server", "\u00fc.example"], "'\u00fc.example' is not a DNS name or IP address"),
        (["server", "a\x1b[31mb"], "'a\\x1b[31mb' is not a DNS name or IP address"),
        (["client", "a\x1b[31mb"], "'a\\x1b[31mb' is not a DNS name or IP address"),
        (["client", "a" * 300], "cannot issue the certificate"),
    ],
    ids=["empty", "not-an-a-label", "escape-server", "escape-client", "too-long"],
)
def test_a_name_a_certificate_cannot_hold_is_a_usage_error(
    tmp_path: Path, args: list[str], message: str
) -> None:
    run = run_cli(tmp_path / "home", "certs", *args, "--dir", str(tmp_path / "certs"))
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith(f"error: {message}"), run.stderr
    assert "Traceback" not in run.stderr
    assert "\x1b" not in run.stderr


def test_serve_dev_with_a_fifo_where_dev_client_json_goes_says_so(tmp_path: Path) -> None:
    # It read the FIFO (and waited for ever); a device there was renamed aside and removed.
    home = tmp_path / "home"
    home.mkdir()
    os.mkfifo(home / "dev-client.json")
    from tests.scan.ssh_servers import free_port

    env = {"SENDVAULT_HTTPS_PORT": str(free_port())}  # never bound: dev mode stops before serving
    run = run_cli(home, "serve", "--dev", env=env)
    assert run.returncode == 1, run.stderr
    assert run.stderr.startswith(f"error: dev mode cannot prepare {home}"), run.stderr
    assert "Traceback" not in run.stderr
    assert stat.S_ISFIFO(os.lstat(home / "dev-client.json").st_mode)


def test_what_a_targets_file_holds_is_printed_escaped(tmp_path: Path) -> None:
    targets = tmp_path / "t.toml"
    targets.write_text(
        '[[db]]\nkind = "mysql"\ntarget = "db"\nuser = "u"\npassword_env = "\\u001b[31mRED\\u0007"\n'
    )
    run = run_cli(tmp_path / "home", "scan", "all", "--targets", str(targets))
    assert run.returncode == 2, run.stderr
    assert "\\x1b[31mRED\\x07 is not set" in run.stderr, run.stderr
    assert "\x1b" not in run.stderr
    assert "\x07" not in run.stderr


def test_a_client_pair_never_replaces_the_ca_or_a_server_pair(tmp_path: Path) -> None:
    # `certs client ca` replaced the CA's key with a client key: the CA was gone for good.
    certs = tmp_path / "certs"
    assert run_cli(tmp_path / "home", "certs", "server", "localhost", "--dir", str(certs)).returncode == 0
    before = {f.name: f.read_bytes() for f in certs.iterdir()}
    for name in ("ca", "server"):
        run = run_cli(tmp_path / "home", "certs", "client", name, "--dir", str(certs))
        assert run.returncode == 2, run.stderr
    assert {f.name: f.read_bytes() for f in certs.iterdir()} == before


def test_backup_leaves_a_node_at_its_partial_name_alone(tmp_path: Path) -> None:
    # `.OUT.partial` is backup's own name, but a FIFO or device there was removed, and a folder
    # there was a traceback.
    home = tmp_path / "home"
    assert run_cli(home, "token", "get", "--type", "email", "someone@example.com").returncode == 0
    os.mkfifo(tmp_path / ".fifo.partial")
    (tmp_path / ".folder.partial").mkdir()
    for name in ("fifo", "folder"):
        run = run_cli(home, "backup", str(tmp_path / name))
        assert run.returncode == 1, run.stderr
        assert run.stderr.startswith(f"error: cannot write {tmp_path / name}"), run.stderr
        assert "Traceback" not in run.stderr
        assert not (tmp_path / name).exists()
    assert stat.S_ISFIFO(os.lstat(tmp_path / ".fifo.partial").st_mode)
    assert (tmp_path / ".folder.partial").is_dir()
    assert run_cli(home, "backup", str(tmp_path / "good")).returncode == 0


def test_an_error_quoting_a_file_name_prints_its_escapes_escaped(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "token", "get", "--type", "email", "someone@example.com").returncode == 0
    taken = tmp_path / "e\x1b[31mX\x07"
    taken.write_text("kept")
    run = run_cli(home, "backup", str(taken))
    assert run.returncode == 1, run.stderr
    assert "e\\x1b[31mX\\x07 exists" in run.stderr, run.stderr
    assert "\x1b" not in run.stderr
    assert taken.read_text() == "kept"


def test_a_pull_leaves_a_node_at_its_part_name_alone(tmp_path: Path) -> None:
    from sendvault.exchange.sftp import SftpError, _local_part

    os.mkfifo(tmp_path / ".f.csv.sendvault-part")
    with pytest.raises(SftpError, match="remove it, or pull to another name"):
        _local_part(tmp_path / "f.csv")
    assert stat.S_ISFIFO(os.lstat(tmp_path / ".f.csv.sendvault-part").st_mode)
    # A link there is ours to remove (never written through), as before.
    (tmp_path / ".g.csv.sendvault-part").symlink_to(tmp_path / "elsewhere")
    assert _local_part(tmp_path / "g.csv") == tmp_path / ".g.csv.sendvault-part"
    assert not os.path.lexists(tmp_path / ".g.csv.sendvault-part")


@pytest.mark.parametrize(
    "command",
    [
        ["exchange", "check", "{sock}"],
        ["csv", "tokenize", "{sock}", "{out}", "--column", "Email=Email"],
        ["csv", "detokenize", "{sock}", "{out}", "--column", "Email"],
        ["--config", "{sock}", "status"],
    ],
    ids=["exchange-check", "csv-tokenize", "csv-detokenize", "config"],
)
def test_a_socket_where_a_file_is_read_is_one_error_line(tmp_path: Path, command: list[str]) -> None:
    # Opening a socket for reading fails with ENXIO, which reached the user as a traceback. Exit 2,
    # not 1: `exchange check` and `audit verify` give 1 as their verdict. A newline in the name
    # is escaped: the error stays one line, and no line of the file's choosing follows it.
    import socket

    sock = tmp_path / "s\nhint: fine.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock))
        args = [a.format(sock=sock, out=tmp_path / "out.csv") for a in command]
        run = run_cli(tmp_path / "home", *args)
    assert run.returncode == 2, run.stderr
    shown = str(sock).replace("\n", "\\n")
    assert run.stderr == f"error: {shown}: is a socket or a device without a reader: give a regular file\n"
    assert not (tmp_path / "out.csv").exists()


def _contacts(tmp_path: Path, rows: int) -> Path:
    source = tmp_path / "in.csv"
    source.write_text("Id,Email\n" + "".join(f"{i},c{i}@example.org\n" for i in range(rows)))
    return source


def _onto_full_stdout(home: Path, *args: str) -> None:
    """Run the CLI with standard output on a full device: the standard-output error, exit 2."""
    import subprocess
    import sys

    with open("/dev/full", "w") as full:  # noqa: PTH123
        run = subprocess.run(
            [sys.executable, "-m", "sendvault", *args],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=120, check=False,
            env={**os.environ, "SENDVAULT_HOME": str(home)},
        )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: cannot write to standard output"), run.stderr
    assert "Traceback" not in run.stderr


def test_standard_output_that_cannot_be_written_is_one_line_and_the_run_is_audited(tmp_path: Path) -> None:
    # `csv tokenize IN -` onto a full device: the tokens made are committed, so the run must be in
    # the audit log, and the error is the one every command gives for standard output (exit 2).
    source = _contacts(tmp_path, 20_000)
    _onto_full_stdout(tmp_path / "home", "csv", "tokenize", str(source), "-", "--column", "Email=Email", "-q")
    shown = run_cli(tmp_path / "home", "audit", "show", "--json")
    assert '"exchange:tokenize"' in shown.stdout, shown.stdout[-2000:]
    assert '"failed"' in shown.stdout


def test_a_closed_pipe_on_standard_output_stays_quiet(tmp_path: Path) -> None:
    # `| head -c1`: click's quiet exit 1, not an error line about the pipe.
    import subprocess
    import sys

    # The whole converted file goes to stdout (about 2 MB, far more than a pipe holds), so the
    # writer always meets the closed pipe.
    source = _contacts(tmp_path, 50_000)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sendvault", "csv", "tokenize", str(source), "-", "--column", "Email=Email",
         "-q", "--workers", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "SENDVAULT_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert proc.stdout is not None
    assert proc.stderr is not None
    proc.stdout.read(1)
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert err == ""


def test_standard_input_closed_and_a_settings_file_without_end(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "csv", "tokenize", "-", str(tmp_path / "o.csv"),
         "--column", "Email=Email"],
        stdin=None, capture_output=True, text=True, timeout=120, check=False, close_fds=True,
        env={**os.environ, "SENDVAULT_HOME": str(tmp_path / "home")},
        preexec_fn=lambda: os.close(0),
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: - is empty: a header row is needed"), run.stderr
    # /dev/zero as --config was read for ever (6 GB in 6 s); a settings file is a few kilobytes.
    run = run_cli(tmp_path / "home", "--config", "/dev/zero", "status")
    assert run.returncode == 2, run.stderr
    assert "/dev/zero is over 1 MiB: not a settings file" in run.stderr


def test_audit_verify_refuses_devices_before_reading_them(tmp_path: Path) -> None:
    # /dev/zero as --file, --known-head or --public-key was read without end (23 GB, then the
    # kernel's out-of-memory killer).
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = Ed25519PrivateKey.generate().public_key()
    pem = tmp_path / "audit.pub"
    pem.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    for args, said in (
        (["--public-key", str(pem), "--file", "/dev/zero"], "/dev/zero is a device, not a file"),
        (["--public-key", str(pem), "--known-head", "/dev/zero"], "--known-head /dev/zero: is a device"),
        (["--public-key", "/dev/zero"], "/dev/zero: is a device, not a file"),
    ):
        run = run_cli(tmp_path / "home", "audit", "verify", *args)
        assert run.returncode == 2, (args, run.stderr)
        assert said in run.stderr, (args, run.stderr)
        assert "Traceback" not in run.stderr


def test_json_to_a_full_standard_output_is_the_standard_output_error(tmp_path: Path) -> None:
    _onto_full_stdout(tmp_path / "home", "exchange", "check", str(_contacts(tmp_path, 3)), "--json")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["csv", "--help"]])
def test_help_and_version_onto_a_full_standard_output_are_the_standard_output_error(
    tmp_path: Path, args: list[str]
) -> None:
    # The top-level --help and --version are printed while the arguments are parsed, before any
    # command runs: they were a traceback.
    _onto_full_stdout(tmp_path / "home", *args)


def test_an_output_folder_that_makes_no_files_names_the_output_not_a_hidden_file(tmp_path: Path) -> None:
    # procfs refuses new files: the message named the hidden temporary file the user never chose.
    run = run_cli(
        tmp_path / "home",
        "csv",
        "tokenize",
        str(_contacts(tmp_path, 2)),
        "/proc/o.csv",
        "--column",
        "Email=Email",
    )
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: /proc/o.csv: cannot create a file in /proc ("), run.stderr
    assert ".tmp" not in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.parametrize("command", [["csv", "tokenize", "{src}", "{out}", "--column", "Email=Email"],
                                     ["exchange", "check", "{src}"]])  # fmt: skip
def test_an_input_whose_read_fails_is_named_in_the_error(tmp_path: Path, command: list[str]) -> None:
    # /proc/self/mem opens, and its first read fails (EIO): the error said only "Input/output error".
    args = [a.format(src="/proc/self/mem", out=tmp_path / "o.csv") for a in command]
    run = run_cli(tmp_path / "home", *args)
    assert run.returncode == 2, run.stderr
    assert run.stderr.startswith("error: /proc/self/mem: Input/output error"), run.stderr
    assert "Traceback" not in run.stderr
    assert not (tmp_path / "o.csv").exists()
