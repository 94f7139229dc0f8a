"""The vault on PostgreSQL: the scale-out backend behaves as the embedded one."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from sendvault.config import Settings, load_settings
from sendvault.vault import Kind, Vault, open_vault

E = Kind.EMAIL


@pytest.fixture
def pg_settings(tmp_path: Path, pg_url: str) -> Settings:
    return load_settings(env={"SENDVAULT_HOME": str(tmp_path / "home"), "SENDVAULT_DATABASE_URL": pg_url})


@pytest.fixture
def pg_vault(pg_settings: Settings) -> Iterator[Vault]:
    v = open_vault(pg_settings)
    yield v
    v.close()


def test_round_trip_attributes_and_erasure(pg_vault: Vault) -> None:
    a, m, bad = pg_vault.tokenize_many([(E, "A@Example.com"), (Kind.MOBILE, "+1 212 555 0123"), (E, "x")])
    assert bad.reason == "invalid-email"
    assert pg_vault.tokenize_many([(E, "a@example.com")])[0].token == a.token
    pg_vault.set_attributes(a.token or "", {"FirstName": "Ann"})
    resolved = pg_vault.resolve_many([a.token or "", m.token or "", "nope"])
    assert [r.value for r in resolved] == ["a@example.com", "12125550123", None]
    assert resolved[0].attributes == {"FirstName": "Ann"}
    assert pg_vault.erase_token(a.token or "")
    assert pg_vault.resolve_many([a.token or ""])[0].reason == "erased"


def test_async_creation_shares_tokens(pg_vault: Vault) -> None:
    async def scenario() -> set[str | None]:
        done = await asyncio.gather(
            *(pg_vault.tokenize_many_async([(E, "same@example.com")]) for _ in range(20))
        )
        return {d[0].token for d in done}

    assert len(asyncio.run(scenario())) == 1


def _replica(
    home: str, url: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue
) -> None:  # type: ignore[type-arg]
    v = open_vault(load_settings(env={"SENDVAULT_HOME": home, "SENDVAULT_DATABASE_URL": url}))
    start.wait()
    out.put([r.token for r in v.tokenize_many([(E, f"replica{i}@example.com") for i in range(100)])])
    v.close()


def test_replicas_creating_the_same_values_agree(pg_settings: Settings) -> None:
    # Replicas share the database and the key-encryption key, as a deployment would.
    open_vault(pg_settings).close()
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(target=_replica, args=(pg_settings.home, pg_settings.database_url, start, out))
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    out.close()
    out.join_thread()
    assert all(r == results[0] for r in results)
    assert len(set(results[0])) == 100
