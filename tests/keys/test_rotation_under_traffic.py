"""Every key rotation while a real `sendvault serve` (two workers) answers Marketing Cloud calls.

Traffic threads keep sending Get Token (known and new values) and Resolve for the whole run;
meanwhile the operator's commands rotate the data key and the blind-index key, re-encrypt and
re-index, retire the old keys and rotate the KEK. No request may fail, no value may get a second
token, every token must resolve to its value. Several rounds per backend: a race that passes
only sometimes is a failing test.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.replicas import Deployment, Replica

ROUNDS = 3
SEED = 1500


class Traffic:
    """Threads that call the API until stopped, recording every failure and every token seen."""

    def __init__(self, replica: Replica, known: dict[str, str]) -> None:
        self.replica = replica
        self.known = dict(known)
        self.failures: list[str] = []
        self.calls = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(3)]

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=120)

    def _run(self, n: int) -> None:
        conn = self.replica.connection()
        values = sorted(self.known)
        step = 0
        try:
            while not self._stop.is_set():
                step += 1
                chosen = values[(step * 37 + n * 101) % len(values) :][:40]
                fresh = [f"new.{n}.{step}.{uuid.uuid4().hex[:8]}@example.com" for _ in range(5)]
                self._get_tokens(conn, chosen + fresh)
                with self._lock:
                    pairs = list(self.known.items())[step % 50 :: 25][:60]
                self._resolve(conn, pairs)
        except Exception as exc:  # noqa: BLE001 - recorded and asserted on by the test
            with self._lock:
                self.failures.append(f"{type(exc).__name__}: {exc}")
        finally:
            conn.close()

    def _get_tokens(self, conn: object, values: list[str]) -> None:
        body = {
            "tokenValues": [
                {"tokenRequestId": str(i), "tokenValue": v, "tokenType": "Email"}
                for i, v in enumerate(values)
            ]
        }
        status, raw = self.replica.request("POST", "/v1/mc/tokens", body, self.replica.headers, conn=conn)  # type: ignore[arg-type]
        with self._lock:
            self.calls += 1
            if status != 200:
                self.failures.append(f"get token {status}: {raw[:200]!r}")
                return
            for item in json.loads(raw)["tokens"]:
                value = values[int(item["tokenRequestId"])]
                token = item.get("token")
                if not token:
                    self.failures.append(f"get token gave no token: {item}")
                elif self.known.setdefault(value, token) != token:
                    self.failures.append("a value got a second token")

    def _resolve(self, conn: object, pairs: list[tuple[str, str]]) -> None:
        body = {"tokens": [{"tokenRequestId": str(i), "token": t} for i, (_, t) in enumerate(pairs)]}
        status, raw = self.replica.request("POST", "/v1/mc/resolve", body, self.replica.headers, conn=conn)  # type: ignore[arg-type]
        with self._lock:
            self.calls += 1
            if status != 200:
                self.failures.append(f"resolve {status}: {raw[:200]!r}")
                return
            for item in json.loads(raw)["resolvedTokens"]:
                value = pairs[int(item["tokenRequestId"])][0]
                if item.get("tokenValue") != value:
                    self.failures.append(f"resolve gave {item.get('tokenValue')!r} instead of the value")


def _seed(replica: Replica, count: int) -> dict[str, str]:
    values = [f"seed.{i}.{uuid.uuid4().hex[:6]}@example.com" for i in range(count)]
    known: dict[str, str] = {}
    for start in range(0, count, 500):
        chunk = values[start : start + 500]
        body = {
            "tokenValues": [
                {"tokenRequestId": str(i), "tokenValue": v, "tokenType": "Email"} for i, v in enumerate(chunk)
            ]
        }
        status, raw = replica.request("POST", "/v1/mc/tokens", body, replica.headers)
        assert status == 200, raw[:300]
        for item in json.loads(raw)["tokens"]:
            known[chunk[int(item["tokenRequestId"])]] = item["token"]
    return known


@pytest.fixture(params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Deployment, Replica]]:
    if request.param == "postgres":
        url = request.getfixturevalue("pg_url")
    else:
        url = f"sqlite:///{tmp_path / 'vault.db'}"
    deployment = Deployment.create(tmp_path / "d", url)
    # The KEK lives in the replica's key file (rotated by `keys rotate kek`), not the environment.
    del deployment.env["SENDVAULT_MASTER_KEY"]
    # The server's own background re-encryption is off: the rounds run `keys reencrypt` (and the
    # background run has its own test), so the two never share the work by chance.
    # Warnings only: the replica's output is a pipe read at its end, and access lines would fill it.
    replica = deployment.start_with_client("a", workers=2, reencrypt_share="0", log_level="warning")
    try:
        yield deployment, replica
    finally:
        replica.stop()


def _ok(deployment: Deployment, home: Path, *args: str) -> str:
    done = deployment.cli(home, *args)
    assert done.returncode == 0, (args, done.stderr[-2000:])
    return done.stdout


def test_every_rotation_under_traffic_fails_no_request_and_changes_no_token(
    served: tuple[Deployment, Replica],
) -> None:
    deployment, replica = served
    home = replica.home
    known = _seed(replica, SEED)
    for round_ in range(ROUNDS):
        with Traffic(replica, known) as traffic:
            _ok(deployment, home, "keys", "rotate", "dek")
            _ok(deployment, home, "keys", "rotate", "index")
            # Moves the rows to the new data key, then to the new blind-index key, and retires
            # the old blind-index key once no row uses it.
            _ok(deployment, home, "keys", "reencrypt", "--batch", "200")
            status = json.loads(_ok(deployment, home, "keys", "status", "--json"))
            assert status["reindexing"]["older_index_keys"] == [], status["reindexing"]
            assert len([k for k in status["keys"] if k["kind"] == "blind-index"]) == 1
            current = status["reencryption"]["current_data_key"]
            older = [k["id"] for k in status["keys"] if k["kind"] == "data" and k["id"] != current]
            for key_id in older:
                done = deployment.cli(home, "keys", "retire", str(key_id))
                # A server worker that had not yet loaded the newest key may have sealed a row
                # under the old one after the re-encryption: then the key is kept (never lost).
                if done.returncode != 0:
                    assert "still protects" in done.stderr
                    _ok(deployment, home, "keys", "reencrypt")
                    _ok(deployment, home, "keys", "retire", str(key_id))
            _ok(deployment, home, "keys", "rotate", "kek")
        assert traffic.failures == [], f"round {round_}: {traffic.failures[:5]}"
        assert traffic.calls > 10
        known = traffic.known
    status = json.loads(_ok(deployment, home, "keys", "status", "--json"))
    assert next(k for k in status["keys"] if k["kind"] == "data")["current"]
    # Every token issued before and during the rotations still resolves to its value.
    tokens = list(known.values())
    done = deployment.cli(home, "token", "resolve", "-", stdin="\n".join(tokens) + "\n")
    assert done.returncode == 0, done.stderr[-500:]
    assert done.stdout.splitlines() == list(known.keys())


@pytest.fixture
def background(tmp_path: Path) -> Iterator[tuple[Deployment, Replica]]:
    deployment = Deployment.create(tmp_path / "d", f"sqlite:///{tmp_path / 'vault.db'}")
    replica = deployment.start_with_client("a", workers=2, reencrypt_share="0.5", log_level="warning")
    try:
        yield deployment, replica
    finally:
        replica.stop()


def test_serve_moves_rows_to_a_new_data_key_in_the_background_under_traffic(
    background: tuple[Deployment, Replica],
) -> None:
    deployment, replica = background
    home = replica.home
    known = _seed(replica, SEED)
    with Traffic(replica, known) as traffic:
        _ok(deployment, home, "keys", "rotate", "dek")
        deadline = time.monotonic() + 90
        while True:
            status = json.loads(_ok(deployment, home, "keys", "status", "--json"))
            if status["reencryption"]["rows_under_older_keys"] == 0:
                break
            assert time.monotonic() < deadline, status["reencryption"]
            time.sleep(1)
    assert traffic.failures == []
    old = [k["id"] for k in status["keys"] if k["kind"] == "data" and not k["current"]]
    for key_id in old:
        _ok(deployment, home, "keys", "retire", str(key_id))
    tokens = list(traffic.known.values())
    done = deployment.cli(home, "token", "resolve", "-", stdin="\n".join(tokens) + "\n")
    assert done.stdout.splitlines() == list(traffic.known.keys())


def test_serve_moves_rows_to_a_new_blind_index_key_in_the_background_under_traffic(
    background: tuple[Deployment, Replica],
) -> None:
    deployment, replica = background
    home = replica.home
    known = _seed(replica, SEED)
    before = json.loads(_ok(deployment, home, "keys", "status", "--json"))
    (old,) = [k["id"] for k in before["keys"] if k["kind"] == "blind-index"]
    with Traffic(replica, known) as traffic:
        _ok(deployment, home, "keys", "rotate", "index")
        deadline = time.monotonic() + 90
        while True:
            status = json.loads(_ok(deployment, home, "keys", "status", "--json"))
            # Done when the server has moved every row and retired the old key by itself.
            if status["reindexing"]["complete"]:
                break
            assert time.monotonic() < deadline, status["reindexing"]
            time.sleep(1)
    assert traffic.failures == []
    assert traffic.calls > 10
    status = json.loads(_ok(deployment, home, "keys", "status", "--json"))  # with the last rows
    index = [k for k in status["keys"] if k["kind"] == "blind-index"]
    assert [k["id"] for k in index] == [status["reindexing"]["current_index_key"]]
    assert index[0]["id"] != old
    assert index[0]["rows"] == len(traffic.known)
    # Every value answers the token it had before the rotation, and every token its value.
    values = list(traffic.known)
    got = deployment.cli(
        home, "token", "get", "--type", "email", "--no-create", "-", stdin="\n".join(values) + "\n"
    )
    assert got.returncode == 0, got.stderr[-500:]
    assert got.stdout.split() == [traffic.known[v] for v in values]
    tokens = list(traffic.known.values())
    done = deployment.cli(home, "token", "resolve", "-", stdin="\n".join(tokens) + "\n")
    assert done.stdout.splitlines() == values
    # The server audited its own work: the move and the retirement of the old key.
    shown = deployment.cli(home, "audit", "show", "--client", "serve", "--json")
    assert shown.returncode == 0, shown.stderr[-500:]
    mine = json.loads(shown.stdout)
    assert sorted((r["event"], r["meta"]["key"]) for r in mine) == [
        ("key:reencrypt", "index"),
        ("key:retire", "index"),
    ]
