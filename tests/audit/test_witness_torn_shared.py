"""A file witness torn by a crash mid-write, and one witness shared by two logs (replicas).

Found by the red-team round: a partial last line made every writer start end in a traceback (and
a writer that appended glued its head onto the partial line); two replicas writing their heads
to one witness made each other's start look like a rollback. Against real logs on disk and the
real CLI and server.
"""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from tests.helpers import run_cli
from tests.server.conftest import free_port, start_dev_server, stop_dev_server
from tests.server.helpers import auth_header, https_request


def _env(witness: str) -> dict[str, str]:
    return {"SENDVAULT_AUDIT_WITNESS": witness}


def _verify(home: Path, witness: str) -> tuple[int, list[str]]:
    out = run_cli(
        home,
        "audit",
        "verify",
        "--public-key",
        str(home / "keys" / "audit-signing.pub"),
        "--witness",
        witness,
    )
    assert "Traceback" not in out.stderr
    return out.returncode, out.stderr.strip().splitlines()


def _clients(home: Path) -> list[str]:
    db = sqlite3.connect(home / "sendvault.db")
    try:
        return sorted(str(r[0]) for r in db.execute("SELECT client_id FROM api_clients"))
    finally:
        db.close()


# -- a torn last line ---------------------------------------------------------------------------


def _torn(tmp_path: Path) -> tuple[Path, Path, str, int]:
    home, path = tmp_path / "home", tmp_path / "elsewhere" / "heads.jsonl"
    path.parent.mkdir()
    url = f"file://{path}"
    for name in ("a", "b"):
        assert run_cli(home, "clients", "add", name, env=_env(url)).returncode == 0
    whole = path.stat().st_size
    assert path.read_bytes().count(b"\n") == 2
    with path.open("ab") as fh:
        fh.write(b'{"type":"head","seq":3,"hash":"q0')  # the crash: no newline, no end
    return home, path, url, whole


def test_verify_names_a_torn_witness_line_in_one_error_line_with_a_hint(tmp_path: Path) -> None:
    home, path, url, whole = _torn(tmp_path)
    code, lines = _verify(home, url)
    assert code == 2
    assert lines == [
        f"error: witness {url}: line 3 is torn (cut short without its newline, a crash mid-write)",
        (
            "hint: the lines before it are whole; check it, then as the file's owner keep them:"
            f" truncate -s {whole} {path} (the next checkpoint is witnessed again)"
        ),
    ]
    os.truncate(path, whole)  # what the hint says
    assert _verify(home, url)[0] == 0


def test_a_writer_refuses_to_start_on_a_torn_witness_and_appends_nothing(tmp_path: Path) -> None:
    home, path, url, _ = _torn(tmp_path)
    before = path.read_bytes()
    out = run_cli(home, "clients", "add", "c", env=_env(url))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2, out.stderr
    assert (
        lines[0] == f"error: witness {url}: line 3 is torn (cut short without its newline, a crash mid-write)"
    )
    assert lines[1].startswith("hint: the lines before it are whole")
    assert path.read_bytes() == before  # no head glued onto the partial line
    assert _clients(home) == ["a", "b"]


def test_serve_refuses_to_start_on_a_torn_witness_in_one_line(tmp_path: Path) -> None:
    home, path, url, _ = _torn(tmp_path)
    before = path.read_bytes()
    ports = [str(free_port()) for _ in range(3)]
    out = run_cli(
        home,
        "serve",
        "--dev",
        "--host",
        "127.0.0.1",
        "--https-port",
        ports[0],
        "--http-port",
        ports[1],
        "--admin-port",
        ports[2],
        env=_env(url),
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: witness {url}: line 3 is torn (cut short without its newline, a crash mid-write)"
    ]
    assert path.read_bytes() == before


# -- one witness, two logs ----------------------------------------------------------------------


