"""A KEK error's hint names the configured provider's KEK (hostile round: a wrong sealed
passphrase was told to check SENDVAULT_MASTER_KEY and master.key, which it does not use)."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import run_cli


def test_a_wrong_sealed_passphrase_points_at_the_passphrase(tmp_path: Path) -> None:
    home = tmp_path / "home"
    good = {"SENDVAULT_KEY_PROVIDER": "sealed", "SENDVAULT_MASTER_PASSPHRASE": "correct horse battery"}
    assert run_cli(home, "token", "get", "--type", "email", "a@example.com", env=good).returncode == 0
    wrong = {**good, "SENDVAULT_MASTER_PASSPHRASE": "wrong horse battery"}
    for args in (["keys", "status"], ["token", "get", "--type", "email", "b@example.com"]):
        done = run_cli(home, *args, env=wrong)
        assert done.returncode == 1
        lines = done.stderr.splitlines()
        assert lines[0].startswith("error: the passphrase does not open")
        assert lines[1].startswith("hint: check SENDVAULT_MASTER_PASSPHRASE")
        assert "master.key" not in done.stderr
        assert "Traceback" not in done.stderr
        assert len(lines) == 2


def test_a_wrong_local_key_still_points_at_the_local_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert run_cli(home, "token", "get", "--type", "email", "a@example.com").returncode == 0
    other = {"SENDVAULT_MASTER_KEY": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE="}
    done = run_cli(home, "keys", "status", env=other)
    assert done.returncode == 1
    assert "hint: check SENDVAULT_MASTER_KEY" in done.stderr
