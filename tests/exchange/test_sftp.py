"""SFTP push/pull/sweep/status against a real asyncssh server on 127.0.0.1 (one per module)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.exchange.sftp_server import PASSWORD, SftpServer
from tests.helpers import run_cli

from sendvault.exchange import Exchange, HostKeyError, SftpError, TransferState, parse_remote
from sendvault.exchange.retention import DAY

NOW = 1_900_000_000.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SftpServer]:
    base = tmp_path_factory.mktemp("sftp")
    srv = SftpServer(base / "root", base / "keys")
    yield srv
    srv.stop()


class Audit:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, meta: dict[str, Any], counts: dict[str, Any] | None) -> None:
        self.events.append((event, meta))


def _ex(tmp_path: Path, audit: Audit | None = None, now: float | None = None) -> Exchange:
    clock = (lambda: now) if now is not None else time.time
    return Exchange(TransferState(tmp_path / "state.json"), audit or Audit(), clock=clock)


def _remote(server: SftpServer, path: str, **extra: Any) -> Any:
    options = {"known_hosts": str(server.known_hosts), "identity_file": str(server.client_key), **extra}
    return parse_remote(server.url(path), **options)


def _folder(server: SftpServer, name: str) -> Path:
    path = server.root / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_push_lands_under_its_name_only_when_complete_and_checked(server: SftpServer, tmp_path: Path) -> None:
    folder = _folder(server, "in1")
    local = tmp_path / "contacts.tokens.csv"
    local.write_bytes(os.urandom(700_000))
    audit = Audit()
    (result,) = asyncio.run(_ex(tmp_path, audit).push(_remote(server, "/in1/"), [local]))
    assert (folder / local.name).read_bytes() == local.read_bytes()
    assert result.sha256 == hashlib.sha256(local.read_bytes()).hexdigest()
    assert result.resumed_from == 0
    assert sorted(p.name for p in folder.iterdir()) == [local.name]  # no part file left
    ((event, meta),) = audit.events
    assert event == "exchange:transfer"
    assert meta["direction"] == "push"
    assert meta["status"] == "ok"
    assert meta["sha256"] == result.sha256
    assert meta["remote"] == server.url("/in1/")


def test_an_interrupted_push_resumes_and_a_bad_partial_is_sent_again(
    server: SftpServer, tmp_path: Path
) -> None:
    folder = _folder(server, "in2")
    local = tmp_path / "big.csv"
    data = os.urandom(600_000)
    local.write_bytes(data)
    state = TransferState(tmp_path / "state.json")
    remote = _remote(server, "/in2/")
    part = folder / ".big.csv.sendvault-part"
    key = f"push|{remote.server}|/in2/.big.csv.sendvault-part"
    sha = hashlib.sha256(data).hexdigest()

    part.write_bytes(data[:250_000])  # what an interrupted run leaves
    state.put(key, sha)
    (result,) = asyncio.run(Exchange(state).push(remote, [local]))
    assert result.resumed_from == 250_000
    assert (folder / "big.csv").read_bytes() == data

    part.write_bytes(b"x" * 100_000)  # a partial that is not a prefix of this file
    state.put(key, sha)
    (result,) = asyncio.run(Exchange(state).push(remote, [local]))
    assert result.resumed_from == 0
    assert (folder / "big.csv").read_bytes() == data
    assert not part.exists()


def test_pull_takes_each_new_file_once_and_again_when_it_changes(server: SftpServer, tmp_path: Path) -> None:
    folder = _folder(server, "out1")
    (folder / "opens.csv").write_bytes(b"SubscriberKey,Event\nK1,open\n")
    (folder / "clicks.csv").write_bytes(b"SubscriberKey,Event\nK1,click\n")
    (folder / ".hidden").write_bytes(b"x")
    local = tmp_path / "inbox"
    local.mkdir()
    audit = Audit()
    ex = _ex(tmp_path, audit)
    first = asyncio.run(ex.pull(_remote(server, "/out1"), local))
    assert sorted(Path(r.target).name for r in first) == ["clicks.csv", "opens.csv"]
    assert (local / "opens.csv").read_bytes() == (folder / "opens.csv").read_bytes()
    assert asyncio.run(ex.pull(_remote(server, "/out1"), local)) == []
    (folder / "opens.csv").write_bytes(b"SubscriberKey,Event\nK1,open\nK2,open\n")
    os.utime(folder / "opens.csv", (time.time() + 5, time.time() + 5))
    (again,) = asyncio.run(ex.pull(_remote(server, "/out1"), local))
    assert Path(again.target).name == "opens.csv"
    assert (local / "opens.csv").read_bytes().endswith(b"K2,open\n")
    assert [m["direction"] for e, m in audit.events] == ["pull"] * 3
    assert all(m["sha256"] for _, m in audit.events)


def test_an_interrupted_pull_resumes(server: SftpServer, tmp_path: Path) -> None:
    folder = _folder(server, "out2")
    data = os.urandom(500_000)
    (folder / "bounces.csv").write_bytes(data)
    local = tmp_path / "inbox"
    local.mkdir()
    state = TransferState(tmp_path / "state.json")
    remote = _remote(server, "/out2/bounces.csv")
    info = (folder / "bounces.csv").stat()
    (local / ".bounces.csv.sendvault-part").write_bytes(data[:200_000])
    state.put(f"pull|{remote.server}|/out2/bounces.csv", f"{info.st_size}|{float(int(info.st_mtime))}")
    (result,) = asyncio.run(Exchange(state).pull(remote, local))
    assert result.resumed_from == 200_000
    assert (local / "bounces.csv").read_bytes() == data
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in local.iterdir()) == ["bounces.csv"]


def test_unknown_changed_and_mispinned_host_keys_are_refused(server: SftpServer, tmp_path: Path) -> None:
    local = tmp_path / "f.csv"
    local.write_text("a\n")
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="unknown host key") as unknown:
        asyncio.run(_ex(tmp_path).push(_remote(server, "/", known_hosts=str(empty)), [local]))
    assert server.fingerprint in str(unknown.value)
    with pytest.raises(HostKeyError, match="does not match the pinned fingerprint"):
        asyncio.run(
            _ex(tmp_path).push(_remote(server, "/", host_key_fingerprint="SHA256:" + "A" * 43), [local])
        )
    with pytest.raises(HostKeyError, match="no known_hosts file"):
        asyncio.run(_ex(tmp_path).push(_remote(server, "/", known_hosts=str(tmp_path / "missing")), [local]))
    pinned = _remote(server, "/", host_key_fingerprint=server.fingerprint, known_hosts=None)
    (ok,) = asyncio.run(_ex(tmp_path).push(pinned, [local]))
    assert ok.size == 2

    other = SftpServer(tmp_path / "root2", tmp_path / "keys2")
    try:
        old_known = other.known_hosts.read_text()
        other.change_host_key()
        other.known_hosts.write_text(old_known)
        with pytest.raises(HostKeyError, match="CHANGED") as changed:
            asyncio.run(_ex(tmp_path).push(_remote(other, "/"), [local]))
        assert other.fingerprint in str(changed.value)
        assert not (other.root / "f.csv").exists()
    finally:
        other.stop()


def test_password_auth_and_refused_credentials(
    server: SftpServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "p.csv"
    local.write_text("a\n")
    monkeypatch.setenv("SV_TEST_SFTP_PW", PASSWORD)
    remote = parse_remote(
        server.url("/"), known_hosts=str(server.known_hosts), password_env="SV_TEST_SFTP_PW"
    )
    asyncio.run(_ex(tmp_path).push(remote, [local]))
    assert (server.root / "p.csv").read_text() == "a\n"
    monkeypatch.setenv("SV_TEST_SFTP_PW", "wrong")
    with pytest.raises(SftpError, match="authentication refused") as refused:
        asyncio.run(_ex(tmp_path).push(remote, [local]))
    assert "wrong" not in str(refused.value)
    with pytest.raises(SftpError, match="password in the URL is refused"):
        parse_remote(f"sftp://mc:{PASSWORD}@127.0.0.1/")


def test_remote_and_local_sweep_delete_only_what_is_past_retention(
    server: SftpServer, tmp_path: Path
) -> None:
    folder = _folder(server, "sweep")
    (folder / "sub").mkdir(exist_ok=True)
    ages = {"old.csv": 12, "sub/older.csv": 30, "edge.csv": 9.9, "new.csv": 1}
    for name, days in ages.items():
        path = folder / name
        path.write_text(name)
        os.utime(path, (NOW - days * DAY, NOW - days * DAY))
    audit = Audit()
    ex = _ex(tmp_path, audit, now=NOW)
    dry = asyncio.run(ex.sweep_remote(_remote(server, "/sweep"), dry_run=True))
    assert sorted(d.path for d in dry) == ["/sweep/old.csv", "/sweep/sub/older.csv"]
    assert audit.events == []
    assert (folder / "old.csv").exists()
    done = asyncio.run(ex.sweep_remote(_remote(server, "/sweep")))
    assert sorted(d.path for d in done) == ["/sweep/old.csv", "/sweep/sub/older.csv"]
    assert sorted(p.name for p in folder.rglob("*.csv")) == ["edge.csv", "new.csv"]
    assert [e for e, _ in audit.events] == ["exchange:sweep", "exchange:sweep"]

    local = tmp_path / "outbox"
    (local / "a").mkdir(parents=True)
    for name, days in {"a/x.csv": 11, "y.csv": 3}.items():
        (local / name).write_text(name)
        os.utime(local / name, (NOW - days * DAY, NOW - days * DAY))
    (gone,) = ex.sweep_local([local])
    assert gone.path.endswith("a/x.csv")
    assert gone.sha256 == hashlib.sha256(b"a/x.csv").hexdigest()
    assert sorted(p.name for p in local.rglob("*.csv")) == ["y.csv"]


def test_status_warns_about_unpulled_files_near_the_platform_deadline(
    server: SftpServer, tmp_path: Path
) -> None:
    folder = _folder(server, "status")
    for name, days in {"fresh.csv": 1, "soon.csv": 8.5, "late.csv": 10.5, "safe.csv": 9}.items():
        (folder / name).write_text(name)
        os.utime(folder / name, (NOW - days * DAY, NOW - days * DAY))
    ex = _ex(tmp_path, now=NOW)
    asyncio.run(ex.pull(_remote(server, "/status/safe.csv"), tmp_path))
    report = asyncio.run(ex.status(_remote(server, "/status")))
    by_name = {Path(f.path).name: f for f in report.files}
    assert by_name["fresh.csv"].warning is None
    assert by_name["safe.csv"].pulled
    assert by_name["safe.csv"].warning is None
    assert "deletes it in 1.5 day(s)" in (by_name["soon.csv"].warning or "")
    assert "past the platform's retention" in (by_name["late.csv"].warning or "")
    assert sorted(Path(f.path).name for f in report.warnings) == ["late.csv", "soon.csv"]


def test_cli_push_check_pull_status_and_sweep(server: SftpServer, tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = _folder(server, "cli")
    opts = ["--known-hosts", str(server.known_hosts), "--identity", str(server.client_key)]
    clear = tmp_path / "clear.csv"
    clear.write_text("SubscriberKey,EmailAddress\nann@example.com,x\n")
    refused = run_cli(home, "exchange", "push", str(clear), server.url("/cli/"), *opts)
    assert refused.returncode == 1
    assert "nothing was sent" in refused.stderr
    assert "ann@example.com" not in refused.stderr
    assert not (folder / "clear.csv").exists()
    forced = run_cli(home, "exchange", "push", str(clear), server.url("/cli/"), *opts, "--allow-clear")
    assert forced.returncode == 0, forced.stderr
    assert (folder / "clear.csv").read_text() == clear.read_text()

    old = time.time() - 9 * DAY
    (folder / "export.csv").write_text("SubscriberKey\nK1\n")
    os.utime(folder / "export.csv", (old, old))
    status = run_cli(home, "exchange", "status", server.url("/cli"), *opts, "--json")
    assert status.returncode == 1
    assert "export.csv: not pulled, and the platform deletes it in" in status.stderr
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    pulled = run_cli(home, "exchange", "pull", server.url("/cli"), str(inbox), *opts)
    assert pulled.returncode == 0, pulled.stderr
    assert (inbox / "export.csv").read_text() == "SubscriberKey\nK1\n"
    assert run_cli(home, "exchange", "status", server.url("/cli"), *opts).returncode == 0

    os.utime(folder / "clear.csv", (time.time() - 11 * DAY,) * 2)
    swept = run_cli(home, "exchange", "sweep", "--remote", server.url("/cli"), *opts, "--json")
    assert swept.returncode == 0, swept.stderr
    assert [d["path"] for d in json.loads(swept.stdout)] == ["/cli/clear.csv"]
    records = json.loads(run_cli(home, "audit", "show", "--json").stdout)
    events = [r["event"] for r in records]
    assert events.count("exchange:transfer") == 4  # refused push, forced push, pull of two files
    assert records[events.index("exchange:transfer")]["meta"]["status"] == "refused-clear-values"
    assert events.count("exchange:sweep") == 1
    changed = tmp_path / "known_hosts_changed"
    other_key = (
        server.known_hosts.read_text().split()[0]
        + " ssh-ed25519 "
        + "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
    )
    changed.write_text(other_key + "\n")
    bad = run_cli(
        home,
        "exchange",
        "pull",
        server.url("/cli"),
        str(inbox),
        "--known-hosts",
        str(changed),
        "--identity",
        str(server.client_key),
    )
    assert bad.returncode == 1
    assert "CHANGED" in bad.stderr
    assert "Traceback" not in bad.stderr


def _config(tmp_path: Path, server: SftpServer, jobs: str) -> Path:
    config = tmp_path / "sendvault.toml"
    config.write_text(
        f"""
