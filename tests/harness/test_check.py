"""`sendvault harness check`: our server passes every check; each broken server fails its own."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from tests.harness.conftest import cli, fake_args, harness, load_json, statuses
from tests.harness.fakes import PASSWORD, USER, FakeFarm
from tests.server.conftest import DevServer

from sendvault.harness import CHECKS, CheckOptions, CheckReport, Credentials, Target, TlsOptions, run_checks

PASSWORD_ENV = {"SENDVAULT_HARNESS_PASSWORD": PASSWORD}


def _ours_args(ours: DevServer) -> list[str]:
    return [
        "--client-file",
        str(ours.home / "dev-client.json"),
        "--http-url",
        f"http://127.0.0.1:{ours.http_port}",
    ]


def test_our_server_passes_every_check(ours: DevServer, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    out = harness(
        "check", *_ours_args(ours), "--time-scale", "0.01", "--json", "--html", str(html), cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report = load_json(out.stdout)
    assert statuses(report) == dict.fromkeys(CHECKS, "pass")
    assert report["kind"] == "check"
    assert report["summary"]["verdict"] == "pass"
    assert report["summary"]["passed"] == len(CHECKS)
    # Our mobile tokens are what Marketing Cloud takes: this is the proof of the mobile-token fix.
    shape = next(c for c in report["checks"] if c["id"] == "token.mobile-shape")
    assert "3 mobile token(s)" in shape["evidence"]["detail"]
    assert html.read_text().startswith("<!DOCTYPE html>")
    assert not (tmp_path / "no-token-queue.jsonl").exists()


def test_the_sound_fake_passes_every_check(fakes: FakeFarm, tmp_path: Path) -> None:
    out = cli("check", *fake_args(fakes, "sound"), "--time-scale", "0.01", "--json", env=PASSWORD_ENV)
    assert out.returncode == 0, out.stdout + out.stderr
    assert statuses(load_json(out.stdout)) == dict.fromkeys(CHECKS, "pass")


EXPECTED = {
    "drop-id": {"resolve.every-id-once"},
    "unknown-500": {"resolve.unknown-is-unresolved"},
    "tls10": {"transport.tls-legacy-refused"},
    "rsa-kex": {"transport.rsa-kex-refused"},
    "redirect-302": {"transport.redirect-308"},
    "address-in-token": {"token.no-value-inside"},
    "slow": {"resolve.batch-500"},
    "stop-503": {"gettoken.no-token-queue"},
    "wrong-value": {"resolve.batch-500"},
    "dedupe-values": {"gettoken.stable"},
    "omit-empty": set(),  # empty arrays left out: lenient, as the contract's sample servers are
}


@pytest.fixture(scope="module")
def broken_reports(fakes: FakeFarm, tmp_path_factory: pytest.TempPathFactory) -> dict[str, CheckReport]:
    """Every broken fake checked at once (in this process: the CLI is tested above and below)."""
    queue_dir = tmp_path_factory.mktemp("queues")

    async def one(flaw: str) -> CheckReport:
        server = fakes.servers[flaw]
        target = Target(
            url=server.url,
            credentials=Credentials(user=USER, password=PASSWORD),
            tls=TlsOptions(str(fakes.ca_for(flaw))),
            http_url=server.http_url,
            deadline=1.5 if flaw == "slow" else 60.0,
        )
        return await run_checks(
            target, CheckOptions(time_scale=0.001, queue_file=queue_dir / f"{flaw}.jsonl")
        )

    async def every() -> list[CheckReport]:
        return await asyncio.gather(*(one(flaw) for flaw in EXPECTED))

    return dict(zip(EXPECTED, asyncio.run(every()), strict=True))


@pytest.mark.parametrize("flaw", sorted(EXPECTED))
def test_a_broken_server_fails_exactly_its_check(broken_reports: dict[str, CheckReport], flaw: str) -> None:
    report = broken_reports[flaw]
    got = {c.id: c.status for c in report.checks}
    assert {i for i, s in got.items() if s == "fail"} == EXPECTED[flaw], got
    assert all(s == "pass" for i, s in got.items() if i not in EXPECTED[flaw]), got
    assert report.summary.verdict == ("fail" if EXPECTED[flaw] else "pass")


def test_a_broken_server_exits_1(fakes: FakeFarm, tmp_path: Path) -> None:
    out = cli("check", *fake_args(fakes, "drop-id"), "--time-scale", "0.001", env=PASSWORD_ENV)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "resolve.every-id-once" in out.stdout
    assert "FAIL" in out.stdout


def test_evidence_of_a_failure_says_what_happened_with_values_masked(fakes: FakeFarm, tmp_path: Path) -> None:
    out = cli(
        "check",
        *fake_args(fakes, "address-in-token"),
        "--json",
        "--html",
        str(tmp_path / "r.html"),
        env=PASSWORD_ENV,
    )
    report = load_json(out.stdout)
    leak = next(c for c in report["checks"] if c["id"] == "token.no-value-inside")
    assert "the local part" in leak["evidence"]["detail"]
    tokens = leak["evidence"]["exchanges"][0]["received"]["tokens"]
    assert any("***" in t["token"] for t in tokens)  # the address inside the token is masked too
    # No clear value the harness sent reaches the report, the page or the terminal.
    sent = fakes.servers["address-in-token"].received_values
    assert sent
    outputs = [out.stdout, out.stderr, (tmp_path / "r.html").read_text()]
    for value in sent:
        if len(value) >= 6:
            assert all(value not in text and value.lower() not in text.lower() for text in outputs), value


def test_inbound_sms_that_keeps_failing_goes_to_the_no_token_queue(
    broken_reports: dict[str, CheckReport], tmp_path_factory: pytest.TempPathFactory
) -> None:
    report = broken_reports["stop-503"]
    queue = report.summary.no_token_queue
    assert queue.count == 1
    assert report.summary.retries == 4
    assert queue.file is not None
    (entry,) = [json.loads(line) for line in Path(queue.file).read_text().splitlines()]
    assert entry["tries"] == 5
    assert entry["keyword"] == "STOP"
    assert "*" in entry["tokenValue"]
    assert entry["tokenValue"] not in report.summary.target
    sms = next(c for c in report.checks if c.id == "gettoken.no-token-queue")
    assert "after 5 tries" in sms.evidence.detail
    assert "No Token Queue" in sms.evidence.detail


def test_skipped_checks_do_not_count(fakes: FakeFarm, tmp_path: Path) -> None:
    out = cli(
        "check",
        *fake_args(fakes, "redirect-302"),
        "--skip",
        "transport.redirect-308",
        "--json",
        env=PASSWORD_ENV,
    )
    assert out.returncode == 0, out.stdout
    check = next(c for c in load_json(out.stdout)["checks"] if c["id"] == "transport.redirect-308")
    assert check["status"] == "untested"
    assert "skipped" in check["evidence"]["detail"]


def test_without_http_url_the_redirect_is_untested_and_the_verdict_is_not_pass(
    fakes: FakeFarm, tmp_path: Path
) -> None:
    args = fake_args(fakes, "sound")[:-2]
    out = cli("check", *args, env=PASSWORD_ENV)
    assert out.returncode == 1
    assert "untested" in out.stdout
    assert "transport.redirect-308" in out.stdout


def test_unreachable_server_and_usage_errors_exit_2(fakes: FakeFarm, tmp_path: Path) -> None:
    from tests.server.conftest import free_port

    out = cli("check", "--url", f"https://127.0.0.1:{free_port()}", "--user", "u", "--password", "p")
    assert out.returncode == 2
    assert out.stderr.startswith("error: ")
    assert "Traceback" not in out.stderr
    untrusted = cli("check", "--url", fakes.servers["sound"].url, "--user", "mc", env=PASSWORD_ENV)
    assert untrusted.returncode == 2
    assert "certificate" in untrusted.stderr
    wrong = cli("check", *fake_args(fakes, "sound"), env={"SENDVAULT_HARNESS_PASSWORD": "nope"})
    assert wrong.returncode == 2
    assert "refused the harness's credentials (401)" in wrong.stderr
    assert cli("check").returncode == 2
    assert cli("check", "--url", "ftp://x", "--user", "u", "--password", "p").returncode == 2
    bad_skip = cli("check", *fake_args(fakes, "sound"), "--skip", "no.such-check", env=PASSWORD_ENV)
    assert bad_skip.returncode == 2
    assert "unknown check id" in bad_skip.stderr
