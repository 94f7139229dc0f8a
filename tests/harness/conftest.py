"""Servers for the harness tests: our own (`serve --dev`) and the fakes of tests/harness/fakes.py."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.harness.fakes import USER, FakeFarm, farm
from tests.server.conftest import DevServer, start_dev_server, stop_dev_server

# Each fake has one flaw; "sound" has none (docstring of tests/harness/fakes.py).
FLAWS: dict[str, frozenset[str]] = {
    name: frozenset({name} if name != "sound" else set())
    for name in (
        "sound",
        "drop-id",
        "unknown-500",
        "tls10",
        "rsa-kex",
        "redirect-302",
        "address-in-token",
        "slow",
        "stop-503",
        "wrong-value",
        "dedupe-values",
        "omit-empty",
    )
}


@pytest.fixture(scope="session")
def fakes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeFarm]:
    yield from farm(tmp_path_factory.mktemp("fakes"), FLAWS)


@pytest.fixture(scope="session")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """Our own server, started as a user would (`sendvault serve --dev`), for the harness alone."""
    server = start_dev_server(tmp_path_factory.mktemp("harness-ours") / "home")
    yield server
    stop_dev_server(server)


def harness(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `sendvault harness ...` as a user would; never raises on a non-zero exit."""
    import os

    return subprocess.run(
        [sys.executable, "-m", "sendvault", "harness", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`sendvault harness ...` in this process (click's runner): quicker than a new interpreter."""
    from click.testing import CliRunner

    from sendvault.cli import cli as root

    result = CliRunner().invoke(root, ["harness", *args], env=env, catch_exceptions=False)
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def fake_args(fakes: FakeFarm, name: str) -> list[str]:
    server = fakes.servers[name]
    return [
        "--url",
        server.url,
        "--user",
        USER,
        "--ca",
        str(fakes.ca_for(name)),
        "--http-url",
        server.http_url,
    ]


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["checks"]}


def failed(report: dict[str, Any]) -> set[str]:
    return {c["id"] for c in report["checks"] if c["status"] == "fail"}


def load_json(text: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(text)
    return doc
