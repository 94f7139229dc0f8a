"""OpenBao holds the root key: a vault on the transit provider, end to end against a real
`bao server` (the session fixture), including OpenBao stopped mid-run and started again."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import run_cli
from tests.openbao_server import OpenBaoServer
from tests.replicas import Deployment, Replica

from sendvault.config import load_settings
from sendvault.crypto.transit import ciphertext_version
from sendvault.vault import open_store


def _env(openbao: OpenBaoServer, key: str) -> dict[str, str]:
    return openbao.settings_env(key)


def test_vault_keys_are_wrapped_by_transit_and_kek_rotation_uses_the_newest_version(
    openbao: OpenBaoServer, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    key = openbao.new_key()
    env = _env(openbao, key)
    made = run_cli(home, "token", "get", "--type", "email", "a@example.com", env=env)
    assert made.returncode == 0, made.stderr
    assert not (home / "keys" / "master.key").exists()
    store = open_store(load_settings(env={**env, "SENDVAULT_HOME": str(home)}))
    try:
        assert {ciphertext_version(k.wrapped.decode()) for k in store.load_keys()} == {1}
    finally:
        store.close()

    openbao.rotate(key)
    status = json.loads(run_cli(home, "keys", "status", "--json", env=env).stdout)
    kek = status["keys"][0]
    assert kek["provider"] == "transit"
    assert kek["versions_in_use"] == [1]
    assert kek["rewrap_needed"]
    done = run_cli(home, "keys", "rotate", "kek", env=env)
    assert done.returncode == 0, done.stderr
    status = json.loads(run_cli(home, "keys", "status", "--json", env=env).stdout)
    assert status["keys"][0]["versions_in_use"] == [2]
    again = run_cli(home, "token", "get", "--type", "email", "a@example.com", env=env)
    assert again.stdout == made.stdout
    assert run_cli(home, "token", "resolve", made.stdout.strip(), env=env).stdout.strip() == "a@example.com"


def test_start_refuses_in_one_line_when_openbao_is_unreachable(
    openbao: OpenBaoServer, tmp_path: Path
) -> None:
    from tests.openbao_server import _free_port

    env = {**_env(openbao, openbao.new_key()), "SENDVAULT_TRANSIT_URL": f"https://127.0.0.1:{_free_port()}"}
    from tests.replicas import free_port

    done = run_cli(tmp_path / "home", "serve", "--dev", env={**env, "SENDVAULT_HTTPS_PORT": str(free_port())})
    assert done.returncode != 0
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert "unreachable" in errors[0]
    assert "Traceback" not in done.stderr


def test_wrong_token_is_one_line(openbao: OpenBaoServer, tmp_path: Path) -> None:
    env = {**_env(openbao, openbao.new_key()), "SENDVAULT_TRANSIT_TOKEN": "s.wrong"}
    done = run_cli(tmp_path / "home", "token", "get", "--type", "email", "a@example.com", env=env)
    assert done.returncode == 1
    assert "permission denied" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.fixture
def served(openbao: OpenBaoServer, tmp_path: Path) -> Iterator[tuple[Deployment, Replica, dict[str, str]]]:
    key = openbao.new_key()
    deployment = Deployment.create(tmp_path / "d", f"sqlite:///{tmp_path / 'vault.db'}", log_level="warning")
    del deployment.env["SENDVAULT_MASTER_KEY"]
    deployment.env.update(_env(openbao, key))
    # One worker: /healthz answering then means every worker has unwrapped its keys (a worker
    # still starting when OpenBao stops cannot start, by design: start needs the provider).
    replica = deployment.start_with_client("a", workers=1)
    try:
        yield deployment, replica, deployment.env
    finally:
        print(replica.stop()[-4000:])  # shown when the test fails
        if not openbao.running:
            openbao.start()


def _get_tokens(replica: Replica, values: list[str]) -> dict[str, str]:
    body = {
        "tokenValues": [
            {"tokenRequestId": str(i), "tokenValue": v, "tokenType": "Email"} for i, v in enumerate(values)
        ]
    }
    status, raw = replica.request("POST", "/v1/mc/tokens", body, replica.headers)
    assert status == 200, raw[:300]
    return {values[int(t["tokenRequestId"])]: t["token"] for t in json.loads(raw)["tokens"]}


def _resolve(replica: Replica, tokens: list[str]) -> list[str | None]:
    body = {"tokens": [{"tokenRequestId": str(i), "token": t} for i, t in enumerate(tokens)]}
    status, raw = replica.request("POST", "/v1/mc/resolve", body, replica.headers)
    assert status == 200, raw[:300]
    return [r.get("tokenValue") for r in json.loads(raw)["resolvedTokens"]]


def test_serving_goes_on_while_openbao_is_stopped_and_resumes_after(
    openbao: OpenBaoServer, served: tuple[Deployment, Replica, dict[str, str]]
) -> None:
    deployment, replica, _env_used = served
    before = _get_tokens(replica, [f"b{i}.{uuid.uuid4().hex[:6]}@example.com" for i in range(50)])
    openbao.stop()
    try:
        # Data keys were unwrapped at start and stay in memory: reads and new tokens go on.
        for _ in range(5):
            assert _resolve(replica, list(before.values())) == list(before)
            assert _get_tokens(replica, list(before)) == before
        during = _get_tokens(replica, [f"d{i}.{uuid.uuid4().hex[:6]}@example.com" for i in range(50)])
        assert _resolve(replica, list(during.values())) == list(during)
        # What needs OpenBao says so in one line, and changes nothing.
        refused = deployment.cli(replica.home, "keys", "rotate", "dek")
        assert refused.returncode == 1
        assert "unreachable" in refused.stderr
        assert "Traceback" not in refused.stderr
    finally:
        openbao.start()
    # OpenBao back: a rotation and a re-encryption go through; the server loads the new key.
    assert deployment.cli(replica.home, "keys", "rotate", "dek").returncode == 0
    done = deployment.cli(replica.home, "keys", "reencrypt")
    assert done.returncode == 0, done.stderr
    after = _get_tokens(replica, [f"a{i}.{uuid.uuid4().hex[:6]}@example.com" for i in range(20)])
    everything = {**before, **during, **after}
    assert _resolve(replica, list(everything.values())) == list(everything)
    assert _get_tokens(replica, list(everything)) == everything
