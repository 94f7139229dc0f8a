"""Two `sendvault serve` replicas on one PostgreSQL database racing to create the same values.

Marketing Cloud spreads Get Token calls over many connections, so two replicas are asked for
overlapping new values in different orders. Every value must get exactly one token, both callers
the same one, and no caller may see anything but 200. Each test runs several rounds: a race that
passes only sometimes is a failing test.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator

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
def pair(pg_module_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Replica, Replica]]:
    root = tmp_path_factory.mktemp("replicas")
    deployment = Deployment.create(root, pg_module_url)
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
