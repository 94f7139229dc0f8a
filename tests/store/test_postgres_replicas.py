"""Two `sendvault serve` replicas on one PostgreSQL database racing to create the same values.

Marketing Cloud spreads Get Token calls over many connections, so two replicas are asked for
overlapping new values in different orders. Every value must get exactly one token, both callers
the same one, and no caller may see anything but 200. Each test runs several rounds: a race that
passes only sometimes is a failing test.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from tests.replicas import Deployment, Replica, basic

from sendvault.api.auth import register_client
from sendvault.config import load_settings
from sendvault.vault import open_store

ROUNDS = 16
VALUES = 600  # per round; each replica gets 450 of them, 300 shared, in opposite orders
# Odd rounds send each replica one 450-value request (one transaction each, the likeliest to
# interleave); even rounds six 75-value requests (grouped into shared commits on each replica).
BATCHES = (75, 450)


@pytest.fixture(scope="module")
def pair_deployment(pg_module_url: str, tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    return Deployment.create(tmp_path_factory.mktemp("replicas"), pg_module_url)


@pytest.fixture(scope="module")
def pair(pair_deployment: Deployment) -> Iterator[tuple[Replica, Replica]]:
    deployment = pair_deployment
    root = deployment.root
    store = open_store(load_settings(env={**deployment.env, "SENDVAULT_HOME": str(root / "admin")}))
    try:
        secret = register_client(store, "mc")
    finally:
        store.close()
    replicas: list[Replica] = []
    try:
        for name in ("a", "b"):
            replicas.append(deployment.start(name))
        for replica in replicas:
            replica.headers = basic("mc", secret)
        yield replicas[0], replicas[1]
    finally:
        for replica in replicas:
            replica.stop()


def _contacts(url: str) -> int:
    with psycopg.connect(url) as conn:
        (n,) = conn.execute("SELECT count(*) FROM sv_contacts").fetchone()  # type: ignore[misc]
    return int(n)


def _race(
    pair: tuple[Replica, Replica], values: list[str], batch: int
) -> tuple[dict[str, str], dict[str, str]]:
    """Replica a gets the first 3/4 in order, b the last 3/4 reversed; all requests at once."""
    a, b = pair
    share = len(values) * 3 // 4
    plans = [(a, values[:share]), (b, list(reversed(values[-share:])))]
    jobs = [
        (replica, chunk[i : i + batch], side)
        for side, (replica, chunk) in enumerate(plans)
        for i in range(0, len(chunk), batch)
    ]
    barrier = threading.Barrier(len(jobs))
    answers: list[tuple[int, int, bytes, list[str]]] = []
    lock = threading.Lock()

    def send(replica: Replica, batch: list[str], side: int) -> None:
        conn = replica.connection()
        try:
            replica.request("GET", "/healthz", conn=conn)  # handshake before the start line
            body = {
                "tokenValues": [
                    {"tokenRequestId": str(n), "tokenValue": v, "tokenType": "Email"}
                    for n, v in enumerate(batch)
                ]
            }
            barrier.wait()
            status, raw = replica.request("POST", "/v1/mc/tokens", body, replica.headers, conn=conn)
        finally:
            conn.close()
        with lock:
            answers.append((side, status, raw, batch))

    threads = [threading.Thread(target=send, args=job) for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == len(jobs)
    got: tuple[dict[str, str], dict[str, str]] = ({}, {})
    for side, status, raw, batch in answers:
        assert status == 200, (status, raw[:300])
        tokens = json.loads(raw)["tokens"]
        assert len(tokens) == len(batch)
        for item in tokens:
            got[side][batch[int(item["tokenRequestId"])]] = item["token"]
    return got


def test_opposite_orders_give_one_token_per_value_and_no_error(
    pair: tuple[Replica, Replica], pg_module_url: str
) -> None:
    for round_ in range(ROUNDS):
        before = _contacts(pg_module_url)
        tag = uuid.uuid4().hex[:8]
        values = [f"race{round_}.{i}.{tag}@example.com" for i in range(VALUES)]
        from_a, from_b = _race(pair, values, BATCHES[round_ % 2])
        shared = set(from_a) & set(from_b)
        assert len(shared) == VALUES // 2
        assert all(from_a[v] == from_b[v] for v in shared), f"round {round_}: two tokens for one value"
        tokens = {**from_a, **from_b}
        assert len(tokens) == VALUES
        assert len(set(tokens.values())) == VALUES
        assert _contacts(pg_module_url) - before == VALUES, f"round {round_}: stray rows"


# -- the replicas behave as one service ----------------------------------------------------


def _within(seconds: float, ok: Callable[[], bool]) -> float:
    """Seconds until ``ok()`` held, polling; fails if it did not within ``seconds``."""
    started = time.monotonic()
    while not ok():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - started


def _status(replica: Replica, headers: dict[str, str]) -> int:
    body = {"tokens": [{"tokenRequestId": "1", "token": "unknown@tokens.sendvault.invalid"}]}
    return replica.request("POST", "/v1/mc/resolve", body, headers)[0]


def test_an_access_token_from_one_replica_is_accepted_by_the_other(pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    status, raw = a.request(
        "POST",
        "/oauth/token",
        "grant_type=client_credentials",
        {**a.headers, "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert status == 200, raw
    bearer = {"Authorization": f"Bearer {json.loads(raw)['access_token']}"}
    value = f"oauth.{uuid.uuid4().hex[:8]}@example.com"
    status, raw = b.request(
        "POST",
        "/v1/mc/tokens",
        {"tokenValues": [{"tokenRequestId": "1", "tokenValue": value, "tokenType": "Email"}]},
        bearer,
    )
    assert status == 200, raw
    token = json.loads(raw)["tokens"][0]["token"]
    status, raw = a.request(
        "POST", "/v1/mc/resolve", {"tokens": [{"tokenRequestId": "1", "token": token}]}, bearer
    )
    assert status == 200, raw
    assert json.loads(raw)["resolvedTokens"][0]["tokenValue"] == value


def test_a_client_added_or_rotated_through_one_is_honoured_by_all_within_a_second(
    pair: tuple[Replica, Replica], pair_deployment: Deployment
) -> None:
    a, b = pair
    name = f"ops{uuid.uuid4().hex[:6]}"
    # Each replica has looked the client up (and found none) just before it is added.
    assert {_status(r, basic(name, "x" * 43)) for r in pair} == {401}
    added = pair_deployment.cli(a.home, "clients", "add", name, "--scopes", "resolve")
    assert added.returncode == 0, added.stderr
    secret = added.stdout.strip().splitlines()[0]
    for replica in pair:
        assert _within(1.0, lambda r=replica: _status(r, basic(name, secret)) == 200) < 1.0
    rotated = pair_deployment.cli(b.home, "clients", "rotate-secret", name)
    assert rotated.returncode == 0, rotated.stderr
    new = rotated.stdout.strip().splitlines()[0]
    for replica in pair:
        _within(1.0, lambda r=replica: _status(r, basic(name, secret)) == 401)
        assert _status(replica, basic(name, new)) == 200


def _get_token(replica: Replica, value: str) -> str:
    body = {"tokenValues": [{"tokenRequestId": "1", "tokenValue": value, "tokenType": "Email"}]}
    status, raw = replica.request("POST", "/v1/mc/tokens", body, replica.headers)
    assert status == 200, raw
    return str(json.loads(raw)["tokens"][0]["token"])


def _resolved(replica: Replica, token: str) -> str | None:
    body = {"tokens": [{"tokenRequestId": "1", "token": token}]}
    status, raw = replica.request("POST", "/v1/mc/resolve", body, replica.headers)
    assert status == 200, raw
    found = json.loads(raw)["resolvedTokens"]
    return str(found[0]["tokenValue"]) if found else None


def _sealed_with(url: str, token: str) -> int:
    """The data key id in a token's value ciphertext header (version byte, then the id)."""
    with psycopg.connect(url) as conn:
        (ct,) = conn.execute("SELECT value_ct FROM sv_contacts WHERE token = %s", (token,)).fetchone()  # type: ignore[misc]
    return int.from_bytes(bytes(ct)[1:5], "big")


