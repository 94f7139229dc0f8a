"""The Store contract. Every backend runs this whole suite; a backend passes only if all pass."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sendvault.store import KeyRecord, NewContact, SQLiteStore, Store
from sendvault.store.postgres import PostgresStore


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    backend: Store
    if request.param == "sqlite":
        backend = SQLiteStore(tmp_path / "s.db", clock=lambda: 1_700_000_000.0)
    else:
        backend = PostgresStore(request.getfixturevalue("pg_url"), clock=lambda: 1_700_000_000.0)
    backend.migrate()
    yield backend
    backend.close()


def _row(n: int, kind: int = 1) -> NewContact:
    # Version byte 0: not a sealed value, so the store checks no data key for it.
    return NewContact(f"tok{n}", kind, f"bidx{n}".encode().ljust(32, b"\0"), b"\0" + os.urandom(39))


def test_migrate_is_idempotent(store: Store) -> None:
    store.migrate()
    store.migrate()


def test_meta_first_claim_wins(store: Store) -> None:
    assert store.get_meta("x") is None
    assert store.claim_meta("x", "one") == "one"
    assert store.claim_meta("x", "two") == "one"
    assert store.get_meta("x") == "one"


def test_ensure_keys_creates_once(store: Store) -> None:
    calls = []

    def make() -> list[KeyRecord]:
        calls.append(1)
        return [KeyRecord(1, "bidx", "local", b"w1"), KeyRecord(2, "data", "local", b"w2")]

    first = store.ensure_keys(make)
    second = store.ensure_keys(make)
    assert first == second
    assert len(calls) == 1
    assert [k.purpose for k in first] == ["bidx", "data"]


def test_add_key_passes_its_id_to_wrap(store: Store) -> None:
    store.ensure_keys(lambda: [KeyRecord(1, "bidx", "local", b"w1")])
    key_id = store.add_key("data", "local", lambda new_id: f"wrapped-{new_id}".encode())
    assert key_id == 2
    assert store.ensure_keys(list)[-1] == KeyRecord(2, "data", "local", b"wrapped-2")


def test_insert_then_fetch_by_token_and_index(store: Store) -> None:
    rows = [_row(i) for i in range(5)]
    got = store.insert_new(rows)
    assert got == {r.bidx: r.token for r in rows}
    fetched = {r[0]: r for r in store.fetch_by_tokens(["tok1", "tok3", "missing"])}
    assert set(fetched) == {"tok1", "tok3"}
    assert fetched["tok1"] == ("tok1", 1, rows[1].value_ct, None)
    assert store.fetch_by_bidx([rows[2].bidx, b"nope"]) == {rows[2].bidx: "tok2"}
    assert store.count() == 5


def test_insert_or_get_keeps_the_first_token_for_an_index(store: Store) -> None:
    store.insert_new([_row(1)])
    clash = NewContact("other", 1, _row(1).bidx, b"x" * 40)
    assert store.insert_new([clash]) == {clash.bidx: "tok1"}
    assert store.fetch_by_tokens(["other"]) == []


def test_token_collision_is_left_out_for_the_caller_to_retry(store: Store) -> None:
    store.insert_new([_row(1)])
    collide = NewContact("tok1", 1, b"another-index".ljust(32, b"\0"), b"x" * 40)
    assert store.insert_new([collide]) == {}


def test_large_batches_span_parameter_limits(store: Store) -> None:
    rows = [_row(i) for i in range(25_000)]
    assert len(store.insert_new(rows)) == 25_000
    assert len(store.fetch_by_tokens([r.token for r in rows])) == 25_000
    assert len(store.fetch_by_bidx([r.bidx for r in rows])) == 25_000


def test_concurrent_inserts_of_the_same_index_agree(store: Store) -> None:
    results: list[dict[bytes, str]] = []
    barrier = threading.Barrier(6)

    def worker(n: int) -> None:
        barrier.wait()
        results.append(
            store.insert_new([NewContact(f"t{n}-{i}", 1, f"b{i}".encode(), b"x" * 40) for i in range(50)])
        )

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == results[0] for r in results)
    assert store.count() == 50


def test_async_inserts_in_one_loop_share_a_commit_and_agree(store: Store) -> None:
    async def scenario() -> list[dict[bytes, str]]:
        same = [NewContact(f"a{n}", 1, b"shared".ljust(32, b"\0"), b"x" * 40) for n in range(20)]
        own = [store.insert_new_async([_row(n)]) for n in range(20)]
        return list(await asyncio.gather(*(store.insert_new_async([row]) for row in same), *own))

    results = asyncio.run(scenario())
    shared = b"shared".ljust(32, b"\0")
    assert len({r[shared] for r in results[:20]}) == 1
    assert results[20:] == [{_row(n).bidx: f"tok{n}"} for n in range(20)]
    assert store.count() == 21


def test_update_attrs_and_erase(store: Store) -> None:
    store.insert_new([_row(1)])
    assert store.update_attrs("tok1", b"attrs")
    assert store.fetch_by_tokens(["tok1"])[0][3] == b"attrs"
    assert not store.update_attrs("nope", b"attrs")
    assert store.erase("tok1")
    (row,) = store.fetch_by_tokens(["tok1"])
    assert row == ("tok1", 1, None, None)
    assert store.fetch_by_bidx([_row(1).bidx]) == {}
    assert not store.erase("tok1")
    assert not store.update_attrs("tok1", b"attrs")
    assert store.count() == 0


def test_erased_token_is_never_reused(store: Store) -> None:
    store.insert_new([_row(1)])
    store.erase("tok1")
    again = NewContact("tok1", 1, b"fresh".ljust(32, b"\0"), b"x" * 40)
    assert store.insert_new([again]) == {}


def test_ping_and_closed_store(store: Store) -> None:
    store.ping()


def test_insert_bulk_is_insert_or_get_like_insert_new(store: Store) -> None:
    store.insert_new([_row(1)])
    rows = [_row(i) for i in range(45_000)]  # spans several bulk transactions
    rows[1] = NewContact("loser", 1, _row(1).bidx, b"x" * 40)  # the index exists: tok1 stays
    rows.append(NewContact("tok1", 1, b"fresh-index".ljust(32, b"\0"), b"x" * 40))  # token collides
    got = store.insert_bulk(rows)
    assert got[_row(1).bidx] == "tok1"
    assert b"fresh-index".ljust(32, b"\0") not in got
    assert len(got) == 45_000
    assert store.fetch_by_tokens(["loser"]) == []
    assert store.count() == 45_000
    assert store.insert_bulk([]) == {}


def test_insert_bulk_and_insert_new_racing_agree_on_one_token_per_index(store: Store) -> None:
    shared = [f"race{i}".encode().ljust(32, b"\0") for i in range(3_000)]
    answers: list[dict[bytes, str]] = []
    barrier = threading.Barrier(3)

    def bulk() -> None:
        barrier.wait()
        answers.append(
            store.insert_bulk([NewContact(f"b{i}", 1, b, b"x" * 40) for i, b in enumerate(shared)])
        )

    def online(n: int) -> None:
        barrier.wait()
        merged: dict[bytes, str] = {}
        for start in range(0, len(shared), 100):
            chunk = shared[start : start + 100]
            merged |= store.insert_new(
                [NewContact(f"o{n}-{start}-{i}", 1, b, b"x" * 40) for i, b in enumerate(chunk)]
            )
        answers.append(merged)

    threads = [threading.Thread(target=bulk), *(threading.Thread(target=online, args=(n,)) for n in range(2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(answers) == 3
    assert answers[0] == answers[1] == answers[2]
    assert store.fetch_by_bidx(shared) == answers[0]
    assert store.count() == len(shared)


def test_update_attrs_many_skips_unknown_and_erased_tokens(store: Store) -> None:
    store.insert_new([_row(1), _row(2), _row(3)])
    store.erase("tok3")
    assert store.update_attrs_many([("tok1", b"a1"), ("tok2", None), ("tok3", b"a3"), ("nope", b"x")]) == 2
    rows = {r[0]: r for r in store.fetch_by_tokens(["tok1", "tok2", "tok3"])}
    assert rows["tok1"][3] == b"a1"
    assert rows["tok2"][3] is None
    assert rows["tok3"][3] is None
    assert store.update_attrs_many([]) == 0
