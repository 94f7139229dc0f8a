"""restore refuses a backup with a trigger or a view (rt1213): a trigger added to a backup kept every
erased contact's ciphertext and blind index in a table of its own after the restore."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.helpers import run_cli


def test_a_backup_with_a_trigger_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    made = run_cli(home, "token", "get", "--type", "email", "a@example.com")
    assert made.returncode == 0, made.stderr
    backup = tmp_path / "b.db"
    assert run_cli(home, "backup", str(backup)).returncode == 0
    conn = sqlite3.connect(backup)
    conn.executescript(
        "CREATE TABLE shadow(token TEXT, ct BLOB, bidx BLOB);"
        "CREATE TRIGGER keep_erased BEFORE UPDATE OF value_ct ON contacts WHEN NEW.value_ct IS NULL "
        "BEGIN INSERT INTO shadow VALUES (OLD.token, OLD.value_ct, OLD.bidx); END;"
    )
    conn.close()
    db = home / "sendvault.db"
    before = db.read_bytes()
    done = run_cli(home, "restore", "--force", str(backup))
    assert done.returncode == 1
    assert "trigger 'keep_erased'" in done.stderr
    assert "Traceback" not in done.stderr
    assert db.read_bytes() == before
