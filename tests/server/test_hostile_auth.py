"""Strangers at Marketing Cloud's address (a NAT, a load balancer not in `trusted_proxies`) guess
wrong again and again: against a real server, the right credential is never refused."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from tests.helpers import run_cli
from tests.server.conftest import DevServer, start_dev_server, stop_dev_server
from tests.server.helpers import auth_header, https_request

# Checks of a failing address 20 ms apart instead of 100 ms: the same behaviour, a faster test.
ENV = {"SENDVAULT_AUTH_FAILURE_SPACING_SECONDS": "0.02"}
RESOLVE = {"tokens": [{"tokenRequestId": "1", "token": "t"}]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    running = start_dev_server(tmp_path_factory.mktemp("guessing") / "home", env=ENV)
    yield running
    assert "Traceback" not in stop_dev_server(running)


def _basic(client: str, secret: str) -> dict[str, str]:
    return {"authorization": "Basic " + base64.b64encode(f"{client}:{secret}".encode()).decode()}


def _resolve(server: DevServer, headers: dict[str, str]) -> tuple[int, float]:
    start = time.monotonic()
    status = https_request(server, "POST", "/v1/mc/resolve", RESOLVE, headers)[0]
    return status, time.monotonic() - start


def _new_client(server: DevServer, name: str) -> dict[str, str]:
    """A client added while the server runs: its secret has never been checked by it."""
    added = run_cli(server.home, "clients", "add", name, "--json")
    assert added.returncode == 0, added.stderr
    return _basic(name, json.loads(added.stdout)["client_secret"])


def _bearer(server: DevServer) -> dict[str, str]:
    form = "grant_type=client_credentials"
    headers = {"authorization": auth_header(server), "content-type": "application/x-www-form-urlencoded"}
    status, _, body = https_request(server, "POST", "/oauth/token", form, headers)
    assert status == 200
    return {"authorization": "Bearer " + json.loads(body)["access_token"]}


def test_the_right_credential_works_after_100_failures_from_its_address(server: DevServer) -> None:
    bearer = _bearer(server)
    fresh = _new_client(server, "fresh")
    wrong = [
        *[{"authorization": "Bearer " + bearer["authorization"][7:-2] + "xx"}] * 80,
        *[_basic("dev", "wrong")] * 10,
        *[_basic("fresh", "wrong")] * 10,
    ]
    with ThreadPoolExecutor(10) as pool:
        statuses = list(pool.map(lambda h: _resolve(server, h)[0], wrong))
    assert statuses == [401] * 100  # slowed, never 429: nobody is refused for what others did
    for headers in (bearer, {"authorization": auth_header(server)}):
        status, took = _resolve(server, headers)
        assert status == 200
        assert took < 1.0  # a valid token, a secret seen before: no wait at all
    status, took = _resolve(server, fresh)  # never checked before: scrypt, in its turn
    assert status == 200
    assert took < 3.0


def test_the_right_credential_is_served_while_strangers_keep_guessing(server: DevServer) -> None:
    stop = threading.Event()
    refused: list[int] = []

    def guess() -> None:
        while not stop.is_set():
            status = _resolve(server, {"authorization": "Bearer not.a.token"})[0]
            if status != 401:
                refused.append(status)

    guessers = [threading.Thread(target=guess) for _ in range(8)]
    for thread in guessers:
        thread.start()
    try:
        time.sleep(0.5)
        known = {"authorization": auth_header(server)}
        for _ in range(5):
            status, took = _resolve(server, known)
            assert status == 200
            assert took < 1.0
        # A secret this server has never checked waits behind the guesses already queued from
        # its address (at most their connections), then passes.
        status, took = _resolve(server, _new_client(server, "newcomer"))
        assert status == 200
        assert took < 10.0
    finally:
        stop.set()
        for thread in guessers:
            thread.join()
    assert refused == []