def test_a_key_rotated_through_one_is_used_and_opened_by_all_without_a_restart(
    pair: tuple[Replica, Replica], pair_deployment: Deployment, pg_module_url: str
) -> None:
    a = pair[0]
    rotated = pair_deployment.cli(a.home, "keys", "rotate")
    assert rotated.returncode == 0, rotated.stderr
    # A value sealed with the new key by a process other than the replicas...
    value = f"rotated.{uuid.uuid4().hex[:8]}@example.com"
    made = pair_deployment.cli(a.home, "token", "get", "--type", "email", value)
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    new_key = _sealed_with(pg_module_url, token)
    # ...opens on both replicas, and both seal new values with the new key, without a restart.
    for replica in pair:
        _within(10.0, lambda r=replica: _resolved(r, token) == value)
        _within(
            10.0,
            lambda r=replica: (
                _sealed_with(pg_module_url, _get_token(r, f"k.{uuid.uuid4().hex[:8]}@example.com")) == new_key
            ),
        )


def test_each_audit_log_verifies_alone_and_their_exports_merge_into_one_verifiable_bundle(
    pair: tuple[Replica, Replica], pair_deployment: Deployment, tmp_path: Path
) -> None:
    for replica in pair:
        _get_token(replica, f"audited.{uuid.uuid4().hex[:8]}@example.com")
    keys: list[str] = []
    exports: list[str] = []
    for replica in pair:
        key = replica.home / "keys" / "audit-signing.pub"
        keys.append(f"{replica.name}={key}")
        verified = pair_deployment.cli(replica.home, "audit", "verify", "--public-key", str(key))
        assert verified.returncode == 0, verified.stdout + verified.stderr
        out = tmp_path / f"{replica.name}.jsonl"
        exported = pair_deployment.cli(replica.home, "audit", "export", "--output", str(out))
        assert exported.returncode == 0, exported.stderr
        exports.append(str(out))
    bundle = tmp_path / "bundle.jsonl"
    admin = pair[0].home
    merged = pair_deployment.cli(admin, "audit", "merge", *exports, "--output", str(bundle))
    assert merged.returncode == 0, merged.stderr
    check = ["audit", "verify-bundle", str(bundle), *(x for k in keys for x in ("--public-key", k))]
    done = pair_deployment.cli(admin, *check, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert [s["name"] for s in doc["sources"]] == ["a", "b"]
    assert all(s["records"] > 0 for s in doc["sources"])
    # Each chain is checked under its own replica's key: swapped keys fail.
    swapped = ["--public-key", keys[0].replace("a=", "b=", 1), "--public-key", keys[1].replace("b=", "a=", 1)]
    assert pair_deployment.cli(admin, "audit", "verify-bundle", str(bundle), *swapped).returncode == 1
    # A section cut short breaks the bundle.
    lines = bundle.read_text().splitlines(keepends=True)
    bundle.write_text("".join(lines[:-1]))
    done = pair_deployment.cli(admin, *check)
    assert done.returncode == 1
    assert "BROKEN" in done.stderr
