"""Backup and restore round trip (key material handled explicitly) and bulk erasure that leaves
nothing of the contact in the database file."""

from __future__ import annotations

import base64
import json
import os
import threading
from pathlib import Path

from tests.helpers import run_cli

from sendvault.config import load_settings
from sendvault.vault import Kind, open_vault


def _tokens(home: Path, values: list[str], env: dict[str, str] | None = None) -> list[str]:
    done = run_cli(home, "token", "get", "--type", "email", "-", stdin="\n".join(values) + "\n", env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_backup_while_writing_then_restore_resolves_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    values = [f"b{i}@example.com" for i in range(2000)]
    tokens = _tokens(home, values)
    assert run_cli(home, "contact", "attrs", "set", tokens[0], "FirstName=Ann").returncode == 0
    settings = load_settings(env={"SENDVAULT_HOME": str(home)})
    writer = open_vault(settings)
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            writer.tokenize_many([(Kind.EMAIL, f"during{n}.{i}@example.com") for i in range(50)])
            n += 1

    thread = threading.Thread(target=write)
    thread.start()
    try:
        done = run_cli(home, "backup", str(tmp_path / "vault.backup"), "--json")
    finally:
        stop.set()
        thread.join()
        writer.close()
    assert done.returncode == 0, done.stderr
    assert "holds no key-encryption key" in done.stderr
    out = tmp_path / "vault.backup"
    assert out.stat().st_mode & 0o777 == 0o600
    assert json.loads(done.stdout)["tokens"] >= 2000
    # The backup holds no KEK: the master key file is not in it.
    kek = (home / "keys" / "master.key").read_bytes().strip()
    assert base64.b64decode(kek) not in out.read_bytes()

    # A new host: the database is lost, the KEK was kept apart.
    other = tmp_path / "other"
    (other / "keys").mkdir(parents=True, mode=0o700)
    (other / "keys" / "master.key").write_bytes((home / "keys" / "master.key").read_bytes())
    (other / "keys" / "master.key").chmod(0o600)
    restored = run_cli(other, "restore", str(out))
    assert restored.returncode == 0, restored.stderr
    resolved = run_cli(other, "token", "resolve", "-", stdin="\n".join(tokens) + "\n")
    assert resolved.stdout.split() == values
    attrs = run_cli(other, "contact", "attrs", "get", tokens[0])
    assert attrs.stdout.strip() == "FirstName=Ann"
    assert _tokens(other, values[:10]) == tokens[:10]
    shown = run_cli(home, "audit", "show", "--json").stdout
    assert '"vault:backup"' in shown


def test_restore_without_the_kek_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _tokens(home, ["x@example.com"])
    assert run_cli(home, "backup", str(tmp_path / "b.db")).returncode == 0
    other = tmp_path / "other"
    wrong = {"SENDVAULT_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    refused = run_cli(other, "restore", str(tmp_path / "b.db"), env=wrong)
    assert refused.returncode == 1
    assert "does not open this backup's keys" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (other / "sendvault.db").exists()
    again = run_cli(home, "backup", str(tmp_path / "b.db"))
    assert again.returncode == 1
    assert "exists" in again.stderr
    for name, content in (("text.db", b"not a database at all\n" * 100), ("empty.db", b"")):
        (tmp_path / name).write_bytes(content)
        bad = run_cli(other, "restore", str(tmp_path / name), env=wrong)
        assert bad.returncode == 1
        assert "is not a sendvault backup" in bad.stderr
        assert "Traceback" not in bad.stderr


def test_postgres_backup_says_to_use_pg_dump_and_restore_checks_the_file(tmp_path: Path, pg_url: str) -> None:
    env = {"SENDVAULT_DATABASE_URL": pg_url}
    home = tmp_path / "home"
    done = run_cli(home, "backup", str(tmp_path / "out"), env=env)
    assert done.returncode == 1
    assert "pg_dump" in done.stderr
    not_a_dump = tmp_path / "notes.txt"
    not_a_dump.write_text("hello\n")
    refused = run_cli(home, "restore", str(not_a_dump), env=env)
    assert refused.returncode == 1
    assert "not a pg_dump file" in refused.stderr
    dump = tmp_path / "vault.dump"
    dump.write_bytes(b"PGDMP\x01\x0e\x00" + b"\0" * 100)
    told = run_cli(home, "restore", str(dump), env=env)
    assert told.returncode == 1
    assert "pg_restore" in told.stderr


def test_erase_file_erases_tokens_and_values_and_leaves_nothing_in_the_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    values = [f"gone{i}@example.com" for i in range(20)] + [f"kept{i}@example.com" for i in range(20)]
    tokens = _tokens(home, values)
    for token in tokens[:20]:
        assert run_cli(home, "contact", "attrs", "set", token, f"Secret=attr-{token[:8]}").returncode == 0
    db = home / "sendvault.db"
    settings = load_settings(env={"SENDVAULT_HOME": str(home)})
    vault = open_vault(settings)
    try:
        rows = vault.store.fetch_by_tokens(tokens[:20])
        bidx = {b: t for b, t in _bidx(db).items() if t in set(tokens[:20])}
    finally:
        vault.close()
    ciphertexts = [ct for row in rows for ct in row[2:] if ct is not None]
    assert len(ciphertexts) == 40
    assert len(bidx) == 20
    # Half the list as tokens, half as values, plus an unknown line and a repeat.
    listing = tokens[:10] + values[10:20] + ["nobody@example.com", tokens[0], "# a comment", ""]
    (tmp_path / "list.txt").write_text("\n".join(listing) + "\n")
    done = run_cli(home, "erase", "--file", str(tmp_path / "list.txt"), "--json")
    assert done.returncode == 0, done.stderr
    outcomes = [json.loads(line)["outcome"] for line in done.stdout.splitlines()]
    assert outcomes == ["erased"] * 20 + ["unknown", "already-erased"]
    assert "22 line(s): 1 already-erased, 20 erased, 1 unknown" in done.stderr
    raw = db.read_bytes() + (Path(f"{db}-wal").read_bytes() if Path(f"{db}-wal").exists() else b"")
    for secret in ciphertexts + list(bidx):
        assert secret not in raw
    resolved = run_cli(home, "token", "resolve", "-", stdin="\n".join(tokens) + "\n").stdout.split()
    assert resolved == ["-"] * 20 + values[20:]
    shown = json.loads(run_cli(home, "audit", "show", "--json").stdout)
    erasures = [r for r in shown if r.get("event") == "contact:erase"]
    assert len(erasures) == 22


def _bidx(db: Path) -> dict[bytes, str]:
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        return {
            bytes(b): t for b, t in conn.execute("SELECT bidx, token FROM contacts WHERE bidx IS NOT NULL")
        }
    finally:
        conn.close()


def test_erase_file_problems_are_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _tokens(home, ["a@example.com"])
    missing = run_cli(home, "erase", "--file", str(tmp_path / "nope.txt"))
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr
    (tmp_path / "empty.txt").write_text("\n# only a comment\n")
    empty = run_cli(home, "erase", "--file", str(tmp_path / "empty.txt"))
    assert empty.returncode == 2
    assert "lists no contact" in empty.stderr
    (tmp_path / "none.txt").write_text("nobody@example.com\n")
    nothing = run_cli(home, "erase", "--file", str(tmp_path / "none.txt"))
    assert nothing.returncode == 1
    assert "1 unknown" in nothing.stderr
