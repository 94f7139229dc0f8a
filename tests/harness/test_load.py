"""`sendvault harness load`: send-time load with every answer checked, retries, faults, the queue."""

from __future__ import annotations

import json
from pathlib import Path

from tests.harness.conftest import cli, fake_args, load_json
from tests.harness.fakes import PASSWORD, FakeFarm
from tests.server.conftest import DevServer

from sendvault.harness._http import Endpoint
from sendvault.harness._loadworker import WorkerResult
from sendvault.harness.load import _generator

PASSWORD_ENV = {"SENDVAULT_HARNESS_PASSWORD": PASSWORD}
SMALL = ["--connections", "4", "--batch", "50", "--pool", "300", "--time-scale", "0.001", "--json"]


def _checks(report: dict[str, object]) -> dict[str, str]:
    return {c["id"]: c["status"] for c in report["checks"]}  # type: ignore[attr-defined]


def test_load_on_our_server_checks_every_answer_and_reports_its_own_cpu(
    ours: DevServer, tmp_path: Path
) -> None:
    html = tmp_path / "load.html"
    out = cli(
        "load", "--client-file", str(ours.home / "dev-client.json"), *SMALL,
        "--count", "24", "--processes", "2", "--sms", "3", "--html", str(html),
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    report = load_json(out.stdout)
    assert report["kind"] == "load"
    assert _checks(report) == dict.fromkeys(
        ["load.correct", "load.deadline", "load.errors", "load.no-token-queue"], "pass"
    )
    s = report["summary"]
    assert s["calls"] == 24
    assert s["tokens"] == 24 * 50  # every item of every answer checked and right
    assert s["sms"] == 3
    assert s["errors"] == {}
    assert s["generator"]["processes"] == 2
    assert s["generator"]["cpu_seconds"] > 0
    assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p99"] <= s["latency_ms"]["max"]
    assert sum(count for _, count in report["histogram"]) == 24
    assert sum(point[1] for point in report["timeline"]) == 24
    assert "<svg" in html.read_text()


def test_faults_are_injected_retried_and_do_not_count_against_the_server(ours: DevServer) -> None:
    out = cli(
        "load", "--client-file", str(ours.home / "dev-client.json"), *SMALL,
        "--count", "30", "--processes", "1", "--faults", "--fault-rate", "0.3", "--deadline", "5",
    )  # fmt: skip
    report = load_json(out.stdout)
    s = report["summary"]
    assert sum(s["faults"].values()) > 0
    assert s["retries"] + s["gave_up"] >= sum(s["faults"].values()) - s["gave_up"] * 5
    assert s["errors"] == {}, s["errors"]
    assert s["tokens"] == (30 - s["gave_up"]) * 50
    assert _checks(report)["load.correct"] == "pass"
    assert _checks(report)["load.errors"] == "pass"
    assert out.returncode == 0


def test_a_server_slower_than_the_deadline_fails_the_deadline(fakes: FakeFarm) -> None:
    out = cli(
        "load", *fake_args(fakes, "slow")[:-2], *SMALL[:-1], "--json", "--batch", "100",
        "--count", "2", "--connections", "2", "--processes", "1", "--deadline", "0.3",
        env=PASSWORD_ENV,
    )  # fmt: skip
    assert out.returncode == 1, out.stdout + out.stderr
    report = load_json(out.stdout)
    assert _checks(report)["load.deadline"] == "fail"
    # Every try times out: after three in a row the harness gives up on the server (the two
    # connections' calls in flight then time out too), rather than spend five tries on each call.
    assert 3 <= report["summary"]["errors"]["timeout"] <= 4
    assert "3 calls in a row" in report["summary"]["stopped"]


def test_wrong_values_and_missing_ids_fail_correctness(fakes: FakeFarm) -> None:
    for flaw, kind in (("wrong-value", "wrong-value"), ("drop-id", "missing-id")):
        out = cli(
            "load", *fake_args(fakes, flaw)[:-2], *SMALL, "--batch", "100", "--count", "3",
            "--processes", "1", env=PASSWORD_ENV,
        )  # fmt: skip
        assert out.returncode == 1, out.stdout + out.stderr
        report = load_json(out.stdout)
        assert _checks(report)["load.correct"] == "fail"
        assert report["summary"]["errors"] == {kind: 3}
        assert _checks(report)["load.errors"] == "pass"


def test_inbound_sms_that_keep_failing_go_to_the_no_token_queue(fakes: FakeFarm, tmp_path: Path) -> None:
    queue = tmp_path / "q.jsonl"
    out = cli(
        "load", *fake_args(fakes, "stop-503")[:-2], *SMALL, "--count", "2", "--processes", "1",
        "--sms", "2", "--queue", str(queue), env=PASSWORD_ENV,
    )  # fmt: skip
    assert out.returncode == 1
    report = load_json(out.stdout)
    assert _checks(report)["load.no-token-queue"] == "fail"
    assert report["summary"]["no_token_queue"] == {"count": 2, "file": str(queue)}
    entries = [json.loads(line) for line in queue.read_text().splitlines()]
    assert [e["tries"] for e in entries] == [5, 5]
    sent = fakes.servers["stop-503"].received_values
    assert all(e["tokenValue"] not in sent and "*" in e["tokenValue"] for e in entries)


def _result(cpu: float, wall: float) -> WorkerResult:
    return WorkerResult(0.0, wall, cpu, [], [], [], 0, 0, {}, {}, 0, 0, 0, 0, [])


def test_a_saturated_generator_is_reported_with_a_warning() -> None:
    endpoint = Endpoint.parse("https://tokens.example.com")
    busy = _generator([_result(9.5, 10.0), _result(3.0, 10.0)], 10.0, 2, endpoint)
    assert busy.saturated
    assert busy.busiest_process_percent == 95.0
    assert busy.warning is not None
    assert "bottleneck" in busy.warning
    calm = _generator([_result(1.0, 10.0)], 10.0, 1, endpoint)
    assert not calm.saturated
    assert calm.warning is None
