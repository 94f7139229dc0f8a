"""`sendvault db status|migrate`, and start-up refusing a schema it must not run on."""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

from tests.helpers import run_cli
from tests.replicas import free_port

from sendvault.store.migrations import load

LATEST = len(load("sqlite"))
HINT = "back up the database, then run: sendvault db migrate (sendvault db status lists what it applies)"


def _downgrade(db: Path, version: int) -> None:
    """Make the vault look as an older release left it (no history table before 4, no blind-index
    key column before 5)."""
    assert version < 4
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("DROP TABLE schema_migrations")
    conn.execute("ALTER TABLE contacts DROP COLUMN bidx_key")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.close()


def _error_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [ln for ln in done.stderr.splitlines() if ln.startswith(("error:", "hint:"))]


def test_status_and_migrate_on_a_new_then_an_older_database(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = run_cli(home, "db", "status")
    assert done.returncode == 0, done.stderr
    assert "no database yet" in done.stdout
    assert run_cli(home, "db", "migrate", "--dry-run").stdout.count("would apply") == LATEST
    assert not (home / "sendvault.db").exists()  # a dry run creates nothing
    done = run_cli(home, "db", "migrate")
    assert done.returncode == 0, done.stderr
    assert f"applied {LATEST:04d}_" in done.stdout
    assert "(nothing to do)" in run_cli(home, "db", "migrate").stdout
    doc = json.loads(run_cli(home, "db", "status", "--json").stdout)
    assert (doc["schema"], doc["latest"]) == (LATEST, LATEST)
    assert {m["state"] for m in doc["migrations"]} == {"applied"}

    _downgrade(home / "sendvault.db", 3)
    done = run_cli(home, "db", "status")
    assert done.returncode == 1
    assert "pending" in done.stdout
    assert "sendvault db migrate" in done.stdout
    # Every command that opens the vault refuses, in one line, and says what to run.
    done = run_cli(home, "token", "get", "--type", "email", "a@example.com")
    assert done.returncode == 1
    assert _error_lines(done) == [
        f"error: {home / 'sendvault.db'} has schema version 3; this sendvault needs {LATEST}",
        f"hint: {HINT}",
    ]
    assert "Traceback" not in done.stderr
    done = run_cli(home, "db", "migrate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "applied 0004_schema_history"
    assert run_cli(home, "token", "get", "--type", "email", "a@example.com").returncode == 0


def test_start_up_refuses_an_older_schema_in_production_and_migrates_it_in_dev(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "certs", "server", "localhost").returncode == 0
    assert run_cli(home, "clients", "add", "mc").returncode == 0
    _downgrade(home / "sendvault.db", 3)
    done = run_cli(home, "config", "check", "--no-ports")
    assert done.returncode == 2
    assert "has schema version 3; this sendvault needs" in done.stdout + done.stderr
    assert "sendvault db migrate" in done.stdout + done.stderr
    done = run_cli(home, "serve", "--https-port", str(free_port()), env={"SENDVAULT_HTTP_PORT": "0"})
    assert done.returncode != 0
    assert "sendvault db migrate" in done.stderr
    assert "Traceback" not in done.stderr
    done = run_cli(home, "config", "check", "--no-ports", "--dev")
    assert "migrated to" in done.stdout, done.stdout + done.stderr


def test_a_newer_schema_stops_every_command(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "db", "migrate").returncode == 0
    conn = sqlite3.connect(home / "sendvault.db", isolation_level=None)
    conn.execute(f"PRAGMA user_version = {LATEST + 1}")
    conn.close()
    token = ("token", "get", "--type", "email", "a@example.com")
    for args in (("db", "migrate"), token, ("config", "check")):
        done = run_cli(home, *args)
        assert done.returncode != 0
        assert f"newer than this sendvault knows ({LATEST})" in done.stdout + done.stderr, args
    done = run_cli(home, "db", "status")
    assert done.returncode == 1
    assert "unknown to this sendvault" in done.stdout
