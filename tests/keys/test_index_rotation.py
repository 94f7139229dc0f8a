"""Blind-index key rotation (`keys rotate index`): both keys looked up during the move, rows moved
in resumable batches, the old key retired when no row uses it; on both backends where the store is
touched. Get Token of a value must answer the same token before, during and after the move, and no
value may ever get a second row, whoever creates it (a process that loaded the new key, one that
did not, several at once)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import run_cli

from sendvault.config import load_settings
from sendvault.errors import CryptoError
from sendvault.vault import Kind, Vault, open_vault
from sendvault.vault.lifecycle import (
    REINDEX_CURSOR,
    key_status,
    reindex,
    rotate_index_key,
    unindexed_rows,
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


def _get(vault: Vault, values: list[str], *, create: bool = True) -> list[str | None]:
    return [t.token for t in vault.tokenize_many([(Kind.EMAIL, v) for v in values], create=create)]


def _fill(vault: Vault, count: int, tag: str = "v") -> dict[str, str]:
    values = [f"{tag}{i}@example.com" for i in range(count)]
    tokens = _get(vault, values)
    assert all(tokens)
    return dict(zip(values, tokens, strict=True))  # type: ignore[arg-type]


def _rows_per_value(vault: Vault, values: list[str]) -> list[int]:
    """How many live rows hold each value (resolving every row of the table)."""
    store = vault.store
    rows = store.scan_unindexed("", -1, 10**7)  # every live row: no key has id -1
    opened = vault.resolve_many([r[0] for r in rows])
    counts: dict[str | None, int] = {}
    for r in opened:
        counts[r.value] = counts.get(r.value, 0) + 1
    return [counts.get(v, 0) for v in values]


def test_rotate_index_keeps_every_token_and_retires_the_old_key(env: dict[str, str], both: Vault) -> None:
    known = _fill(both, 300)
    (old,) = both.index_key_ids
    new = rotate_index_key(both)
    assert both.index_key_ids == [old, new]
    assert both.store.index_usage() == {old: 300}
    # During the move: old values answer their old tokens (under the old index), new values get
    # rows under the new key, and normalization still finds old values.
    assert _get(both, list(known)) == list(known.values())
    assert _get(both, ["V7@Example.com"]) == [known["v7@example.com"]]
    fresh = _fill(both, 20, "fresh")
    assert both.store.index_usage() == {old: 300, new: 20}
    with pytest.raises(CryptoError, match="still being moved"):
        rotate_index_key(both)  # one rotation at a time
    status = key_status(load_settings(env=env), both)
    index_rows = {k["id"]: k["rows"] for k in status["keys"] if k["kind"] == "blind-index"}
    assert index_rows == {old: 300, new: 20}
    assert status["reindexing"]["rows_under_older_index_keys"] == 300
    # Part of the way, then the rest.
    batches = iter(range(2))
    first = reindex(both, batch_rows=64, should_stop=lambda: next(batches, None) is None)
    assert (first.changed, first.complete) == (128, False)
    assert _get(both, list(known)) == list(known.values())
    assert _get(both, list(fresh), create=False) == list(fresh.values())
    report = reindex(both, batch_rows=64)
    assert report.complete
    assert report.changed == 300 - 128
    assert report.retired == [old]
    assert both.index_key_ids == [new]
    assert old not in {k.id for k in both.store.load_keys()}
    assert both.store.index_usage() == {new: 320}
    assert unindexed_rows(both) == 0
    # After: only the new key is asked for, and every value still has its one token.
    everything = {**known, **fresh}
    assert _get(both, list(everything), create=False) == list(everything.values())
    assert _rows_per_value(both, list(everything)) == [1] * len(everything)
    out = both.resolve_many(list(everything.values()))
    assert [r.value for r in out] == list(everything)


def test_retire_is_refused_while_rows_use_the_old_index_key(both: Vault) -> None:
    _fill(both, 50)
    (old,) = both.index_key_ids
    new = rotate_index_key(both)
    with pytest.raises(CryptoError, match="current one"):
        both.store.retire_key(new)
    assert both.store.retire_key(old) == 50  # kept
    batches = iter(range(1))
    reindex(both, batch_rows=20, should_stop=lambda: next(batches, None) is None)
    assert both.store.retire_key(old) == 30  # still kept
    assert old in {k.id for k in both.store.load_keys()}
    assert reindex(both).retired == [old]


def test_a_process_that_missed_the_rotation_never_makes_a_second_row(env: dict[str, str]) -> None:
    settings = load_settings(env=env)
    operator, stale = open_vault(settings), open_vault(settings)
    try:
        known = _fill(operator, 40)
        (old,) = operator.index_key_ids
        new = rotate_index_key(operator)
        assert reindex(operator).complete  # the old key is retired: no row holds its index
        assert stale.index_key_ids == [old]  # still only the old key in memory
        # Its lookups miss every moved row; the store refuses its new rows (index key gone), it
        # reloads the keys and finds the existing tokens. Lookups that do not create check too.
        assert _get(stale, list(known)[:10]) == list(known.values())[:10]
        assert stale.index_key_ids == [new]
        again = open_vault(settings)
        try:
            assert _get(again, list(known)[10:], create=False) == list(known.values())[10:]
        finally:
            again.close()
        stale2 = open_vault(settings)
        try:
            rotate_index_key(operator)
            # Loaded only `new`; the store now holds two keys: its new rows are refused until it
            # knows both, and then carry the old index for the insert-or-get to find.
            assert _get(stale2, ["late@example.com"])[0]
            assert len(stale2.index_key_ids) == 2
            assert _get(operator, ["late@example.com"]) == _get(stale2, ["late@example.com"])
            assert _get(stale2, list(known)[:5], create=False) == list(known.values())[:5]
        finally:
            stale2.close()
        assert _rows_per_value(operator, [*known, "late@example.com"]) == [1] * (len(known) + 1)
    finally:
        operator.close()
        stale.close()


def test_concurrent_creators_during_the_move_agree_on_one_token_per_value(env: dict[str, str]) -> None:
    settings = load_settings(env=env)
    vaults = [open_vault(settings) for _ in range(3)]
    operator = vaults[0]
    try:
        known = _fill(operator, 600)
        rotate_index_key(operator)
        # Vaults 1 and 2 opened before the rotation: they learn of it from the store's refusals.
        failures: list[str] = []
        seen: dict[str, set[str]] = {}
        lock = threading.Lock()
        stop = threading.Event()

        def create(n: int) -> None:
            vault = vaults[n % 3]
            step = 0
            try:
                while not stop.is_set():
                    step += 1
                    values = list(known)[(step * 29 + n * 97) % 600 :][:30]
                    # The same new values from every thread: racing creators of one value.
                    values += [f"race{step}.{i}@example.com" for i in range(8)]
                    tokens = _get(vault, values)
                    with lock:
                        for value, token in zip(values, tokens, strict=True):
                            if token is None:
                                failures.append(f"no token for {value}")
                            elif value in known and known[value] != token:
                                failures.append(f"{value} changed its token")
                            else:
                                seen.setdefault(value, set()).add(token)
            except Exception as exc:  # noqa: BLE001 - asserted on below
                failures.append(f"{type(exc).__name__}: {exc}")

        threads = [threading.Thread(target=create, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        try:
            report = reindex(operator, batch_rows=50, pause=lambda _s: time.sleep(0.01))
        finally:
            time.sleep(0.3)
            stop.set()
            for t in threads:
                t.join(timeout=120)
        assert failures == []
        assert report.complete
        assert len(report.retired) == 1
        assert {v: len(t) for v, t in seen.items() if len(t) != 1} == {}
        values = sorted(seen)
        assert len(values) > 600
        assert _rows_per_value(operator, values) == [1] * len(values)
        assert _get(operator, values, create=False) == [next(iter(seen[v])) for v in values]
    finally:
        for vault in vaults:
            vault.close()


def test_erasure_during_the_move_keeps_the_tombstone_and_its_token(both: Vault) -> None:
    known = _fill(both, 100)
    tokens = list(known.values())
    (old,) = both.index_key_ids
    assert both.erase_token(tokens[3])  # erased before the rotation
    new = rotate_index_key(both)
    batches = iter(range(1))
    reindex(both, batch_rows=40, should_stop=lambda: next(batches, None) is None)
    assert both.erase_token(tokens[10])  # already moved
    assert both.erase_value(Kind.EMAIL, "v90@example.com")  # not moved yet, found under the old key
    report = reindex(both, batch_rows=40)
    assert report.complete
    assert report.retired == [old]
    assert both.store.index_usage() == {new: 97}
    out = both.resolve_many([tokens[3], tokens[10], tokens[90]])
    assert [r.reason for r in out] == ["erased"] * 3
    # Erased values are forgotten: asked again, they get new tokens, never an erased one.
    again = _get(both, ["v3@example.com", "v10@example.com", "v90@example.com"])
    assert all(again)
    assert not set(again) & set(tokens)
    rows = {r[0]: r for r in both.store.fetch_by_tokens(tokens)}
    assert len(rows) == 100  # the tombstones stay: their tokens are never issued again
    assert {t for t, r in rows.items() if r[2] is None} == {tokens[3], tokens[10], tokens[90]}


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


def test_killed_reindexing_resumes_and_finishes(tmp_path: Path) -> None:
    home = tmp_path / "home"
    tokens = _big_store(home, 20_000)
    rotated = run_cli(home, "keys", "rotate", "index")
    assert rotated.returncode == 0, rotated.stderr
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
        while not vault.store.get_meta(REINDEX_CURSOR) and time.monotonic() < deadline:
            time.sleep(0.005)
        # The write lock between two batches: the kill lands mid-run (see test_lifecycle.py).
        lock = sqlite3.connect(home / "sendvault.db", timeout=30)
        lock.execute("BEGIN IMMEDIATE")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        lock.rollback()
        lock.close()
        left = unindexed_rows(vault)
        assert 0 < left < 20_000, "the kill should land mid-run"
        # Meanwhile (two keys) every value answers its token, without creating anything.
        asked = "".join(f"k{i}@example.com\n" for i in range(0, 20_000, 97))
        got = run_cli(home, "token", "get", "--type", "email", "--no-create", "-", stdin=asked)
        assert got.returncode == 0, got.stderr
        assert got.stdout.split() == tokens[::97]
        again = run_cli(home, "keys", "reencrypt", "--json")
        assert again.returncode == 0, again.stderr
        assert f'"rows":{left}' in again.stdout
        assert '"retired":[1]' in again.stdout
        assert unindexed_rows(vault) == 0
        status = run_cli(home, "keys", "status", "--json")
        assert '"older_index_keys":[]' in status.stdout.replace(" ", "")
        values = run_cli(home, "token", "resolve", "-", stdin="\n".join(tokens) + "\n").stdout.split()
        assert values == [f"k{i}@example.com" for i in range(20_000)]
        same = run_cli(
            home, "token", "get", "--type", "email", "-", stdin="k5@example.com\nk19999@example.com\n"
        )
        assert same.stdout.split() == [tokens[5], tokens[19999]]
    finally:
        vault.close()


def test_index_rotation_commands_are_audited_and_retire_refuses_in_use(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _big_store(home, 3)
    assert run_cli(home, "keys", "rotate", "index").returncode == 0
    twice = run_cli(home, "keys", "rotate", "index")
    assert twice.returncode != 0
    assert "still being moved" in twice.stderr
    assert "Traceback" not in twice.stderr
    current = run_cli(home, "keys", "retire", "3")
    assert current.returncode == 1
    assert "current blind-index key" in current.stderr
    used = run_cli(home, "keys", "retire", "1")
    assert used.returncode == 1
    assert "still indexes 3 row(s)" in used.stderr
    shown = run_cli(home, "keys", "status")
    assert "blind-index rotation running" in shown.stderr
    assert run_cli(home, "keys", "reencrypt").returncode == 0
    gone = run_cli(home, "keys", "retire", "1")
    assert gone.returncode == 1
    assert "no data key 1, and no older blind-index key 1" in gone.stderr
    assert "retired already" in gone.stderr
    events = [
        line for line in run_cli(home, "audit", "show", "--json").stdout.splitlines() if '"key:' in line
    ]
    text = "\n".join(events)
    assert '"key:rotate"' in text
    assert '"index"' in text
    assert '"key:reencrypt"' in text
    assert '"key:retire"' in text


class _Rejects:
    def __init__(self) -> None:
        self.items: list[tuple[int, str, str]] = []

    def add(self, line: int, column: str, reason: str) -> None:
        self.items.append((line, column, reason))


def test_a_file_planned_under_a_retired_index_key_is_planned_again(
    env: dict[str, str], tmp_path: Path
) -> None:
    from sendvault.exchange import CsvInput, tokenize_file

    settings = load_settings(env=env)
    operator, bulk = open_vault(settings), open_vault(settings)
    try:
        known = _fill(operator, 50)
        rotate_index_key(operator)
        assert reindex(operator).retired  # `bulk` still holds only the retired key
        values = [*known, *(f"new{i}@example.com" for i in range(30))]
        source, out = tmp_path / "in.csv", tmp_path / "out.csv"
        source.write_text("Email\n" + "\n".join(values) + "\n")
        src = CsvInput(str(source))
        rejects = _Rejects()
        summary = tokenize_file(
            bulk, settings, src, str(out), columns=[("Email", Kind.EMAIL)], rejects=rejects, workers=0
        )
        src.close()
        assert rejects.items == []
        tokens = out.read_text().splitlines()[1:]
        assert tokens[:50] == list(known.values())
        assert summary.created == 30
        assert _rows_per_value(operator, values) == [1] * len(values)
    finally:
        operator.close()
        bulk.close()
