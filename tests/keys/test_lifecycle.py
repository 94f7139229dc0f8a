"""Data-key rotation, re-encryption (resumable, killable), retirement and KEK rotation, on both
backends where the store is touched."""

from __future__ import annotations

import base64
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import run_cli

from sendvault.config import Settings, load_settings
from sendvault.crypto import Keyring
from sendvault.errors import KeyProviderError, StaleKeys
from sendvault.vault import Kind, Vault, open_vault
from sendvault.vault.lifecycle import (
    REENCRYPT_CURSOR,
    BackgroundReencryption,
    reencrypt,
    rotate_kek,
    stale_rows,
)


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    env = {"SENDVAULT_HOME": str(tmp_path / "home")}
    if request.param == "postgres":
        env["SENDVAULT_DATABASE_URL"] = request.getfixturevalue("pg_url")
    return env


@pytest.fixture
def both(env: dict[str, str]) -> Iterator[Vault]:
    vault = open_vault(load_settings(env=env))
    yield vault
    vault.close()


def _fill(vault: Vault, count: int, tag: str = "v") -> dict[str, str]:
    values = [f"{tag}{i}@example.com" for i in range(count)]
    tokens = [t.token for t in vault.tokenize_many([(Kind.EMAIL, v) for v in values])]
    assert all(tokens)
    return dict(zip(values, tokens, strict=True))  # type: ignore[arg-type]


def _resolves(vault: Vault, known: dict[str, str]) -> None:
    out = vault.resolve_many(list(known.values()))
    assert [r.value for r in out] == list(known)


def _key_ids(vault: Vault, tokens: list[str]) -> set[int]:
    return {Keyring.key_id_of(row[2]) for row in vault.store.fetch_by_tokens(tokens) if row[2] is not None}


def test_rotate_reencrypt_retire_keeps_every_token(both: Vault) -> None:
    known = _fill(both, 300)
    both.set_attributes(known["v1@example.com"], {"FirstName": "Ann"})
    old = both.keyring.current_key_id
    new = both.rotate_data_key()
    assert both.store.retire_key(old) == 300  # still in use: kept
    report = reencrypt(both, batch_rows=64)
    assert report.complete
    assert report.changed == 300
    assert report.unreadable == 0
    assert _key_ids(both, list(known.values())) == {new}
    assert stale_rows(both) == 0
    assert both.store.retire_key(old) == 0
    assert old not in {k.id for k in both.store.load_keys()}
    # Tokens are looked up again: same tokens, same values, attributes still open.
    assert {
        v: t.token for v, t in zip(known, both.tokenize_many([(Kind.EMAIL, v) for v in known]), strict=True)
    } == known
    _resolves(both, known)
    assert both.get_attributes(known["v1@example.com"]) == {"FirstName": "Ann"}


def test_a_stopped_run_resumes_from_its_cursor(both: Vault) -> None:
    known = _fill(both, 500)
    both.rotate_data_key()
    batches = iter(range(3))
    first = reencrypt(both, batch_rows=50, should_stop=lambda: next(batches, None) is None)
    assert not first.complete
    assert first.changed == 150
    assert both.store.get_meta(REENCRYPT_CURSOR)
    second = reencrypt(both, batch_rows=50)
    assert second.complete
    assert second.changed == 350
    _resolves(both, known)


def test_a_process_with_old_keys_reseals_under_the_new_key_after_a_retire(env: dict[str, str]) -> None:
    settings = load_settings(env=env)
    operator, stale = open_vault(settings), open_vault(settings)
    try:
        known = _fill(operator, 20)
        old = operator.keyring.current_key_id
        operator.rotate_data_key()
        assert reencrypt(operator).complete
        assert operator.store.retire_key(old) == 0
        # `stale` still seals under the retired key; the store refuses that inside the write,
        # the vault reloads its keys and seals again: the new row is readable by everyone.
        assert stale.keyring.current_key_id == old
        (made,) = stale.tokenize_many([(Kind.EMAIL, "late@example.com")])
        assert made.token is not None
        assert stale.keyring.current_key_id != old
        assert operator.resolve_many([made.token])[0].value == "late@example.com"
        _resolves(stale, known)
    finally:
        operator.close()
        stale.close()


def test_the_store_refuses_a_ciphertext_under_a_retired_key(both: Vault) -> None:
    _fill(both, 1)
    old = both.keyring.current_key_id
    stale_ring = both.keyring
    both.rotate_data_key()
    assert both.store.retire_key(old) == 1
    assert reencrypt(both).complete
    assert both.store.retire_key(old) == 0
    from sendvault.store.base import NewContact

    sealed = stale_ring.seal(b"x@example.com", b"ctx")
    with pytest.raises(StaleKeys):
        both.store.insert_new([NewContact("t@tokens.sendvault.invalid", 1, os.urandom(32), sealed)])


