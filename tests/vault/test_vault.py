"""The Vault service: 1:1 tokens, round trips, attributes, erasure, tampering, concurrency."""

from __future__ import annotations

import asyncio
import multiprocessing
import re
import sqlite3
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sendvault.config import Settings, load_settings
from sendvault.errors import InvalidValue, NotFound
from sendvault.vault import Kind, Vault, open_vault

E, M = Kind.EMAIL, Kind.MOBILE


def _db(settings: Settings) -> sqlite3.Connection:
    return sqlite3.connect(settings.sqlite_path, isolation_level=None)


def test_same_value_gets_the_same_token(vault: Vault) -> None:
    first = vault.tokenize_many([(E, "someone@example.com")])[0]
    again = vault.tokenize_many([(E, "Someone@EXAMPLE.com")])[0]
    assert first.created
    assert not again.created
    assert first.token == again.token


def test_different_values_get_different_tokens(vault: Vault) -> None:
    a, b = vault.tokenize_many([(E, "a@example.com"), (E, "b@example.com")])
    assert a.token != b.token


def test_email_and_mobile_tokens_have_their_shapes(vault: Vault) -> None:
    email, mobile = vault.tokenize_many([(E, "a@example.com"), (M, "12125550123")])
    assert email.token is not None
    assert mobile.token is not None
    assert re.fullmatch(r"[0-9a-f]{30}@tokens\.sendvault\.invalid", email.token)
    assert re.fullmatch(r"999[0-9]{12}", mobile.token)


def test_tokens_are_not_derived_from_values(tmp_path: Path) -> None:
    tokens = []
    for name in ("one", "two"):
        v = open_vault(load_settings(env={"SENDVAULT_HOME": str(tmp_path / name)}))
        tokens.append(v.tokenize_many([(E, "a@example.com")])[0].token)
        v.close()
    assert tokens[0] != tokens[1]


def test_duplicates_in_one_batch_share_one_new_token(vault: Vault) -> None:
    results = vault.tokenize_many([(E, "dup@example.com"), (E, "DUP@example.com"), (E, "dup@example.com")])
    assert len({r.token for r in results}) == 1
    assert vault.store.count() == 1


def test_bad_items_get_reasons_and_the_rest_still_work(vault: Vault) -> None:
    results = vault.tokenize_many([(E, "ok@example.com"), (E, "not-an-email"), (M, "12"), (E, "")])
    assert results[0].token is not None
    assert [r.reason for r in results[1:]] == ["invalid-email", "invalid-mobile", "empty-value"]
    assert all(r.token is None for r in results[1:])


def test_async_tokenize_agrees_with_sync(vault: Vault) -> None:
    async def scenario() -> list[list[str | None]]:
        batches = [[(E, f"u{i}@example.com"), (E, "shared@example.com"), (E, "bad")] for i in range(10)]
        done = await asyncio.gather(*(vault.tokenize_many_async(b) for b in batches))
        return [[r.token for r in d] for d in done]

    results = asyncio.run(scenario())
    assert len({r[1] for r in results}) == 1
    assert all(r[2] is None for r in results)
    sync = vault.tokenize_many([(E, f"u{i}@example.com") for i in range(10)] + [(E, "shared@example.com")])
    assert [t.token for t in sync] == [r[0] for r in results] + [results[0][1]]
    assert not any(t.created for t in sync)


def test_lookup_without_create_does_not_create(vault: Vault) -> None:
    (result,) = vault.tokenize_many([(E, "new@example.com")], create=False)
    assert result.token is None
    assert result.reason == "unknown-value"
    assert vault.store.count() == 0


def test_unknown_token_is_unresolved(vault: Vault) -> None:
    (result,) = vault.resolve_many(["nobody@tokens.sendvault.invalid"])
    assert result.value is None
    assert result.reason == "unknown-token"


def test_resolve_keeps_order_and_duplicates(vault: Vault) -> None:
    a, b = (r.token for r in vault.tokenize_many([(E, "a@example.com"), (M, "+44 7911 123456")]))
    assert a is not None
    assert b is not None
    values = [r.value for r in vault.resolve_many([b, "x", a, b])]
    assert values == ["447911123456", None, "a@example.com", "447911123456"]


_emails = st.emails().filter(lambda e: not e.lower().endswith((".invalid", ".test", ".local", ".localhost")))
_mobiles = st.from_regex(r"1[2-9][0-9]{2}[2-9][0-9]{6}", fullmatch=True)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.tuples(st.just(E), _emails), st.tuples(st.just(M), _mobiles)), max_size=20))
def test_tokenize_then_resolve_returns_the_normalized_value(
    vault: Vault, items: list[tuple[Kind, str]]
) -> None:
    tokens = vault.tokenize_many(items)
    resolved = vault.resolve_many([t.token or "" for t in tokens])
    for (kind, raw), tok, res in zip(items, tokens, resolved, strict=True):
        try:
            expected: str | None = vault._normalizer.normalize(kind, raw)
        except InvalidValue:
            expected = None
        if expected is None:
            assert tok.token is None
            assert tok.reason is not None
            continue
        assert res.value == expected
        assert res.kind is kind


