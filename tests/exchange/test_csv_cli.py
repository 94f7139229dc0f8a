"""`sendvault csv ...` and `exchange check` as users run them: real processes, files, exit codes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.helpers import run_cli as run

from sendvault.config import load_settings
from sendvault.vault import Kind, open_vault

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_tokenize_check_detokenize_and_the_audit_trail(home: Path, tmp_path: Path) -> None:
    out, back = tmp_path / "out.csv", tmp_path / "back.csv"
    src = GOLDEN / "invalid_values.csv"
    assert run(home, "exchange", "check", str(src)).returncode == 1
    done = run(
        home,
        "csv",
        "tokenize",
        str(src),
        str(out),
        "--column",
        "Email=Email",
        "--column",
        "Phone=MobileNumber",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["rejected"] == 3
    assert summary["written"] == 2
    assert summary["status"] == "ok"
    assert "3 rows rejected" in done.stderr
    rejects = (tmp_path / "out.csv.rejects.csv").read_text()
    assert rejects.splitlines()[0] == "line,column,reason"
    assert "not-an-email" not in rejects
    assert "x@@y" not in rejects
    assert (out.stat().st_mode & 0o777) == 0o600
    checked = run(home, "exchange", "check", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert (
        run(
            home, "csv", "detokenize", str(out), str(back), "--column", "Email", "--column", "Phone"
        ).returncode
        == 0
    )
    assert back.read_bytes() == (GOLDEN / "invalid_values.roundtrip.csv").read_bytes()

    shown = json.loads(run(home, "audit", "show", "--json").stdout)
    events = [r["event"] for r in shown]
    assert events == ["exchange:check", "exchange:tokenize", "exchange:check", "exchange:detokenize"]
    tok = shown[1]
    assert tok["meta"]["input_sha256"]
    assert tok["meta"]["output_sha256"]
    assert tok["counts"]["rejected"] == 3
    audit_bytes = (home / "audit.db").read_bytes()
    for clear in (b"good@example.com", b"not-an-email", b"12125550123", b"fine@example"):
        assert clear not in audit_bytes


def test_stdin_to_stdout_with_rejects_on_stderr(home: Path) -> None:
    done = run(
        home, "csv", "tokenize", "-", "-", "--column", "email", stdin="email,n\na@example.com,1\nnope,2\n"
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "email,n"
    assert len(lines) == 2
    assert lines[1].endswith("@tokens.sendvault.invalid,1")
    assert "rejected: 3,email,invalid-email" in done.stderr
    assert "nope" not in done.stderr


def test_user_mistakes_get_one_line_a_hint_and_no_output(home: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.csv"
    src = str(GOLDEN / "quoted_newlines.csv")
    missing = run(home, "csv", "tokenize", src, str(out), "--column", "EmailAddress=Email")
    assert missing.returncode == 2
    assert "'EmailAddress' is not in the header" in missing.stderr
    assert "'Email'" in missing.stderr
    assert "Traceback" not in missing.stderr
    kind = run(home, "csv", "tokenize", src, str(out), "--column", "Note")
    assert kind.returncode == 2
    assert "Note=Email" in kind.stderr
    bad_type = run(home, "csv", "tokenize", src, str(out), "--column", "Email=Fax")
    assert bad_type.returncode == 2
    assert "unknown type" in bad_type.stderr
    nofile = run(home, "csv", "tokenize", str(tmp_path / "nope.csv"), str(out), "--column", "Email=Email")
    assert nofile.returncode == 2
    assert "no such file" in nofile.stderr
    same = run(home, "csv", "tokenize", src, src, "--column", "Email=Email")
    assert same.returncode == 2
    assert "OUT is the input file" in same.stderr
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert run(home, "csv", "tokenize", str(empty), str(out), "--column", "Email=Email").returncode == 2
    binary = tmp_path / "binary.csv"
    binary.write_bytes(b"Email\n" + b'"' + b"x" * (2 << 20) + b"\n")
    broken = run(home, "csv", "tokenize", str(binary), str(out), "--column", "Email=Email")
    assert broken.returncode == 2
    assert "line 2" in broken.stderr
    assert "field larger" in broken.stderr
    too_many = run(
        home, "csv", "tokenize", str(GOLDEN / "invalid_values.csv"), str(out),
        "--column", "Email=Email", "--column", "Phone=MobileNumber", "--max-errors", "2",
    )  # fmt: skip
    assert too_many.returncode == 1
    assert "more than --max-errors 2" in too_many.stderr
    assert (tmp_path / "out.csv.rejects.csv").exists()
    assert not out.exists()
    workbook = tmp_path / "book.xlsx"
    workbook.write_bytes(b"PK\x03\x04" + bytes(200))
    zipped = run(home, "csv", "tokenize", str(workbook), str(out), "--column", "Email=Email")
    assert zipped.returncode == 2
    assert "save it as CSV first" in zipped.stderr
    assert run(home, "exchange", "check", str(workbook)).returncode == 2
    wrong = run(home, "csv", "detokenize", src, str(out), "--column", "Note")
    assert wrong.returncode == 1
    assert "every row (3) was rejected" in wrong.stderr
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "binary.csv",
        "book.xlsx",
        "empty.csv",
        "home",
        "out.csv.rejects.csv",
    ]


def _bulk_file(path: Path, rows: int, tag: str) -> None:
    with path.open("w") as fh:
        fh.write("Id,Email,Note\n")
        for i in range(rows):
            fh.write(f'{i},user.{tag}.{i}@example{i % 13}.com,"n {i}"\n')


def _spawned_workers(parent: int) -> list[int]:
    """The multiprocessing workers ``parent`` started (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            found.append(int(entry.name))
    return found


def _busy_with_workers(home: Path, tmp_path: Path, tag: str) -> tuple[subprocess.Popen[str], list[int]]:
    """`csv tokenize` of 120,000 new rows to tmp_path/out.csv in a session of its own, once its
    two workers have started and are busy; and their pids."""
    src = tmp_path / "big.csv"
    _bulk_file(src, 120_000, tag)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sendvault", "csv", "tokenize", str(src), str(tmp_path / "out.csv"),
         "--column", "Email=Email", "-q", "--workers", "2"],
        env={**os.environ, "SENDVAULT_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and proc.poll() is None and len(workers) < 2:
        workers = _spawned_workers(proc.pid)
        time.sleep(0.05)
    started = len(workers) == 2
    if started:
        time.sleep(0.5)  # past their start-up: busy with blocks
    if not started or proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail(f"the workers never started ({workers}) or the run ended first ({proc.poll()})")
    return proc, workers


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_stop_when_the_main_process_is_killed_alone(home: Path, tmp_path: Path) -> None:
    # SIGKILL to the main process only (not its group): its workers, which hold the vault's
    # keys, must not live on. They outlived it before: multiprocessing's queue pipes stay open.
    proc, workers = _busy_with_workers(home, tmp_path, "orphan")
    try:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
            time.sleep(0.05)
        alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
        assert not alive, f"workers {alive} outlived the killed main process"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_worker_killed_mid_run_is_one_error_line_and_the_run_is_audited(home: Path, tmp_path: Path) -> None:
    # A worker killed (or taken by the out-of-memory killer) was a traceback, and the run, whose
    # tokens were already committed, was missing from the audit log.
    out = tmp_path / "out.csv"
    proc, workers = _busy_with_workers(home, tmp_path, "worker")
    try:
        os.kill(workers[0], signal.SIGKILL)
        _, stderr = proc.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 1, stderr
    assert stderr.startswith("error: a worker process stopped before its part of the file was done"), stderr
    assert "no output was written" in stderr
    assert "Traceback" not in stderr
    assert not out.exists()
    shown = run(home, "audit", "show", "--json")
    assert '"exchange:tokenize"' in shown.stdout
    assert '"failed"' in shown.stdout


def test_a_kill_mid_run_leaves_no_output_and_a_rerun_gives_the_same_tokens(
    home: Path, tmp_path: Path
) -> None:
    src, out = tmp_path / "big.csv", tmp_path / "out.csv"
    rows = 50_000
    _bulk_file(src, rows, "kill")
    assert run(home, "token", "get", "--type", "email", "warm@example.com").returncode == 0
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sendvault",
            "csv",
            "tokenize",
            str(src),
            str(out),
            "--column",
            "Email=Email",
            "-q",
        ],
        env={**os.environ, "SENDVAULT_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its worker processes die with it
    )
    db = sqlite3.connect(home / "sendvault.db")
    deadline = time.monotonic() + 120
    created = 0
    while time.monotonic() < deadline and proc.poll() is None:
        created = db.execute("SELECT count(*) FROM contacts").fetchone()[0] - 1
        if created > 0:
            break
        time.sleep(0.02)
    db.close()
    assert proc.poll() is None, "finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert created > 0
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.csv", "home"]  # no temporary left

    vault = open_vault(load_settings(env={"SENDVAULT_HOME": str(home)}))
    values = [(Kind.EMAIL, f"user.kill.{i}@example{i % 13}.com") for i in range(rows)]
    before = [r.token for r in vault.tokenize_many(values, create=False)]
    vault.close()
    kept = sum(1 for t in before if t is not None)
    assert kept >= created

    again = run(
        home, "csv", "tokenize", str(src), str(out), "--column", "Email=Email", "--json", "--workers", "2"
    )
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["created"] == rows - kept
    # Workers took part unless this process converted everything before they had started.
    assert summary["workers"] in {0, 1, 2}
    tokens = [line.split(",")[1] for line in out.read_text().splitlines()[1:]]
    assert len(tokens) == rows
    assert all(b is None or a == b for a, b in zip(tokens, before, strict=True))
    assert len(set(tokens)) == rows