def test_two_writers_on_one_witness_file_the_second_is_refused_and_verify_picks_its_own(
    tmp_path: Path,
) -> None:
    path = tmp_path / "elsewhere" / "heads.jsonl"
    path.parent.mkdir()
    url = f"file://{path}"
    first, second = tmp_path / "replica-a", tmp_path / "replica-b"
    assert run_cli(first, "clients", "add", "a", env=_env(url)).returncode == 0
    out = run_cli(second, "clients", "add", "b", env=_env(url))
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2, out.stderr
    assert "holds the heads of another audit log" in lines[0]
    assert "give each replica its own witness path" in lines[0]
    assert lines[1].startswith("hint: run `sendvault audit verify`")
    assert not (second / "sendvault.db").exists()  # nothing was made, no client added
    logs = {json.loads(line)["log"] for line in path.read_text().splitlines()}
    assert len(logs) == 1  # only the first log's heads, each naming it
    assert run_cli(first, "clients", "add", "a2", env=_env(url)).returncode == 0
    assert _verify(first, url)[0] == 0
    code, err = _verify(second, url)
    assert code == 1
    assert "holds no head of this audit log" in err[0]
    # Each replica with its own witness path: both run.
    own = f"file://{tmp_path / 'elsewhere' / 'replica-b.jsonl'}"
    assert run_cli(second, "clients", "add", "b", env=_env(own)).returncode == 0
    assert _verify(second, own)[0] == 0


def test_two_writers_on_one_postgresql_witness_the_second_is_refused(tmp_path: Path, pg_url: str) -> None:
    first, second = tmp_path / "replica-a", tmp_path / "replica-b"
    assert run_cli(first, "clients", "add", "a", env=_env(pg_url)).returncode == 0
    out = run_cli(second, "clients", "add", "b", env=_env(pg_url))
    assert out.returncode == 1
    assert "give each replica its own witness path" in out.stderr
    assert "Traceback" not in out.stderr
    assert _verify(first, pg_url)[0] == 0


def test_a_second_server_on_a_shared_witness_answers_503_while_the_first_serves(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "heads.jsonl"
    path.parent.mkdir()
    env = {**_env(f"file://{path}"), "SENDVAULT_AUDIT_CHECKPOINT_SECONDS": "0.2"}
    # Replica b ran first with a witness of its own; then it is pointed at a's.
    own = {**env, **_env(f"file://{tmp_path / 'elsewhere' / 'b.jsonl'}")}
    stop_dev_server(start_dev_server(tmp_path / "replica-b" / "home", env=own))
    first = start_dev_server(tmp_path / "replica-a" / "home", env=env)
    try:
        auth = {"authorization": auth_header(first), "content-type": "application/json"}
        assert https_request(first, "POST", "/v1/mc/resolve", {"tokens": []}, auth)[0] == 200
        second = start_dev_server(tmp_path / "replica-b" / "home", env=env, wait_healthy=False)
        try:
            other = {"authorization": auth_header(second), "content-type": "application/json"}
            assert https_request(second, "POST", "/v1/mc/resolve", {"tokens": []}, other)[0] == 503
            status, _, body = https_request(second, "GET", "/healthz")
            assert (status, json.loads(body)["audit"]) == (503, "stopped")
            assert https_request(first, "POST", "/v1/mc/resolve", {"tokens": []}, auth)[0] == 200
        finally:
            output = stop_dev_server(second)
        assert "give each replica its own witness path" in output
    finally:
        stop_dev_server(first)


def test_a_log_deleted_and_started_again_with_its_heads_appended_to_the_witness_is_broken(
    tmp_path: Path,
) -> None:
    # The insider cannot rewrite an append-only witness, but can append to it: they delete the
    # log, start a new one on a witness of their own, and copy its heads onto the real one.
    home, path = tmp_path / "home", tmp_path / "elsewhere" / "heads.jsonl"
    path.parent.mkdir()
    url = f"file://{path}"
    for name in ("a", "b"):
        assert run_cli(home, "clients", "add", name, env=_env(url)).returncode == 0
    assert _verify(home, url)[0] == 0
    for name in ("audit.db", "audit.db-wal", "audit.db-shm"):
        (home / name).unlink(missing_ok=True)
    theirs = tmp_path / "theirs.jsonl"
    assert run_cli(home, "clients", "add", "evil", env=_env(f"file://{theirs}")).returncode == 0
    with path.open("ab") as fh:
        fh.write(theirs.read_bytes())
    code, err = _verify(home, url)
    assert code == 1
    assert "holds another audit log's heads" in err[0]
    assert "beside this log's" in err[0]
    # The writer refuses that witness too (it never writes a head beside another log's).
    out = run_cli(home, "clients", "add", "c", env=_env(url))
    assert out.returncode == 1
    assert "holds the heads of another audit log" in out.stderr
