"""A PostgreSQL restart or outage under a running sendvault: 503 with a reason while the database
is away, and answers again as soon as it is back, without restarting sendvault.

The cluster is the test's own (tests/pgcluster.py), so it can be restarted and stopped; the login
has a password, so the server output can be searched for it. A restart cuts every pooled
connection: each must be found stale and replaced (the thread-local ones, the group writer's,
the event loop's, the standby's and the audit witness's), never reused until it fails.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from tests.pgcluster import Cluster, clusters, require_pg_bin
from tests.replicas import Deployment, Replica

from sendvault.audit.marks import Mark
from sendvault.audit.witness import PostgresWitness
from sendvault.store import NewContact
from sendvault.store.postgres import PostgresStore

pytest.importorskip("psycopg")

USER = "sv_outage"
PASSWORD = "Outage-pw-5f3a9c"  # must never appear in any output
# A call during an outage waits at most for one failed connect (connect_timeout 5 s) and the
# answer; Marketing Cloud allows 60 s.
CALL_SECONDS = 10.0
# After the database answers again, the first calls may still meet it finishing start-up.
RECOVERY_SECONDS = 5.0


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    bindir = require_pg_bin()
    with clusters() as made:
        cluster = Cluster.init(bindir, {"password_encryption": "scram-sha-256"},
                               ["host all all 127.0.0.1/32 scram-sha-256"])  # fmt: skip
        made.append(cluster)
        cluster.start()
        cluster.sql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        yield cluster


@pytest.fixture
def database(cluster: Cluster, request: pytest.FixtureRequest) -> str:
    """A fresh database owned by the login, for one test; its URL (with the password)."""
    name = f"outage_{request.node.name.lower()[:40]}"
    name = "".join(c if c.isalnum() else "_" for c in name)
    cluster.sql(f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name} OWNER {USER}")
    return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{cluster.port}/{name}"


@dataclass
class Calls:
    """Get Token and resolve against a replica; every answer kept for the checks."""

    replica: Replica
    answers: list[tuple[str, int, bytes, float]] = field(default_factory=list)
    counter: int = 0

    def get_token(self) -> tuple[int, bytes]:
        self.counter += 1
        value = f"outage{self.counter}.{time.monotonic_ns()}@example.com"
        body = {"tokenValues": [{"tokenRequestId": "1", "tokenValue": value, "tokenType": "Email"}]}
        return self._call("/v1/mc/tokens", body)

    def resolve(self, token: str) -> tuple[int, bytes]:
        return self._call("/v1/mc/resolve", {"tokens": [{"tokenRequestId": "1", "token": token}]})

    def _call(self, path: str, body: object) -> tuple[int, bytes]:
        started = time.monotonic()
        status, raw = self.replica.request("POST", path, body, self.replica.headers)
        self.answers.append((path, status, raw, time.monotonic() - started))
        return status, raw

    def round_trip(self) -> bool:
        """A new token, then resolving it: True when both answered 200 (and agree)."""
        status, raw = self.get_token()
        if status != 200:
            return False
        [item] = json.loads(raw)["tokens"]
        status, raw = self.resolve(item["token"])
        if status != 200:
            return False
        assert len(json.loads(raw)["resolvedTokens"]) == 1, raw[:300]
        return True

    def until_answered(self, known: str) -> float:
        """Seconds until both workers answer again: four round trips in a row, and ``known``
        resolving, succeed (bounded by RECOVERY_SECONDS)."""
        started = time.monotonic()
        streak = 0
        while streak < 4:
            ok = self.round_trip() and self.resolve(known)[0] == 200
            streak = streak + 1 if ok else 0
            assert time.monotonic() - started < RECOVERY_SECONDS, self.answers[-3:]
            if not ok:
                time.sleep(0.05)
        return time.monotonic() - started

    def first_token(self) -> str:
        assert self.round_trip()
        [(_, _, raw, _)] = [a for a in self.answers if a[0] == "/v1/mc/tokens"][-1:]
        return str(json.loads(raw)["tokens"][0]["token"])

    def check_every_failure_is_a_503_with_a_reason(self) -> None:
        for path, status, raw, seconds in self.answers:
            assert status in (200, 503), (path, status, raw[:300])
            assert seconds < CALL_SECONDS, (path, status, seconds)
            if status == 503:
                assert json.loads(raw)["reason"] in ("store unavailable", "audit log unavailable"), raw


@pytest.fixture(params=["store", "store+witness"])
def serve(cluster: Cluster, database: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Calls]:
    """`sendvault serve` (two workers) on the cluster; with ``+witness`` its audit log also
    writes a checkpoint to a witness table there every 0.2 s."""
    witness = (
        {"audit_witness": database, "audit_checkpoint_seconds": "0.2"} if "witness" in request.param else {}
    )
    deployment = Deployment.create(tmp_path, database, **witness)
    replica = deployment.start_with_client("r1", workers=2)
    calls = Calls(replica)
    try:
        yield calls
    finally:
        if not cluster.running():
            cluster.start()
        output = replica.stop()
    calls.check_every_failure_is_a_503_with_a_reason()
    assert "Traceback" not in output, output[-3000:]
    assert "status=500" not in output, output[-3000:]
    assert PASSWORD not in output


def test_serve_answers_again_after_a_database_restart_without_being_restarted(
    cluster: Cluster, serve: Calls, request: pytest.FixtureRequest
) -> None:
    known = serve.first_token()
    for _ in range(3):
        before = len(serve.answers)
        cluster.restart()
        serve.until_answered(known)
        if "witness" not in request.node.callspec.params["serve"]:
            # Every connection either worker held was cut, and each is replaced before use: the
            # very first calls already work. (A witness write that fell in the restart stops
            # the audit log until its next try, a second later: 503 meanwhile.)
            assert all(status == 200 for _, status, _, _ in serve.answers[before:]), serve.answers[before:]


def test_serve_answers_503_while_the_database_is_down_and_200_once_it_is_back(
    cluster: Cluster, serve: Calls
) -> None:
    known = serve.first_token()
    for _ in range(3):
        cluster.stop()
        down = len(serve.answers)
        for _ in range(4):
            assert serve.get_token()[0] == 503
            assert serve.resolve(known)[0] == 503
        assert all(json.loads(raw)["reason"] for _, _, raw, _ in serve.answers[down:])
        cluster.start()
        serve.until_answered(known)


def _row(tag: str) -> NewContact:
    # Version byte 0: not a sealed value, so the store checks no data key for it.
    return NewContact(f"tok-{tag}", 1, tag.encode().ljust(32, b"\0"), b"\0" + tag.encode().ljust(39, b"\0"))


def _fallbacks() -> float:
    labels = {"reason": "standby-unavailable"}
    return REGISTRY.get_sample_value("sendvault_store_standby_fallbacks_total", labels) or 0.0


def test_the_store_replaces_every_stale_connection_after_a_restart(cluster: Cluster, database: str) -> None:
    # The read URL names the same server: its connections are cut by the restart too, and must be
    # replaced rather than failed (a failure would send reads to the primary and be counted).
    store = PostgresStore(database, read_url=database)
    try:
        store.migrate()
        store.insert_new([_row("a")])  # the group writer's connection
        assert store.fetch_for_resolve(["tok-a"])  # the standby's and this thread's
        for round_ in range(3):
            cluster.restart()
            before = _fallbacks()
            store.ping()
            assert store.insert_new([_row(f"b{round_}")]) == {_row(f"b{round_}").bidx: f"tok-b{round_}"}
            assert [r[0] for r in store.fetch_for_resolve([f"tok-b{round_}"])] == [f"tok-b{round_}"]
            assert _fallbacks() == before
    finally:
        store.close()


def test_the_loop_writer_replaces_its_connection_after_a_restart(cluster: Cluster, database: str) -> None:
    import asyncio

    store = PostgresStore(database)
    try:
        store.migrate()

        async def rounds() -> None:
            assert await store.insert_new_async([_row("loop0")])
            for round_ in range(1, 4):
                cluster.restart()
                found = await store.insert_new_async([_row(f"loop{round_}")])
                assert found == {_row(f"loop{round_}").bidx: f"tok-loop{round_}"}

        asyncio.run(rounds())
    finally:
        store.close()


def test_a_postgres_witness_writes_again_after_a_restart(
    cluster: Cluster, database: str, caplog: pytest.LogCaptureFixture
) -> None:
    witness = PostgresWitness(database)
    assert PASSWORD not in witness.name
    try:
        witness.send(Mark(1, b"h" * 32, b"s" * 64, 1))
        for seq in range(2, 5):
            cluster.restart()
            witness.send(Mark(seq, b"h" * 32, b"s" * 64, seq))  # first try, no WitnessUnavailable
        assert [m.seq for m in witness.heads()] == [1, 2, 3, 4]
    finally:
        witness.close()
    with caplog.at_level(logging.DEBUG):
        assert all(PASSWORD not in r.getMessage() for r in caplog.records)


def test_a_worker_starting_while_the_database_restarts_waits_for_it(
    cluster: Cluster, database: str, tmp_path: Path
) -> None:
    import threading

    from sendvault.config import load_settings
    from sendvault.errors import StoreUnavailable
    from sendvault.server.worker import open_app
    from sendvault.vault import open_vault

    env = {"SENDVAULT_HOME": str(tmp_path / "home"), "SENDVAULT_DATABASE_URL": database}
    settings = load_settings(env={**env, "SENDVAULT_MASTER_KEY": "A" * 43 + "="})
    open_vault(settings).close()
    cluster.stop()
    try:
        with pytest.raises(StoreUnavailable):
            open_app(settings, wait_seconds=0.5)  # bounded: a database that stays away stops it
        later = threading.Timer(1.0, cluster.start)
        later.start()
        app = open_app(settings, wait_seconds=30)
        later.join()
    finally:
        if not cluster.running():
            cluster.start()
    try:
        app.vault.store.ping()
    finally:
        app.auth.close()
        app.vault.close()
        if app.audit is not None:
            app.audit.close()