def test_reads_of_rows_under_a_key_added_elsewhere_load_it(env: dict[str, str]) -> None:
    settings = load_settings(env=env)
    writer, reader = open_vault(settings), open_vault(settings)
    try:
        writer.rotate_data_key()
        known = _fill(writer, 5)
        _resolves(reader, known)
    finally:
        writer.close()
        reader.close()


def _big_store(home: Path, count: int) -> list[str]:
    done = run_cli(
        home,
        "token",
        "get",
        "--type",
        "email",
        "-",
        stdin="".join(f"k{i}@example.com\n" for i in range(count)),
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_killed_reencryption_resumes_and_finishes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tokens = _big_store(home, 20_000)
    assert run_cli(home, "keys", "rotate", "dek").returncode == 0
    settings = load_settings(env={"SENDVAULT_HOME": str(home)})
    proc = subprocess.Popen(
        [sys.executable, "-m", "sendvault", "keys", "reencrypt", "--batch", "20"],
        env={**os.environ, "SENDVAULT_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    vault = open_vault(settings)
    try:
        deadline = time.monotonic() + 60
        while not vault.store.get_meta(REENCRYPT_CURSOR) and time.monotonic() < deadline:
            time.sleep(0.005)
        # Take the write lock between two batches, so the kill lands mid-run whatever the speed
        # of the machine: the command waits for the lock and dies waiting.
        lock = sqlite3.connect(home / "sendvault.db", timeout=30)
        lock.execute("BEGIN IMMEDIATE")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        lock.rollback()
        lock.close()
        left = stale_rows(vault)
        assert 0 < left < 20_000, "the kill should land mid-run"
        cursor = vault.store.get_meta(REENCRYPT_CURSOR)
        assert cursor
        again = run_cli(home, "keys", "reencrypt", "--json")
        assert again.returncode == 0, again.stderr
        assert f'"rows":{left}' in again.stdout
        assert stale_rows(vault) == 0
        values = run_cli(home, "token", "resolve", "-", stdin="\n".join(tokens) + "\n").stdout.split()
        assert values == [f"k{i}@example.com" for i in range(20_000)]
    finally:
        vault.close()


def test_rotate_kek_on_a_key_file_rewraps_and_replaces_the_file(settings: Settings) -> None:
    vault = open_vault(settings)
    known = _fill(vault, 3)
    jwt = vault.shared_key("jwt")
    path = settings.home_path / "keys" / "master.key"
    before = path.read_bytes()
    done = rotate_kek(settings, vault)
    vault.close()
    assert path.read_bytes() != before
    assert path.stat().st_mode & 0o777 == 0o600
    assert not (settings.home_path / "keys" / "master.key.next").exists()
    again = open_vault(settings)
    try:
        _resolves(again, known)
        assert again.shared_key("jwt") == jwt
        assert done["rewrapped"] == 3  # blind-index key, data key, the shared jwt key
    finally:
        again.close()


def test_a_kek_rotation_killed_after_its_rewrap_finishes_at_the_next_start(settings: Settings) -> None:
    vault = open_vault(settings)
    known = _fill(vault, 3)
    keys = settings.home_path / "keys"
    old_kek = (keys / "master.key").read_bytes()
    rotate_kek(settings, vault)
    vault.close()
    # As if the process died between its commit and the rename: the old file is back, the
    # new KEK only in master.key.next.
    (keys / "master.key").rename(keys / "master.key.next")
    (keys / "master.key").write_bytes(old_kek)
    (keys / "master.key").chmod(0o600)
    again = open_vault(settings)
    try:
        _resolves(again, known)
        assert not (keys / "master.key.next").exists()
    finally:
        again.close()
    assert run_cli(settings.home_path, "config", "check", "--no-ports", "--dev").returncode == 0


def test_rotate_kek_given_in_the_environment_needs_the_new_key_there(tmp_path: Path) -> None:
    home = tmp_path / "home"
    old = base64.b64encode(os.urandom(32)).decode()
    new = base64.b64encode(os.urandom(32)).decode()
    assert (
        run_cli(
            home, "token", "get", "--type", "email", "a@example.com", env={"SENDVAULT_MASTER_KEY": old}
        ).returncode
        == 0
    )
    refused = run_cli(home, "keys", "rotate", "kek", env={"SENDVAULT_MASTER_KEY": old})
    assert refused.returncode == 2
    assert "SENDVAULT_NEW_MASTER_KEY" in refused.stderr
    assert "Traceback" not in refused.stderr
    done = run_cli(
        home, "keys", "rotate", "kek", env={"SENDVAULT_MASTER_KEY": old, "SENDVAULT_NEW_MASTER_KEY": new}
    )
    assert done.returncode == 0, done.stderr
    assert "SENDVAULT_MASTER_KEY" in done.stderr
    assert (
        run_cli(
            home, "token", "get", "--type", "email", "a@example.com", env={"SENDVAULT_MASTER_KEY": old}
        ).returncode
        != 0
    )
    assert (
        run_cli(
            home, "token", "get", "--type", "email", "a@example.com", env={"SENDVAULT_MASTER_KEY": new}
        ).returncode
        == 0
    )


def test_sealed_key_file_opens_with_its_passphrase_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    good = {"SENDVAULT_KEY_PROVIDER": "sealed", "SENDVAULT_MASTER_PASSPHRASE": "correct horse battery"}
    made = run_cli(home, "token", "get", "--type", "email", "a@example.com", env=good)
    assert made.returncode == 0, made.stderr
    sealed = home / "keys" / "master.sealed"
    assert sealed.stat().st_mode & 0o777 == 0o600
    assert not (home / "keys" / "master.key").exists()
    wrong = run_cli(
        home,
        "token",
        "get",
        "--type",
        "email",
        "a@example.com",
        env={**good, "SENDVAULT_MASTER_PASSPHRASE": "wrong horse battery"},
    )
    assert wrong.returncode == 1
    assert wrong.stderr.count("\n") <= 2
    assert "passphrase does not open" in wrong.stderr
    missing = run_cli(
        home, "token", "get", "--type", "email", "a@example.com", env={"SENDVAULT_KEY_PROVIDER": "sealed"}
    )
    assert missing.returncode == 2
    assert "master_passphrase" in missing.stderr
    assert run_cli(home, "keys", "rotate", "kek", env=good).returncode == 0
    again = run_cli(home, "token", "get", "--type", "email", "a@example.com", env=good)
    assert again.stdout == made.stdout


def test_retire_refuses_the_current_key_and_unknown_ids(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _big_store(home, 3)
    current = run_cli(home, "keys", "retire", "2")
    assert current.returncode == 1
    assert "current data key" in current.stderr
    unknown = run_cli(home, "keys", "retire", "99")
    assert unknown.returncode == 1
    assert "no data key 99" in unknown.stderr
    assert run_cli(home, "keys", "rotate", "dek").returncode == 0
    used = run_cli(home, "keys", "retire", "2")
    assert used.returncode == 1
    assert "still protects 3 row(s)" in used.stderr


def test_every_key_operation_is_audited(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _big_store(home, 3)
    for args in (
        ("keys", "rotate", "dek"),
        ("keys", "reencrypt"),
        ("keys", "retire", "2"),
        ("keys", "rotate", "kek"),
    ):
        assert run_cli(home, *args).returncode == 0
    shown = run_cli(home, "audit", "show", "--json")
    events = [line for line in shown.stdout.splitlines() if '"key:' in line]
    text = "\n".join(events)
    assert text.count('"key:rotate"') == 2
    assert '"key:reencrypt"' in text
    assert '"key:retire"' in text


def test_wrong_kek_is_one_line(settings: Settings) -> None:
    open_vault(settings).close()
    path = settings.home_path / "keys" / "master.key"
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    with pytest.raises(KeyProviderError):
        open_vault(settings)


def test_a_tampered_row_is_reported_left_alone_and_keeps_its_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tokens = _big_store(home, 50)
    db = sqlite3.connect(home / "sendvault.db")
    (ct,) = db.execute("SELECT value_ct FROM contacts WHERE token = ?", (tokens[7],)).fetchone()
    db.execute("UPDATE contacts SET value_ct = ? WHERE token = ?", (ct[:-1] + bytes([ct[-1] ^ 1]), tokens[7]))
    db.commit()
    db.close()
    assert run_cli(home, "keys", "rotate", "dek").returncode == 0
    done = run_cli(home, "keys", "reencrypt", "--json")
    assert done.returncode == 1
    assert '"rows":49' in done.stdout
    assert '"unreadable":1' in done.stdout
    assert '"complete":true' in done.stdout
    assert "1 row(s) did not open" in done.stderr
    kept = run_cli(home, "keys", "retire", "2")
    assert kept.returncode == 1
    assert "still protects 1 row(s)" in kept.stderr


def _background_pass(vault: Vault, caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """One pass of serve's background re-encryption; the sendvault.keys records it logged."""
    caplog.clear()
    job = BackgroundReencryption(vault, share=1.0).start()
    deadline = time.monotonic() + 30
    while (job.last is None or not job.last.complete) and time.monotonic() < deadline:
        time.sleep(0.01)
    job.stop()
    assert job.last is not None
    assert job.last.complete
    return [r for r in caplog.records if r.name == "sendvault.keys"]


def test_a_new_stores_first_background_pass_is_quiet_a_rotations_is_not(
    both: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="sendvault.keys")
    _fill(both, 3)
    first = _background_pass(both, caplog)
    # A new user's first `serve` saw "re-encryption under data key 2 complete: 0 rows moved".
    assert [(r.levelno, r.getMessage()) for r in first] == [
        (logging.DEBUG, f"re-encryption under data key {both.keyring.current_key_id} complete: 0 rows moved")
    ]
    new = both.rotate_data_key()
    after = _background_pass(both, caplog)
    assert [(r.levelno, r.getMessage()) for r in after] == [
        (logging.INFO, f"re-encryption under data key {new} complete: 3 rows moved")
    ]
