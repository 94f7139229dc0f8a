"""keys rotate kek on a sealed KEK refuses a new passphrase the settings would refuse (rt1213)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_cli


def test_a_too_short_new_passphrase_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    home = tmp_path / "home"
    good = {"SENDVAULT_KEY_PROVIDER": "sealed", "SENDVAULT_MASTER_PASSPHRASE": "correct horse battery"}
    made = run_cli(home, "token", "get", "--type", "email", "a@example.com", env=good)
    assert made.returncode == 0, made.stderr
    sealed = (home / "keys" / "master.sealed").read_bytes()
    done = run_cli(home, "keys", "rotate", "kek", env={**good, "SENDVAULT_NEW_MASTER_PASSPHRASE": "short"})
    assert done.returncode == 2, done.stderr
    assert "12 characters" in done.stderr
    assert "Traceback" not in done.stderr
    assert (home / "keys" / "master.sealed").read_bytes() == sealed
    again = run_cli(home, "token", "get", "--type", "email", "a@example.com", env=good)
    assert again.stdout == made.stdout
