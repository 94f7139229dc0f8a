"""Read scaling from a real streaming standby (`database_read_url`): a primary the test starts and
a standby made from it with ``pg_basebackup -R``, both on free ports.

Whatever the standby's state (in step, lagging, stopped, down from the start), a token handed out
a moment ago resolves; the fallback counter shows which database answered.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import REGISTRY
from tests.pgcluster import Cluster, clusters, free_port, require_pg_bin
from tests.replicas import Deployment, basic

from sendvault.api.auth import register_client
from sendvault.config import load_settings
from sendvault.server.certs import CertAuthority
from sendvault.store.postgres import Standby
from sendvault.vault import Vault, open_store, open_vault
from sendvault.vault.normalize import Kind

pytest.importorskip("psycopg")

USER = "sendvault"


@dataclass
class Pair:
    primary: Cluster
    standby: Cluster

    def url(self, cluster: Cluster) -> str:
        return f"postgresql://{USER}@127.0.0.1:{cluster.port}/{USER}"

    def wait_in_step(self) -> None:
        """Until the standby has replayed everything the primary has written so far (the insert
        position: commits here are asynchronous, so the write position may still be behind)."""
        [(lsn,)] = self.primary.sql("SELECT pg_current_wal_insert_lsn()::text")
        self.standby.wait_until(f"SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn")


@pytest.fixture(scope="module")
def pair() -> Iterator[Pair]:
    bindir = require_pg_bin()
    with clusters() as made:
        primary = Cluster.init(
            bindir, {"wal_level": "replica"},
            ["host all all 127.0.0.1/32 trust", "host replication postgres 127.0.0.1/32 trust"],
        )  # fmt: skip
        made.append(primary)
        primary.start()
        primary.sql(f"CREATE ROLE {USER} LOGIN", f"CREATE DATABASE {USER} OWNER {USER}")
        standby = primary.standby()
        made.append(standby)
        standby.wait_until("SELECT pg_is_in_recovery()")
        yield Pair(primary, standby)


@pytest.fixture
def vault(pair: Pair, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Vault]:
    monkeypatch.setattr(Standby, "RETRY_SECONDS", 0.3)
    settings = load_settings(
        env={
            "SENDVAULT_HOME": str(tmp_path / "home"),
            "SENDVAULT_MASTER_KEY": "A" * 43 + "=",
            "SENDVAULT_DATABASE_URL": pair.url(pair.primary),
            "SENDVAULT_DATABASE_READ_URL": pair.url(pair.standby),
        }
    )
    v = open_vault(settings)
    yield v
    v.close()


def fallbacks(reason: str) -> float:
    return REGISTRY.get_sample_value("sendvault_store_standby_fallbacks_total", {"reason": reason}) or 0.0


def new_tokens(vault: Vault, n: int, tag: str) -> dict[str, str]:
    values = [f"{tag}-{i}@example.com" for i in range(n)]
    made = vault.tokenize_many([(Kind.EMAIL, v) for v in values])
    assert all(m.token for m in made)
    return {m.token: v for m, v in zip(made, values, strict=True) if m.token}


def resolves(vault: Vault, tokens: dict[str, str]) -> None:
    got = vault.resolve_many(list(tokens))
    assert [r.value for r in got] == list(tokens.values())


def test_a_token_handed_out_a_moment_ago_always_resolves(pair: Pair, vault: Vault) -> None:
    for round_ in range(30):
        resolves(vault, new_tokens(vault, 20, f"fresh{round_}"))


def test_replicated_tokens_are_read_from_the_standby(pair: Pair, vault: Vault) -> None:
    tokens = new_tokens(vault, 50, "old")
    pair.wait_in_step()
    before = fallbacks("not-replicated"), fallbacks("standby-unavailable")
    resolves(vault, tokens)
    # Nothing fell back, so every row came from the standby; its own view shows our session.
    assert (fallbacks("not-replicated"), fallbacks("standby-unavailable")) == before
    sessions = pair.standby.sql(f"SELECT count(*) FROM pg_stat_activity WHERE usename = '{USER}'")
    assert sessions[0][0] >= 1


def test_a_lagging_standby_falls_back_to_the_primary(pair: Pair, vault: Vault) -> None:
    old = new_tokens(vault, 10, "before-lag")
    pair.wait_in_step()
    pair.standby.sql("SELECT pg_wal_replay_pause()")
    try:
        pair.standby.wait_until("SELECT pg_get_wal_replay_pause_state() = 'paused'")
        before = fallbacks("not-replicated")
        fresh = new_tokens(vault, 25, "during-lag")
        resolves(vault, {**old, **fresh})  # a mixed batch: old rows from the standby, new from the primary
        assert fallbacks("not-replicated") == before + 1
        resolves(vault, old)
        assert fallbacks("not-replicated") == before + 1  # nothing missing: no second query
    finally:
        pair.standby.sql("SELECT pg_wal_replay_resume()")
    pair.wait_in_step()
    resolves(vault, fresh)
    assert fallbacks("not-replicated") == before + 1


def test_a_stopped_standby_sends_reads_to_the_primary_until_it_is_back(
    pair: Pair, vault: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    tokens = new_tokens(vault, 10, "stop")
    pair.wait_in_step()
    resolves(vault, tokens)  # the standby connection is open
    pair.standby.stop()
    try:
        before = fallbacks("standby-unavailable")
        with caplog.at_level(logging.WARNING, "sendvault.store"):
            for _ in range(5):
                more = new_tokens(vault, 5, f"stopped{_}")
                resolves(vault, {**tokens, **more})
        assert fallbacks("standby-unavailable") >= before + 5
        assert any("standby" in r.getMessage() and "primary" in r.getMessage() for r in caplog.records)
    finally:
        pair.standby.start()
    pair.standby.wait_until("SELECT pg_is_in_recovery()")
    pair.wait_in_step()
    time.sleep(Standby.RETRY_SECONDS)
    resolves(vault, tokens)  # reconnects to the standby
    unavailable = fallbacks("standby-unavailable")
    resolves(vault, tokens)
    assert fallbacks("standby-unavailable") == unavailable


def test_a_standby_down_at_start_does_not_stop_the_vault(pair: Pair, tmp_path: Path) -> None:
    settings = load_settings(
        env={
            "SENDVAULT_HOME": str(tmp_path / "home"),
            "SENDVAULT_MASTER_KEY": "A" * 43 + "=",
            "SENDVAULT_DATABASE_URL": pair.url(pair.primary),
            "SENDVAULT_DATABASE_READ_URL": f"postgresql://{USER}@127.0.0.1:{free_port()}/{USER}",
        }
    )
    vault = open_vault(settings)
    try:
        before = fallbacks("standby-unavailable")
        tokens = new_tokens(vault, 10, "no-standby")
        resolves(vault, tokens)
        resolves(vault, tokens)
        assert fallbacks("standby-unavailable") == before + 2
    finally:
        vault.close()


def test_config_check_reports_the_standby(pair: Pair, tmp_path: Path) -> None:
    home = tmp_path / "home"
    CertAuthority.load_or_create(home / "certs").issue(
        home / "certs/server.pem", home / "certs/server.key", ["localhost"]
    )
    base = {
        **os.environ,
        "SENDVAULT_HOME": str(home),
        "SENDVAULT_MASTER_KEY": "A" * 43 + "=",
        "SENDVAULT_DATABASE_URL": pair.url(pair.primary),
    }

    def check(read_url: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sendvault", "config", "check", "--no-ports"],
            capture_output=True, text=True, timeout=120, check=False,
            env={**base, "SENDVAULT_DATABASE_READ_URL": read_url},
        )  # fmt: skip

    added = subprocess.run(
        [sys.executable, "-m", "sendvault", "clients", "add", "mc"],
        capture_output=True, text=True, timeout=120, check=False, env=base,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    good = check(pair.url(pair.standby))
    assert good.returncode == 0, good.stderr
    assert (
        f"standby 127.0.0.1:{pair.standby.port} answers as a streaming standby" in good.stdout + good.stderr
    )
    port = free_port()
    down = check(f"postgresql://{USER}@127.0.0.1:{port}/{USER}")
    assert down.returncode == 0, down.stderr  # a warning: the primary serves reads meanwhile
    said = down.stdout + down.stderr
    assert f"standby 127.0.0.1:{port} cannot connect" in said
    assert "resolve reads go to the primary until it answers" in said
    primary = check(pair.url(pair.primary))
    assert "is not a standby" in primary.stdout + primary.stderr


def test_a_read_url_naming_another_vault_never_answers(
    pair: Pair, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Another vault (its own keys) in another database: a plausible misconfiguration. Its rows
    # must never stand in for this vault's, even for tokens that happen to exist in both.
    pair.primary.sql(f"CREATE DATABASE other_vault OWNER {USER}")
    other = f"postgresql://{USER}@127.0.0.1:{pair.primary.port}/other_vault"

    def settings(home: str, key: str, **extra: str) -> dict[str, str]:
        return {"SENDVAULT_HOME": str(tmp_path / home), "SENDVAULT_MASTER_KEY": key * 43 + "=", **extra}

    open_vault(load_settings(env=settings("other", "B", SENDVAULT_DATABASE_URL=other))).close()
    primary = pair.url(pair.primary)
    env = settings("home", "A", SENDVAULT_DATABASE_URL=primary, SENDVAULT_DATABASE_READ_URL=other)
    vault = open_vault(load_settings(env=env))
    try:
        before = fallbacks("standby-unavailable")
        with caplog.at_level(logging.WARNING, "sendvault.store"):
            tokens = new_tokens(vault, 10, "wrong-standby")
            resolves(vault, tokens)
        assert fallbacks("standby-unavailable") == before + 1
        assert any("another vault's keys" in r.getMessage() for r in caplog.records)
    finally:
        vault.close()


def test_serve_replicas_resolve_fresh_tokens_through_a_lagging_standby(pair: Pair, tmp_path: Path) -> None:
    # The whole path: `sendvault serve` with two workers, Get Token then resolve at once over
    # HTTPS, while the standby replays nothing.
    pair.primary.sql(f"CREATE DATABASE serve_vault OWNER {USER}")
    primary = f"postgresql://{USER}@127.0.0.1:{pair.primary.port}/serve_vault"
    standby = f"postgresql://{USER}@127.0.0.1:{pair.standby.port}/serve_vault"
    deployment = Deployment.create(tmp_path, primary, database_read_url=standby)
    store = open_store(load_settings(env={**deployment.env, "SENDVAULT_HOME": str(tmp_path / "admin")}))
    try:
        secret = register_client(store, "mc")
    finally:
        store.close()
    pair.wait_in_step()
    admin = free_port()
    replica = deployment.start("r1", workers=2, admin_port=str(admin))
    replica.headers = basic("mc", secret)
    pair.standby.sql("SELECT pg_wal_replay_pause()")
    try:
        for round_ in range(5):
            values = [f"serve{round_}.{i}@example.com" for i in range(50)]
            items = [
                {"tokenRequestId": str(n), "tokenValue": v, "tokenType": "Email"}
                for n, v in enumerate(values)
            ]
            body = {"tokenValues": items}
            status, raw = replica.request("POST", "/v1/mc/tokens", body, replica.headers)
            assert status == 200, raw[:300]
            tokens = {int(t["tokenRequestId"]): t["token"] for t in json.loads(raw)["tokens"]}
            ask = {"tokens": [{"tokenRequestId": n, "token": tokens[n]} for n in range(50)]}
            status, raw = replica.request("POST", "/v1/mc/resolve", ask, replica.headers)
            assert status == 200, raw[:300]
            answer = json.loads(raw)
            assert answer["unresolvedTokens"] == []
            assert {r["tokenRequestId"]: r["tokenValue"] for r in answer["resolvedTokens"]} == dict(
                enumerate(values)
            )
        # The workers' fallbacks reach the admin listener's metrics, which the alerts read.
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=30) as answer:
            metrics = answer.read().decode()
        found = re.search(
            r'^sendvault_store_standby_fallbacks_total\{reason="not-replicated"\} (\S+)$', metrics, re.M
        )
        assert found is not None, metrics[-2000:]
        assert float(found.group(1)) >= 5
    finally:
        pair.standby.sql("SELECT pg_wal_replay_resume()")
        output = replica.stop()
    assert f"(resolve reads from standby 127.0.0.1:{pair.standby.port})" in output
    assert "resolve reads go to the primary" not in output  # the start-up check found it answering