[exchange]
retention_days = 10
warn_days = 2
local_dirs = ["{tmp_path / "outbox"}"]

[exchange.remotes.mc]
url = "{server.url("/sched")}"
identity_file = "{server.client_key}"
known_hosts = "{server.known_hosts}"
{jobs}
"""
    )
    return config


def test_serve_s_scheduled_jobs_pull_warn_and_sweep(server: SftpServer, tmp_path: Path) -> None:
    from sendvault.config import load_settings
    from sendvault.exchange.schedule import Scheduler

    folder = _folder(server, "sched")
    (tmp_path / "outbox").mkdir()
    (tmp_path / "inbox").mkdir()
    (folder / "sends.csv").write_text("SubscriberKey\nK1\n")
    old = time.time() - 9 * DAY
    os.utime(folder / "sends.csv", (old, old))
    jobs = """
[[exchange.schedule]]
job = "status"
every_minutes = 1

[[exchange.schedule]]
job = "pull"
remote = "mc"
local_dir = "{inbox}"
every_minutes = 1

[[exchange.schedule]]
job = "sweep"
every_minutes = 1440
""".replace("{inbox}", str(tmp_path / "inbox"))
    settings = load_settings(_config(tmp_path, server, jobs), env={"SENDVAULT_HOME": str(tmp_path / "home")})
    status, pull, sweep = settings.exchange.schedule
    events: list[str] = []
    scheduler = Scheduler(settings, lambda event, meta, counts: events.append(event))
    assert scheduler.run_job(status) == "warnings"
    assert events == ["exchange:status"]
    assert scheduler.run_job(pull) == "ok"
    assert (tmp_path / "inbox" / "sends.csv").read_text() == "SubscriberKey\nK1\n"
    assert scheduler.run_job(status) == "ok"
    gone = time.time() - 11 * DAY
    os.utime(folder / "sends.csv", (gone, gone))
    assert scheduler.run_job(sweep) == "ok"
    assert not (folder / "sends.csv").exists()
    assert events == ["exchange:status", "exchange:transfer", "exchange:sweep"]

    # Started as serve starts it: every job runs once at start-up, then waits for its turn.
    (folder / "later.csv").write_text("x\n")
    running = Scheduler(settings, lambda event, meta, counts: None).start()
    deadline = time.monotonic() + 30
    while len(running.runs) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    running.stop()
    assert sorted(job for job, _ in running.runs) == ["pull", "status", "sweep"]
    assert (tmp_path / "inbox" / "later.csv").exists()


def test_exchange_settings_errors_name_the_place_not_the_value(server: SftpServer, tmp_path: Path) -> None:
    from sendvault.config import load_settings
    from sendvault.errors import ConfigError

    bad_job = '\n[[exchange.schedule]]\njob = "pull"\nremote = "mc"\n'
    with pytest.raises(ConfigError, match=r"a pull job needs local_dir \(at exchange\.schedule\[0\]\)"):
        load_settings(_config(tmp_path, server, bad_job), env={"SENDVAULT_HOME": str(tmp_path)})
    unknown = '\n[[exchange.schedule]]\njob = "status"\nremote = "nope"\n'
    with pytest.raises(ConfigError, match=r"not in exchange\.remotes"):
        load_settings(_config(tmp_path, server, unknown), env={"SENDVAULT_HOME": str(tmp_path)})