def test_attributes_set_merge_replace_delete(vault: Vault) -> None:
    (tok,) = vault.tokenize_many([(E, "a@example.com")])
    assert tok.token is not None
    vault.set_attributes(tok.token, {"FirstName": "Ann", "City": "Oslo"})
    assert vault.set_attributes(tok.token, {"FirstName": "Anne"}) == {"FirstName": "Anne", "City": "Oslo"}
    assert vault.resolve_many([tok.token])[0].attributes == {"FirstName": "Anne", "City": "Oslo"}
    assert vault.set_attributes(tok.token, {"Tier": "gold"}, replace=True) == {"Tier": "gold"}
    assert vault.delete_attributes(tok.token, ["Tier"]) == {}
    assert vault.get_attributes(tok.token) == {}


def test_attributes_of_unknown_token_are_not_found(vault: Vault) -> None:
    with pytest.raises(NotFound):
        vault.set_attributes("nope", {"a": "b"})


def test_erase_removes_value_attributes_and_index_but_never_reissues(
    vault: Vault, settings: Settings
) -> None:
    (tok,) = vault.tokenize_many([(E, "gone@example.com")])
    assert tok.token is not None
    vault.set_attributes(tok.token, {"FirstName": "Ann"})
    assert vault.erase_token(tok.token)
    assert vault.resolve_many([tok.token])[0].reason == "erased"
    with pytest.raises(NotFound):
        vault.get_attributes(tok.token)
    (row,) = _db(settings).execute("SELECT bidx, value_ct, attrs_ct, erased_at FROM contacts").fetchall()
    assert row[:3] == (None, None, None)
    assert row[3] is not None
    (again,) = vault.tokenize_many([(E, "gone@example.com")], create=False)
    assert again.reason == "unknown-value"
    (fresh,) = vault.tokenize_many([(E, "gone@example.com")])
    assert fresh.created
    assert fresh.token != tok.token
    assert not vault.erase_token(tok.token)


def test_erase_by_value(vault: Vault) -> None:
    (tok,) = vault.tokenize_many([(M, "12125550123")])
    assert vault.erase_value(M, "+1 212 555 0123")
    assert not vault.erase_value(M, "12125550123")
    assert vault.resolve_many([tok.token or ""])[0].value is None


def test_changed_ciphertext_byte_is_unreadable(vault: Vault, settings: Settings) -> None:
    (tok,) = vault.tokenize_many([(E, "a@example.com")])
    db = _db(settings)
    (ct,) = db.execute("SELECT value_ct FROM contacts").fetchone()
    flipped = bytes(ct[:-1]) + bytes([ct[-1] ^ 1])
    db.execute("UPDATE contacts SET value_ct = ?", (flipped,))
    (result,) = vault.resolve_many([tok.token or ""])
    assert result.value is None
    assert result.reason == "unreadable"


def test_ciphertext_moved_to_another_row_is_unreadable(vault: Vault, settings: Settings) -> None:
    a, b = vault.tokenize_many([(E, "a@example.com"), (E, "b@example.com")])
    db = _db(settings)
    (ct_a,) = db.execute("SELECT value_ct FROM contacts WHERE token = ?", (a.token,)).fetchone()
    db.execute("UPDATE contacts SET value_ct = ? WHERE token = ?", (ct_a, b.token))
    assert vault.resolve_many([b.token or ""])[0].reason == "unreadable"
    assert vault.resolve_many([a.token or ""])[0].value == "a@example.com"


def test_no_clear_value_on_disk(vault: Vault, settings: Settings) -> None:
    items = [(E, "findme.person@example.com"), (M, "12125550199")]
    tokens = vault.tokenize_many(items)
    vault.set_attributes(tokens[0].token or "", {"FirstName": "Zebulon"})
    vault.close()
    for path in settings.home_path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            for needle in (b"findme.person", b"12125550199", b"Zebulon"):
                assert needle not in data, f"{needle!r} in clear in {path.name}"


def test_email_case_setting_is_locked_at_creation(settings: Settings) -> None:
    open_vault(settings).close()
    changed = load_settings(env={"SENDVAULT_HOME": settings.home, "SENDVAULT_EMAIL_KEEP_LOCAL_CASE": "true"})
    with pytest.raises(Exception, match="email_keep_local_case"):
        open_vault(changed)


def test_rotated_key_seals_new_values_and_opens_old(vault: Vault) -> None:
    (old,) = vault.tokenize_many([(E, "old@example.com")])
    vault.rotate_data_key()
    (new,) = vault.tokenize_many([(E, "new@example.com")])
    values = [r.value for r in vault.resolve_many([old.token or "", new.token or ""])]
    assert values == ["old@example.com", "new@example.com"]


def test_threads_creating_the_same_new_values_get_one_token_each(vault: Vault) -> None:
    values = [(E, f"user{i}@example.com") for i in range(200)]
    outcomes: list[list[str | None]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        got = [r.token for r in vault.tokenize_many(values)]
        with lock:
            outcomes.append(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(o == outcomes[0] for o in outcomes)
    assert len(set(outcomes[0])) == 200
    assert vault.store.count() == 200


def _process_worker(home: str, start: multiprocessing.synchronize.Event, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    v = open_vault(load_settings(env={"SENDVAULT_HOME": home}))
    start.wait()
    out.put([r.token for r in v.tokenize_many([(E, f"proc{i}@example.com") for i in range(100)])])
    v.close()


def test_processes_creating_the_same_new_values_get_one_token_each(settings: Settings) -> None:
    open_vault(settings).close()
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(settings.home, start, out)) for _ in range(4)]
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