def test_a_stop_with_output_on_stdout_does_not_claim_nothing_was_written(home: Path, tmp_path: Path) -> None:
    # A file is never written half; stdout cannot be taken back, and the message says so.
    src = tmp_path / "mixed.csv"
    src.write_text(
        "Id,Email\n" + "".join(f"{i},{'ok.' if i % 2 else 'bad '}{i}@example.com\n" for i in range(40))
    )
    out = run(home, "csv", "tokenize", str(src), "-", "--column", "Email=Email", "--max-errors", "3")
    assert out.returncode == 1, out.stderr
    assert "more than --max-errors 3; stdout holds only part of the output: discard it" in out.stderr
    assert "no output was written" not in out.stderr
    to_file = run(home, "csv", "tokenize", str(src), str(tmp_path / "o.csv"), "--column", "Email=Email",
                  "--max-errors", "3")  # fmt: skip
    assert (to_file.returncode, "no output was written" in to_file.stderr) == (1, True), to_file.stderr
    assert not (tmp_path / "o.csv").exists()


@pytest.mark.parametrize(
    "when",
    [
        "before the output is in place",
        "while the output's folder is synced",
        "while the workers stop",
        "while the rejects are moved into place",
    ],
)
def test_ctrl_c_after_the_output_is_in_place_finishes_the_run(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], when: str
) -> None:
    # Ctrl-C while the workers stopped, after the output had been moved into place, said
    # "interrupted; no output was written" with the output there, complete, and the audit log
    # recorded the run as interrupted (the red team found two more such windows: the sync of
    # the output's folder, and the rejects' own move). Before the output is in place it is
    # still that.
    from sendvault.cli import cli
    from sendvault.exchange import _csvio, _rejects, convert

    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    rows = "".join(f"{i},{'bad ' if i == 3 else ''}u{i}@example.com\n" for i in range(50))
    src.write_text("Id,Email\n" + rows)

    def interrupt(*args: object) -> None:
        raise KeyboardInterrupt

    if when == "before the output is in place":
        monkeypatch.setattr(_csvio.AtomicOutput, "commit", interrupt)
    elif when == "while the output's folder is synced":
        real_sync = _csvio._sync_dir
        synced: list[Path] = []

        def sync_dir(folder: Path) -> None:  # the output's first, then the rejects'
            synced.append(folder)
            real_sync(folder)
            if len(synced) == 1:
                raise KeyboardInterrupt

        monkeypatch.setattr(_csvio, "_sync_dir", sync_dir)
    elif when == "while the workers stop":
        real_close = convert.Planner.close

        def close(self: convert.Planner) -> None:
            real_close(self)
            raise KeyboardInterrupt

        monkeypatch.setattr(convert.Planner, "close", close)
    else:  # a real Ctrl-C, while the rejects file is moved into place
        real_finish = _rejects.RejectsFile.finish

        def finish(self: _rejects.RejectsFile) -> None:
            os.kill(os.getpid(), signal.SIGINT)
            real_finish(self)

        monkeypatch.setattr(_rejects.RejectsFile, "finish", finish)
    monkeypatch.setenv("SENDVAULT_HOME", str(home))
    with pytest.raises(SystemExit) as exited:
        cli.main(["csv", "tokenize", str(src), str(out), "--column", "Email=Email"], prog_name="sendvault")
    monkeypatch.undo()
    stderr = capsys.readouterr().err
    record = json.loads(run(home, "audit", "show", "--json").stdout)[-1]
    rejects = tmp_path / "out.csv.rejects.csv"
    if when == "before the output is in place":
        assert exited.value.code == 130
        assert "interrupted; no output was written" in stderr
        assert not out.exists()
        assert not rejects.exists()
        assert record["meta"]["status"] == "interrupted"
        return
    assert exited.value.code == 0, stderr
    assert "tokenized 50 rows" in stderr
    assert len(out.read_text().splitlines()) == 50  # the header and 49 rows
    assert rejects.read_text().splitlines()[1:] == ["5,Email,invalid-email"]
    assert record["meta"]["status"] == "ok"
    assert record["meta"]["output_sha256"]  # also when the workers' stop was interrupted
    assert record["meta"]["input_sha256"]
    assert record["meta"]["seconds"] > 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_rejects_that_cannot_be_kept_end_the_run_as_failed_and_recorded(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from sendvault.cli import cli
    from sendvault.exchange import _rejects
    from sendvault.exchange._csvio import CsvProblem

    src, out = tmp_path / "in.csv", tmp_path / "out.csv"
    src.write_text("Id,Email\n1,u1@example.com\n2,bad\n")

    def finish(self: _rejects.RejectsFile) -> None:
        raise CsvProblem("out.csv.rejects.csv: is a directory")

    monkeypatch.setattr(_rejects.RejectsFile, "finish", finish)
    monkeypatch.setenv("SENDVAULT_HOME", str(home))
    with pytest.raises(SystemExit) as exited:
        cli.main(["csv", "tokenize", str(src), str(out), "--column", "Email=Email"], prog_name="sendvault")
    monkeypatch.undo()
    assert exited.value.code == 1
    assert "error: out.csv.rejects.csv: is a directory" in capsys.readouterr().err
    record = json.loads(run(home, "audit", "show", "--json").stdout)[-1]
    assert record["meta"]["status"] == "failed"


def _round_trip(home: Path, tmp_path: Path, data: bytes, *more: str) -> tuple[bytes, bytes]:
    """``data`` tokenized (with ``more`` options), checked and detokenized: the tokenized file's
    bytes and the detokenized file's."""
    src, out, back = tmp_path / "in.csv", tmp_path / "out.csv", tmp_path / "back.csv"
    src.write_bytes(data)
    made = run(home, "csv", "tokenize", str(src), str(out), "--column", "Email=Email", "-q", *more)
    assert made.returncode == 0, made.stderr
    checked = run(home, "exchange", "check", str(out))
    assert checked.returncode == 0, checked.stdout + checked.stderr
    again = run(home, "csv", "detokenize", str(out), str(back), "--column", "Email", "-q")
    assert again.returncode == 0, again.stderr
    return out.read_bytes(), back.read_bytes()


_TEXT = "Id,Email\r\n1,Ann@Example.com\r\n2,b\u00e9@example.org\r\n"
_NORMALIZED = "Id,Email\r\n1,ann@example.com\r\n2,b\u00e9@example.org\r\n"


@pytest.mark.parametrize(
    ("data", "option", "written", "bom"),
    [
        (_TEXT.encode("utf-16"), None, "utf-16", b"\xff\xfe"),
        (b"\xfe\xff" + _TEXT.encode("utf-16-be"), None, "utf-16", b"\xff\xfe"),
        (_TEXT.encode("utf-8"), "utf-32", "utf-32", b"\xff\xfe\x00\x00"),
    ],
    ids=["utf-16-le-in", "utf-16-be-in", "utf-32-out"],
)
def test_utf16_and_utf32_outputs_start_with_their_bom_and_come_back(
    home: Path, tmp_path: Path, data: bytes, option: str | None, written: str, bom: bytes
) -> None:
    # The output of a UTF-16 file went out without a BOM: neither its byte order nor that it is
    # text could be told, and `exchange check` and `csv detokenize` refused it as binary data.
    # A UTF-32 file was read as UTF-16 (its BOM starts like UTF-16's). Little-endian after the
    # BOM, the order Python's codecs write.
    out, back = _round_trip(home, tmp_path, data, *(["--output-encoding", option] if option else []))
    assert out.startswith(bom)
    assert out.count(bom) == 1
    assert out.decode(written).splitlines()[0] == "Id,Email"  # the codec takes its BOM off
    assert back.decode(written) == _NORMALIZED


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_outputs_in_a_codec_without_bom_are_read_back_without_being_told(
    home: Path, tmp_path: Path, codec: str
) -> None:
    # --output-encoding utf-16-le wrote what it was asked (no BOM), and then exchange check (no
    # --encoding option) and csv detokenize refused it as binary data: where the NULs are says it.
    out, back = _round_trip(home, tmp_path, _TEXT.encode("utf-8"), "--output-encoding", codec)
    assert not out.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff"))
    assert back.decode(codec) == _NORMALIZED


@pytest.mark.parametrize("codec", ["utf-16", "utf-32"])
def test_utf16_named_for_a_file_without_bom_is_one_error_with_a_hint(
    home: Path, tmp_path: Path, codec: str
) -> None:
    # It was a UnicodeError traceback ("UTF-16 stream does not start with BOM").
    src = tmp_path / "in.csv"
    src.write_text("Id,Email\r\n1,ann@example.com\r\n", encoding="utf-8")
    made = run(
        home,
        "csv",
        "tokenize",
        str(src),
        str(tmp_path / "out.csv"),
        "--column",
        "Email=Email",
        "--encoding",
        codec,
    )
    assert made.returncode == 2, made.stderr
    assert "Traceback" not in made.stderr
    assert made.stderr.startswith(f"error: the file does not read as {codec} ")
    assert f"--encoding {codec}-le or {codec}-be" in made.stderr
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize(
    ("env", "warned"),
    [
        ({"SENDVAULT_SQLITE_BULK_LOCK_SECONDS": "15"}, True),  # held to 2.5 s by the 10 s default
        ({"SENDVAULT_SQLITE_BULK_LOCK_SECONDS": "15", "SENDVAULT_SQLITE_BUSY_TIMEOUT_MS": "60000"}, False),
        ({"SENDVAULT_SQLITE_BULK_LOCK_SECONDS": "2.5"}, False),
        ({}, False),
    ],
)
def test_a_bulk_lock_the_busy_timeout_holds_back_is_a_warning(
    home: Path, tmp_path: Path, env: dict[str, str], warned: bool
) -> None:
    src = tmp_path / "in.csv"
    src.write_text("Email\na@example.com\n")
    args = ["csv", "tokenize", str(src), str(tmp_path / "out.csv"), "--column", "Email=Email"]
    done = run(home, *args, env=env)
    assert done.returncode == 0, done.stderr
    said = "warning: sqlite_bulk_lock_seconds 15 takes effect as 2.5 s, a quarter of sqlite_busy_timeout_ms"
    assert (said in done.stderr) == warned, done.stderr
    if warned:
        assert "SENDVAULT_SQLITE_BUSY_TIMEOUT_MS=60000" in done.stderr
    quiet = run(home, *args, "-q", env=env)
    assert quiet.returncode == 0
    assert quiet.stderr == ""
    checked = run(home, "config", "check", "--no-ports", "--dev", env=env)
    said = "warning  settings        sqlite_bulk_lock_seconds 15"
    assert (said in checked.stdout) == warned, checked.stdout
