"""Witnessed heads: every checkpoint also written where the insider is not, and verify against it.

Real witnesses: an append-only file on another path, a table in a fresh PostgreSQL schema, a UDP
syslog listener. Each attack is made on the real log on disk: rollback to an older copy, a cut
tail with an older head pasted back, a deleted log, a forged witness line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from pathlib import Path

import pytest
from tests.audit.conftest import fill
from tests.audit.tamper import cut_tail, head_row
from tests.helpers import run_cli

from sendvault.audit import AuditLog, Event, load_public_key, open_audit, parse_head, witnessed_heads
from sendvault.audit.store import check_signature
from sendvault.audit.witness import PostgresWitness
from sendvault.config import Settings, load_settings
from sendvault.errors import AuditTampered, AuditUnavailable


def _settings(home: Path, witness: str, **env: str) -> Settings:
    return load_settings(env={"SENDVAULT_HOME": str(home), "SENDVAULT_AUDIT_WITNESS": witness, **env})


def _trusted(home: Path, tmp_path: Path) -> str:
    """The public key copied out of the folder, as an operator keeps it."""
    out = tmp_path / "trusted.pub"
    if not out.exists():
        shutil.copy(home / "keys" / "audit-signing.pub", out)
    return str(out)


def _write(settings: Settings, count: int, start: int = 0) -> None:
    log = open_audit(settings)
    fill(log, count, start)
    log.close()


def _copy_log(home: Path, to: Path) -> None:
    to.mkdir()
    for name in ("audit.db", "audit.db-wal", "audit.db-shm"):
        if (home / name).exists():
            shutil.copy(home / name, to / name)


def _restore_log(backup: Path, home: Path) -> None:
    for name in ("audit.db", "audit.db-wal", "audit.db-shm"):
        (home / name).unlink(missing_ok=True)
        if (backup / name).exists():
            shutil.copy(backup / name, home / name)


def _verify(home: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    out = run_cli(home, "audit", "verify", "--public-key", _trusted(home, tmp_path), *args, env=env)
    return out.returncode, out.stdout + out.stderr


def _export(home: Path, to: Path) -> None:
    out = run_cli(home, "audit", "export", "--output", str(to))
    assert out.returncode == 0, out.stderr


@pytest.fixture
def file_witness(tmp_path: Path) -> tuple[str, Path]:
    other = tmp_path / "elsewhere"  # another path (in production: another mount or host)
    other.mkdir()
    path = other / "heads.jsonl"
    return f"file://{path}", path


def test_every_writer_leaves_its_records_under_a_witnessed_head(
    tmp_path: Path, file_witness: tuple[str, Path]
) -> None:
    url, path = file_witness
    home = tmp_path / "home"
    settings = _settings(home, url)
    _write(settings, 3)
    _write(settings, 2, start=3)
    heads = [parse_head(line) for line in path.read_text().splitlines()]
    assert heads[-1].seq == 5 == head_row(home / "audit.db")[0]
    code, out = _verify(home, tmp_path, "--witness", url)
    assert code == 0, out
    assert "witnessed:" in out
    assert "newest record 5" in out
    # The configured witness is used by default.
    code, out = _verify(home, tmp_path, env={"SENDVAULT_AUDIT_WITNESS": url})
    assert code == 0, out
    assert "newest record 5" in out, out


def test_a_rollback_to_an_older_copy_is_caught_by_the_witness(
    tmp_path: Path, file_witness: tuple[str, Path]
) -> None:
    url, _ = file_witness
    home = tmp_path / "home"
    settings = _settings(home, url)
    _write(settings, 4)
    _copy_log(home, tmp_path / "backup")
    _write(settings, 3, start=4)
    _restore_log(tmp_path / "backup", home)
    # Without the witness the older copy is consistent and verifies: that is the attack.
    assert _verify(home, tmp_path, "--public-key", _trusted(home, tmp_path))[0] == 0
    code, out = _verify(home, tmp_path, "--witness", url)
    assert code == 1, out
    assert "before the known head (record 7)" in out
    # A writer started on the rolled-back log refuses to extend it.
    log = open_audit(settings)
    with pytest.raises(AuditUnavailable, match="rolled back"):
        log.record_sync(Event.KEY_ROTATE, actor="cli:test", timeout=5)
    log.close()


def test_a_cut_tail_with_an_older_head_pasted_back_is_caught_by_the_witness(
    tmp_path: Path, file_witness: tuple[str, Path]
) -> None:
    url, _ = file_witness
    home = tmp_path / "home"
    settings = _settings(home, url)
    _write(settings, 3)
    older = head_row(home / "audit.db")
    _write(settings, 3, start=3)
    cut_tail(home / "audit.db", 3, older)
    assert _verify(home, tmp_path)[0] == 0  # consistent on its own
    code, out = _verify(home, tmp_path, "--witness", url)
    assert code == 1, out
    assert "rolled back or truncated" in out, out


def test_an_export_is_verified_against_its_logs_witness(
    tmp_path: Path, file_witness: tuple[str, Path]
) -> None:
    # An export names no log; the witness's heads are its log's, and its chain must hold them.
    # (Every witness of a named log made `verify --file --witness` report BROKEN, sound or not.)
    url, _ = file_witness
    home = tmp_path / "home"
    settings = _settings(home, url)
    _write(settings, 3)
    older = tmp_path / "older.jsonl"
    _export(home, older)
    _write(settings, 2, start=3)
    current = tmp_path / "current.jsonl"
    _export(home, current)
    code, out = _verify(home, tmp_path, "--file", str(current), "--witness", url)
    assert code == 0, out
    assert "witnessed: 2 head(s), newest record 5" in out
    # The configured witness is used too.
    code, out = _verify(home, tmp_path, "--file", str(current), env={"SENDVAULT_AUDIT_WITNESS": url})
    assert (code, "newest record 5" in out) == (0, True), out
    # An older export is consistent on its own; the witness knows the log went further.
    assert _verify(home, tmp_path, "--file", str(older), env={"SENDVAULT_AUDIT_WITNESS": ""})[0] == 0
    code, out = _verify(home, tmp_path, "--file", str(older), "--witness", url)
    assert code == 1, out
    assert "before the known head (record 5)" in out, out
    # Another log's export does not pass for this one.
    other_home = tmp_path / "other"
    _write(_settings(other_home, f"file://{tmp_path / 'other-heads.jsonl'}"), 5)
    other = tmp_path / "other.jsonl"
    (tmp_path / "o").mkdir()
    _export(other_home, other)
    out = run_cli(home, "audit", "verify", "--public-key", _trusted(other_home, tmp_path / "o"),
                  "--file", str(other), "--witness", url)  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    assert "BROKEN at record 3: known head signature does not verify" in out.stderr
    # Witnesses of two logs cannot say which one an export is.
    code, out = _verify(
        home, tmp_path, "--file", str(current), "--witness", url,
        "--witness", f"file://{tmp_path / 'other-heads.jsonl'}",
    )  # fmt: skip
    assert code == 1, out
    assert "hold the heads of 2 audit logs" in out, out


def test_a_deleted_log_is_not_restarted_over_a_witness(
    tmp_path: Path, file_witness: tuple[str, Path]
) -> None:
    url, _ = file_witness
    home = tmp_path / "home"
    settings = _settings(home, url)
    _write(settings, 3)
    for name in ("audit.db", "audit.db-wal", "audit.db-shm"):
        (home / name).unlink(missing_ok=True)
    code, out = _verify(home, tmp_path, "--witness", url)
    assert code == 2, out
    assert "no audit log" in out, out
    # A writer would make a new, empty log: the witness says the log reached record 3.
    log = open_audit(settings)
    with pytest.raises(AuditUnavailable, match="rolled back"):
        log.record_sync(Event.KEY_ROTATE, actor="cli:test", timeout=5)
    log.close()
    code, out = _verify(home, tmp_path, "--witness", url)
    assert code == 1, out


def test_a_forged_head_in_the_witness_breaks_verification(
    tmp_path: Path, file_witness: tuple[str, Path]
) -> None:
    url, path = file_witness
    home = tmp_path / "home"
    _write(_settings(home, url), 2)
    doc = json.loads(path.read_text().splitlines()[-1])
    doc["seq"] = 99
    with path.open("a") as fh:
        fh.write(json.dumps(doc) + "\n")
    code, out = _verify(home, tmp_path, "--witness", url)
    assert code == 1, out
    assert "known head signature does not verify" in out, out
    with path.open("a") as fh:
        fh.write("not a head\n")
    code, out = _verify(home, tmp_path, "--witness", url)
    assert code == 2, out
    assert "is not a signed head" in out, out


def test_a_witness_that_cannot_be_written_stops_the_log_until_it_can(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet"
    home = tmp_path / "home"
    settings = _settings(home, f"file://{missing}/heads.jsonl", SENDVAULT_AUDIT_CHECKPOINT_RECORDS="2")
    log = open_audit(settings)
    log.record_sync(Event.KEY_ROTATE, actor="cli:test")
    log.record_sync(Event.KEY_ROTATE, actor="cli:test")  # a checkpoint: the witness is owed it
    with pytest.raises(AuditUnavailable, match="witness"):
        _refused_within(log, 5)
    missing.mkdir()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the writer gives the witness its head every second
        try:
            log.check()
            break
        except AuditUnavailable:
            time.sleep(0.05)
    log.check()
    log.close()
    assert parse_head((missing / "heads.jsonl").read_text().splitlines()[0]).seq == 2


def _refused_within(log: AuditLog, seconds: float) -> None:
    """Return once ``log.check()`` raises (it then propagates); fail after ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        log.check()
        time.sleep(0.02)
    raise AssertionError("the log kept accepting records")


