"""New tokens that collide with existing ones (live or erased) are drawn again, on both backends.

The random source is injected so collisions happen on purpose: a scripted one replays chosen
numbers, a cramped one draws from a few thousand numbers only, so concurrent writers collide
with each other and with the rows already stored.
"""

from __future__ import annotations

import multiprocessing
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sendvault.config import Settings, load_settings
from sendvault.errors import CryptoError
from sendvault.vault import Kind, Vault, open_vault

E, M = Kind.EMAIL, Kind.MOBILE


class Scripted:
    """Returns the scripted numbers in order, then keeps returning the last one."""

    def __init__(self, *numbers: int) -> None:
        self.numbers = list(numbers)
        self.calls = 0

    def __call__(self, below: int) -> int:
        self.calls += 1
        value = self.numbers.pop(0) if len(self.numbers) > 1 else self.numbers[0]
        assert 0 <= value < below
        return value


class Cramped:
    """Uniform over the first ``space`` numbers only: collisions are frequent by design."""

    def __init__(self, space: int, seed: int) -> None:
        self.space = space
        self.random = random.Random(seed)
        self.lock = threading.Lock()

    def __call__(self, below: int) -> int:
        with self.lock:
            return self.random.randrange(min(below, self.space))


def _settings(tmp_path: Path, backend: str, request: pytest.FixtureRequest) -> Settings:
    env = {"SENDVAULT_HOME": str(tmp_path / "home")}
    if backend == "postgres":
        env["SENDVAULT_DATABASE_URL"] = request.getfixturevalue("pg_url")
    return load_settings(env=env)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings for a fresh vault on each backend."""
    return _settings(tmp_path, str(request.param), request)


@pytest.fixture
def scripted_vault(backend: Settings) -> Iterator[tuple[Vault, Scripted]]:
    rng = Scripted(5)
    vault = open_vault(backend, rng=rng)
    yield vault, rng
    vault.close()


def test_collision_with_a_live_token_is_drawn_again(scripted_vault: tuple[Vault, Scripted]) -> None:
    vault, rng = scripted_vault
    (first,) = vault.tokenize_many([(M, "12125550123")])
    assert first.token == "999000000000005"
    rng.numbers = [5, 5, 6]
    (second,) = vault.tokenize_many([(M, "12125550124")])
    assert second.token == "999000000000006"
    assert rng.calls == 1 + 3  # the second value drew twice into the first token, then a free one
    resolved = vault.resolve_many([first.token, second.token])
    assert [r.value for r in resolved] == ["12125550123", "12125550124"]


def test_collision_with_an_erased_token_is_drawn_again_never_reused(
    scripted_vault: tuple[Vault, Scripted],
) -> None:
    vault, rng = scripted_vault
    (gone,) = vault.tokenize_many([(M, "12125550123")])
    assert gone.token is not None
    assert vault.erase_token(gone.token)
    rng.numbers = [5, 9]
    (fresh,) = vault.tokenize_many([(M, "12125550199")])
    assert fresh.token == "999000000000009"
    assert [r.reason for r in vault.resolve_many([gone.token])] == ["erased"]
    assert vault.resolve_many([fresh.token])[0].value == "12125550199"


def test_two_new_values_of_one_batch_drawing_the_same_token_get_two(
    scripted_vault: tuple[Vault, Scripted],
) -> None:
    vault, rng = scripted_vault
    rng.numbers = [7, 7, 8]
    a, b = vault.tokenize_many([(M, "447700900123"), (M, "447700900124")])
    assert {a.token, b.token} == {"999000000000007", "999000000000008"}
    assert a.created
    assert b.created
    values = {r.value for r in vault.resolve_many([a.token or "", b.token or ""])}
    assert values == {"447700900123", "447700900124"}


def test_email_tokens_collide_and_are_drawn_again_too(scripted_vault: tuple[Vault, Scripted]) -> None:
    vault, rng = scripted_vault
    rng.numbers = [1, 1, 2]
    a, b = vault.tokenize_many([(E, "a@example.com")])[0], vault.tokenize_many([(E, "b@example.com")])[0]
    assert a.token == "0" * 29 + "1@tokens.sendvault.invalid"
    assert b.token == "0" * 29 + "2@tokens.sendvault.invalid"


def test_a_source_that_only_collides_fails_cleanly_and_writes_nothing(
    scripted_vault: tuple[Vault, Scripted],
) -> None:
    vault, rng = scripted_vault
    vault.tokenize_many([(M, "12125550123")])
    rng.numbers = [5]
    with pytest.raises(CryptoError, match="unused token"):
        vault.tokenize_many([(M, "12125550124"), (M, "12125550125")])
    assert vault.store.count() == 1
    assert vault.tokenize_many([(M, "12125550124")], create=False)[0].reason == "unknown-value"


def _values(worker: int) -> list[tuple[Kind, str]]:
    # Every worker creates 60 values of its own and 60 shared ones, the shared ones in an order
    # of its own, so concurrent transactions meet on both the token and the blind index.
    shared = [(M, f"1212555{i:04d}") for i in range(60)]
    random.Random(worker).shuffle(shared)
    own = [(M, f"4477009{worker:02d}{i:03d}") for i in range(60)]
    mixed = own + shared
    random.Random(worker + 100).shuffle(mixed)
    return mixed


def _check_outcomes(vault: Vault, outcomes: dict[int, list[str | None]]) -> None:
    by_value: dict[str, set[str | None]] = {}
    for worker, tokens in outcomes.items():
        for (_, value), token in zip(_values(worker), tokens, strict=True):
            by_value.setdefault(value, set()).add(token)
    assert all(len(tokens) == 1 and None not in tokens for tokens in by_value.values())
    token_of = {value: next(iter(tokens)) for value, tokens in by_value.items()}
    assert len(set(token_of.values())) == len(token_of)  # one token per value, never shared
    resolved = vault.resolve_many([t or "" for t in token_of.values()])
    assert [r.value for r in resolved] == list(token_of)
    assert vault.store.count() == len(token_of)


# 4 workers x 120 values into 3000 numbers: about one draw in ten collides, some several times.
_SPACE = 3000
_WORKERS = 4


@pytest.mark.parametrize("round_", range(3))
def test_threads_with_colliding_draws_get_one_distinct_token_per_value(
    backend: Settings, round_: int
) -> None:
    vault = open_vault(backend, rng=Cramped(_SPACE, seed=round_))
    outcomes: dict[int, list[str | None]] = {}
    barrier = threading.Barrier(_WORKERS)

    def work(worker: int) -> None:
        barrier.wait()
        # Small batches: many transactions interleave instead of one grouped commit.
        values = _values(worker)
        got: list[str | None] = []
        for start in range(0, len(values), 20):
            got += [r.token for r in vault.tokenize_many(values[start : start + 20])]
        outcomes[worker] = got

    threads = [threading.Thread(target=work, args=(w,)) for w in range(_WORKERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        _check_outcomes(vault, outcomes)
    finally:
        vault.close()


def _process(settings: Settings, worker: int, seed: int, start: object, out: object) -> None:
    vault = open_vault(settings, rng=Cramped(_SPACE, seed=seed * 100 + worker))
    start.wait()  # type: ignore[attr-defined]
    values = _values(worker)
    got: list[str | None] = []
    for first in range(0, len(values), 20):
        got += [r.token for r in vault.tokenize_many(values[first : first + 20])]
    out.put((worker, got))  # type: ignore[attr-defined]
    vault.close()


@pytest.mark.parametrize("round_", range(1))
def test_processes_with_colliding_draws_get_one_distinct_token_per_value(
    backend: Settings, round_: int
) -> None:
    open_vault(backend).close()
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_process, args=(backend, w, round_, start, out)) for w in range(_WORKERS)]
    for p in procs:
        p.start()
    start.set()
    outcomes = dict(out.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    out.close()
    out.join_thread()
    vault = open_vault(backend)
    try:
        _check_outcomes(vault, outcomes)
    finally:
        vault.close()


def test_a_csv_conversion_draws_again_for_a_new_token_that_collides(
    scripted_vault: tuple[Vault, Scripted], backend: Settings, tmp_path: Path
) -> None:
    """The bulk path stores planned tokens with insert-or-get; one that collides is drawn again."""
    from sendvault.exchange import CsvInput, tokenize_file

    vault, rng = scripted_vault
    (first,) = vault.tokenize_many([(M, "12125550123")])
    rng.numbers = [5, 5, 6]  # the plan draws the taken token, the redraw draws it again, then 6
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("Id,Phone\n1,+1 212 555 0124\n2,+1 212 555 0123\n")

    class Rejects:
        def add(self, line: int, column: str, reason: str) -> None:
            raise AssertionError(f"line {line} rejected: {reason}")

    src = CsvInput(str(source))
    summary = tokenize_file(
        vault, backend, src, str(out), columns=[("Phone", M)], rejects=Rejects(), workers=0
    )
    src.close()
    assert out.read_text() == f"Id,Phone\n1,999000000000006\n2,{first.token}\n"
    assert (summary.written, summary.created) == (2, 1)
    resolved = vault.resolve_many(["999000000000006"])
    assert resolved[0].value == "12125550124"
