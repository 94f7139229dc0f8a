"""Failed attempts slow their source down and never lock the right credential out."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from sendvault.api._throttle import KdfGate
from sendvault.api.auth import Authenticator, address_key, register_client, rotate_secret
from sendvault.errors import AuthError
from sendvault.store import SQLiteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> SQLiteStore:
    store = SQLiteStore(tmp_path / "s.db")
    store.migrate()
    return store


@pytest.fixture
def env(store: SQLiteStore) -> tuple[Authenticator, str, Clock]:
    secret = register_client(store, "mc")
    clock = Clock()
    auth = Authenticator(store, b"k" * 32, max_failures=3, failure_window=60, clock=clock)
    return auth, secret, clock


def _fail_from(auth: Authenticator, address: str, times: int, client: str = "mc") -> None:
    for _ in range(times):
        with pytest.raises(AuthError):
            auth.basic(client, "wrong", address)


def test_guesses_from_many_addresses_never_lock_out_the_right_secret(
    env: tuple[Authenticator, str, Clock],
) -> None:
    auth, secret, _ = env
    for n in range(20):
        _fail_from(auth, f"198.51.100.{n}", 2)
    assert auth.basic("mc", secret, "203.0.113.5").client_id == "mc"


def test_the_right_secret_is_accepted_from_a_guessing_address_it_has_never_been_seen_from(
    env: tuple[Authenticator, str, Clock],
) -> None:
    auth, secret, _ = env
    _fail_from(auth, "198.51.100.7", 10)
    assert auth.failures.failing(address_key("198.51.100.7"))
    assert auth.basic("mc", secret, "198.51.100.7").client_id == "mc"  # no 429, ever


def test_a_secret_that_passed_once_is_recognised_without_scrypt_until_it_changes(
    env: tuple[Authenticator, str, Clock], store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    auth, secret, clock = env
    auth.basic("mc", secret, "192.0.2.1")
    calls = []
    import sendvault.api.auth as module

    real = module._secret_matches
    monkeypatch.setattr(module, "_secret_matches", lambda *a: calls.append(1) or real(*a))
    _fail_from(auth, "192.0.2.1", 5, client="someone-else")
    calls.clear()
    clock.now += 3600  # past every cache: the record is read again, the secret still known
    assert auth.basic("mc", secret, "192.0.2.1").client_id == "mc"
    assert calls == []
    new = rotate_secret(store, "mc", clock=clock)
    clock.now += 31  # the client record cache expires: the rotation is seen
    with pytest.raises(AuthError):
        auth.basic("mc", secret, "192.0.2.1")
    assert auth.basic("mc", new, "192.0.2.1").client_id == "mc"


def test_ipv6_callers_are_counted_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert address_key("2001:db8:1:2::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.1") == address_key("192.0.2.1") == "192.0.2.1"


def test_the_event_loop_check_gives_the_same_answers(env: tuple[Authenticator, str, Clock]) -> None:
    auth, secret, _ = env

    async def run() -> None:
        assert (await auth.basic_async("mc", secret, "192.0.2.1")).client_id == "mc"
        with pytest.raises(AuthError):
            await auth.basic_async("mc", "wrong", "192.0.2.1")
        with pytest.raises(AuthError):
            await auth.basic_async("nobody", secret, "192.0.2.1")

    asyncio.run(run())
    auth.close()


def test_a_failing_address_is_checked_one_at_a_time_and_spaced(store: SQLiteStore) -> None:
    secret = register_client(store, "mc")
    auth = Authenticator(store, b"k" * 32, max_failures=2, failure_window=60, spacing=0.2)
    parked: list[bool] = []

    async def run() -> None:
        for _ in range(2):
            with pytest.raises(AuthError):
                await auth.bearer_async("bad", "198.51.100.1")
        start = time.monotonic()
        outcomes = await asyncio.gather(
            *(auth.bearer_async("bad", "198.51.100.1", parked.append) for _ in range(5)),
            auth.basic_async("mc", secret, "198.51.100.1"),  # the right one, in its turn
            return_exceptions=True,
        )
        took = time.monotonic() - start
        assert [type(o).__name__ for o in outcomes[:5]] == ["AuthError"] * 5
        assert outcomes[5].client_id == "mc"  # type: ignore[union-attr]
        assert took >= 5 * 0.2  # six checks in a row, 0.2 s apart
        # Waiting connections were parked, and every one was released.
        assert parked.count(True) == 5
        assert parked[-1] is False
        # Another address is not slowed at all.
        start = time.monotonic()
        with pytest.raises(AuthError):
            await auth.bearer_async("bad", "203.0.113.9")
        assert time.monotonic() - start < 0.1

    asyncio.run(run())
    auth.close()


def test_scrypt_runs_one_at_a_time_and_addresses_without_failures_go_first() -> None:
    order: list[str] = []

    async def run() -> None:
        gate = KdfGate()

        async def check(name: str, failures: int) -> None:
            async with gate.slot(failures):
                order.append(name)
                await asyncio.sleep(0.01)

        first = asyncio.create_task(check("first", 0))
        await asyncio.sleep(0)
        await asyncio.gather(first, check("guesser-1", 30), check("guesser-2", 30), check("clean", 0))

    asyncio.run(run())
    assert order == ["first", "clean", "guesser-1", "guesser-2"]
