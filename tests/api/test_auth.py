"""Failed-attempt limits: they slow a guesser down and never lock the right client out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sendvault.api.auth import Authenticator, address_key, register_client
from sendvault.errors import AuthError
from sendvault.store import SQLiteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def env(tmp_path: Path) -> tuple[Authenticator, str, Clock]:
    store = SQLiteStore(tmp_path / "s.db")
    store.migrate()
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


def test_a_guessing_address_is_blocked_before_scrypt_and_released_after_the_window(
    env: tuple[Authenticator, str, Clock],
) -> None:
    auth, secret, clock = env
    _fail_from(auth, "198.51.100.7", 3)
    with pytest.raises(AuthError) as blocked:
        auth.basic("mc", secret, "198.51.100.7")
    assert blocked.value.status == 429
    assert blocked.value.retry_after
    clock.now += 61
    assert auth.basic("mc", secret, "198.51.100.7").client_id == "mc"


def test_a_cached_secret_is_never_refused(env: tuple[Authenticator, str, Clock]) -> None:
    auth, secret, _ = env
    auth.basic("mc", secret, "198.51.100.7")
    _fail_from(auth, "198.51.100.7", 3, client="someone-else")
    assert auth.basic("mc", secret, "198.51.100.7").client_id == "mc"


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