def test_witnessed_heads_in_postgresql(tmp_path: Path, pg_url: str) -> None:
    home = tmp_path / "home"
    settings = _settings(home, pg_url)
    _write(settings, 3)
    _copy_log(home, tmp_path / "backup")
    _write(settings, 2, start=3)
    assert [m.seq for m in witnessed_heads([pg_url])] == [3, 5]
    assert _verify(home, tmp_path, "--witness", pg_url)[0] == 0
    _restore_log(tmp_path / "backup", home)
    code, out = _verify(home, tmp_path, "--witness", pg_url)
    assert code == 1, out
    assert "rolled back or truncated" in out, out


def test_a_postgresql_witness_names_no_password() -> None:
    witness = PostgresWitness("postgresql://sv:s3cret@127.0.0.1:1/x")
    assert "s3cret" not in witness.name
    with pytest.raises(AuditUnavailable) as caught:
        witness.send(parse_head(json.dumps({"type": "head", "seq": 1, "hash": "", "sig": "", "ts_us": 0})))
    assert "s3cret" not in str(caught.value)


def test_heads_go_to_syslog_and_a_syslog_witness_cannot_be_read_back(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.settimeout(10)
        port = listener.getsockname()[1]
        home = tmp_path / "home"
        _write(_settings(home, f"syslog://127.0.0.1:{port}"), 2)
        data = listener.recv(65536).decode()
    prefix = "<134>sendvault-audit: "
    assert data.startswith(prefix)
    head = parse_head(data.removeprefix(prefix))
    assert head.seq == 2
    check_signature(
        load_public_key(_trusted(home, tmp_path)), "head", head.seq, head.hash, head.sig, ts_us=head.ts_us
    )
    out = run_cli(
        home,
        "audit",
        "verify",
        "--public-key",
        _trusted(home, tmp_path),
        "--witness",
        f"syslog://127.0.0.1:{port}",
    )
    assert out.returncode == 2, out.stderr
    assert "write-only" in out.stderr, out.stderr


def test_a_rolled_back_log_stops_a_writer_even_after_others_appended(
    tmp_path: Path, file_witness: tuple[str, Path]
) -> None:
    """A fork: roll back, then append new records beyond the witnessed head without the key."""
    url, _ = file_witness
    home = tmp_path / "home"
    settings = _settings(home, url)
    _write(settings, 2)
    _copy_log(home, tmp_path / "backup")
    _write(settings, 2, start=2)
    _restore_log(tmp_path / "backup", home)
    # The insider, without the witness's say, writes new records with a writer of their own
    # (no witness configured): a fork at record 3.
    _write(load_settings(env={"SENDVAULT_HOME": str(home)}), 4, start=50)
    code, out = _verify(home, tmp_path, "--witness", url)
    assert code == 1, out
    assert "differs from the known head" in out, out
    log = open_audit(settings)
    with pytest.raises(AuditTampered):
        log.store.append([])
    log.close()


def test_a_bundle_checks_each_replicas_export_against_that_replicas_witness(tmp_path: Path) -> None:
    homes = {name: tmp_path / name for name in ("a", "b")}
    urls = {name: f"file://{tmp_path / f'{name}-heads.jsonl'}" for name in homes}
    for name, home in homes.items():
        _write(_settings(home, urls[name]), 3)
    older = tmp_path / "a-older.jsonl"
    _export(homes["a"], older)
    _write(_settings(homes["a"], urls["a"]), 2, start=3)
    exports = []
    for name, home in homes.items():
        out = tmp_path / f"{name}.jsonl"
        _export(home, out)
        exports.append(str(out))
    keys = [x for name, home in homes.items()
            for x in ("--public-key", f"{name}={_trusted(home, tmp_path / name)}")]  # fmt: skip
    seen = [x for name in homes for x in ("--witness", f"{name}={urls[name]}")]

    def verify_bundle(*exported: str, extra: tuple[str, ...] = ()) -> tuple[int, str]:
        bundle = tmp_path / "bundle.jsonl"
        bundle.unlink(missing_ok=True)
        merged = run_cli(homes["a"], "audit", "merge", *exported, "--name", "a", "--name", "b",
                         "--output", str(bundle))  # fmt: skip
        assert merged.returncode == 0, merged.stderr
        out = run_cli(homes["a"], "audit", "verify-bundle", str(bundle), *keys, *extra)
        return out.returncode, out.stdout + out.stderr

    code, out = verify_bundle(*exports, extra=(*seen, "--json"))
    assert code == 0, out
    doc = json.loads(out)
    assert [s.get("witnessed") for s in doc["sources"]] == [
        {"heads": 2, "newest": 5},
        {"heads": 1, "newest": 3},
    ]
    code, out = verify_bundle(*exports, extra=tuple(seen))
    assert code == 0, out
    assert "a: intact, records 1..5 (5), signed head, witnessed: 2 head(s), newest record 5" in out
    # Replica a's older export is consistent on its own; only its witness tells.
    assert verify_bundle(str(older), exports[1])[0] == 0
    code, out = verify_bundle(str(older), exports[1], extra=tuple(seen))
    assert code == 1, out
    assert "source 'a'" in out, out
    assert "before the known head (record 5)" in out, out
    # Witnesses swapped between replicas: neither export holds the other's heads.
    swapped = ("--witness", f"a={urls['b']}", "--witness", f"b={urls['a']}")
    assert verify_bundle(*exports, extra=swapped)[0] == 1
    # A witness for no source, or not NAME=URL, is refused.
    code, out = verify_bundle(*exports, extra=("--witness", f"c={urls['a']}"))
    assert (code, "no source named 'c' in the bundle (it holds 'a', 'b')" in out) == (2, True), out
    code, out = verify_bundle(*exports, extra=("--witness", urls["a"]))
    assert (code, "is not NAME=URL" in out) == (2, True), out


def test_a_pipe_or_device_as_witness_is_refused_not_waited_on(
    tmp_path: Path, file_witness: tuple[str, Path]
) -> None:
    # Read whole, a FIFO would wait for a writer forever and /dev/zero never end.
    url, _ = file_witness
    home = tmp_path / "home"
    _write(_settings(home, url), 2)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for witness in (f"file://{fifo}", "file:///dev/zero"):
        code, out = _verify(home, tmp_path, "--witness", witness)
        assert code == 2, out
        assert "not a regular file" in out, out
        assert "Traceback" not in out


@pytest.mark.parametrize(("field", "value"), [("seq", 10**30), ("seq", -1), ("ts_us", 10**30)])
def test_numbers_out_of_range_in_a_head_are_a_bad_line_not_a_traceback(
    tmp_path: Path, file_witness: tuple[str, Path], field: str, value: int
) -> None:
    url, path = file_witness
    home = tmp_path / "home"
    _write(_settings(home, url), 2)
    export = tmp_path / "export.jsonl"
    _export(home, export)
    # In a witness line: the witness is unusable (exit 2).
    line = json.loads(path.read_text().splitlines()[-1])
    line[field] = value
    forged = tmp_path / "forged.jsonl"
    forged.write_text(json.dumps(line) + "\n")
    code, out = _verify(home, tmp_path, "--file", str(export), "--witness", f"file://{forged}")
    assert (code, "line 1 is not a signed head" in out, "Traceback" in out) == (2, True, False), out
    # In an export's head line: the export is broken (exit 1).
    lines = export.read_text().splitlines()
    head = json.loads(lines[-1])
    head[field] = value
    export.write_text("\n".join([*lines[:-1], json.dumps(head)]) + "\n")
    code, out = _verify(home, tmp_path, "--file", str(export), env={"SENDVAULT_AUDIT_WITNESS": ""})
    assert (code, "malformed export" in out, "Traceback" in out) == (1, True, False), out


def test_configured_witnesses_that_hold_no_head_yet_are_said_to_have_checked_nothing(
    tmp_path: Path, file_witness: tuple[str, Path]
) -> None:
    url, _ = file_witness
    home = tmp_path / "home"
    _write(_settings(home, url), 2)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = run_cli(home, "audit", "verify", "--public-key", _trusted(home, tmp_path), "--json",
                  env={"SENDVAULT_AUDIT_WITNESS": f"file://{empty}"})  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "witnessed" not in json.loads(out.stdout)
    assert "note: the configured witnesses hold no head yet: nothing was checked against them" in out.stderr
