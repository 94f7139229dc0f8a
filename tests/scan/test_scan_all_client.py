"""`scan client`, `scan all --targets`, and the SARIF, HTML and table reports."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sendvault.scan.client import scan_client
from sendvault.scan.content import scan_content
from sendvault.scan.findings import CheckResult
from sendvault.scan.report import to_html, to_sarif, to_table
from sendvault.scan.targets import host_port, scan_targets


def test_local_clients_connect_to_a_strict_server() -> None:
    result = scan_client()
    assert result.findings == []
    assert "TLSv1." in str(result.facts["python"])
    assert result.passed >= 1


def test_scan_all_writes_one_report_in_three_forms(tmp_path: Path) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.html").write_text('<script src="http://cdn.acme-corp.com/a.js"></script>')
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "c.yaml").write_text("hook: http://hooks.acme-corp.com/x\n")
    targets = tmp_path / "targets.toml"
    targets.write_text(
        f'[[content]]\ntarget = "{tmp_path / "site"}"\n[[code]]\npath = "{tmp_path / "code"}"\n'
    )
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "all", "--targets", str(targets), "--json",
         "--sarif", str(tmp_path / "r.sarif"), "--html", str(tmp_path / "r.html")],
        capture_output=True, text=True, timeout=120, check=False, env=os.environ.copy(),
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    doc = json.loads(run.stdout)
    assert [t["check"] for t in doc["targets"]] == ["content", "code"]
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    assert sarif["version"] == "2.1.0"
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == {
        "content.mixed-blockable",
        "code.insecure-url",
    }
    html_report = tmp_path / "r.html"
    assert "code.insecure-url" in html_report.read_text()
    # The HTML report loads nothing over http:// itself.
    assert scan_content(str(html_report)).findings == []


def test_scan_all_rejects_a_bad_targets_file(tmp_path: Path) -> None:
    targets = tmp_path / "t.toml"
    targets.write_text("[[nonsense]]\nx = 1\n")
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "all", "--targets", str(targets)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 2
    assert "unknown sections" in run.stderr
    assert "Traceback" not in run.stderr


def _code_and_tls_results(root: Path) -> list[CheckResult]:
    code = CheckResult("code", str(root))
    code.fail(
        "code.insecure-url", "conf/hooks.yaml:3 http://hooks.acme-corp.com/x", file="conf/hooks.yaml", line=3
    )
    tls = CheckResult("tls", "api.acme-corp.com:443")
    tls.fail("tls.rsa-key-exchange", "RSA key exchange accepted: AES128-GCM-SHA256")
    tls.cannot("TLSv1.0: connection failed (ConnectionResetError)")
    return [code, tls]


def test_sarif_places_a_file_finding_at_its_path_and_line(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "hooks.yaml").write_text("a: 1\nb: 2\nhook: http://hooks.acme-corp.com/x\n")
    run = to_sarif(_code_and_tls_results(tmp_path))["runs"][0]
    location = run["results"][0]["locations"][0]["physicalLocation"]
    assert location["artifactLocation"] == {"uri": "conf/hooks.yaml", "uriBaseId": "SRCROOT"}
    assert location["region"] == {"startLine": 3}
    assert run["originalUriBaseIds"]["SRCROOT"]["uri"] == tmp_path.resolve().as_uri() + "/"


def test_sarif_names_an_endpoint_as_a_logical_location(tmp_path: Path) -> None:
    run = to_sarif(_code_and_tls_results(tmp_path))["runs"][0]
    assert run["results"][1]["locations"] == [
        {"logicalLocations": [{"fullyQualifiedName": "api.acme-corp.com:443", "kind": "resource"}]}
    ]


def test_sarif_reports_what_could_not_be_checked(tmp_path: Path) -> None:
    run = to_sarif(_code_and_tls_results(tmp_path))["runs"][0]
    [notification] = run["invocations"][0]["toolExecutionNotifications"]
    assert (
        notification["message"]["text"]
        == "could not check: TLSv1.0: connection failed (ConnectionResetError)"
    )
    assert (
        notification["locations"][0]["logicalLocations"][0]["fullyQualifiedName"] == "api.acme-corp.com:443"
    )


def test_table_and_html_show_what_could_not_be_checked_beside_findings(tmp_path: Path) -> None:
    from rich.console import Console

    results = _code_and_tls_results(tmp_path)
    console = Console(record=True, width=300)
    console.print(to_table(results))
    unknown = "could not check: TLSv1.0: connection failed (ConnectionResetError)"
    assert unknown in console.export_text()
    assert unknown in to_html(results)


@pytest.mark.parametrize("command", ["code", "content"])
def test_every_scan_command_writes_sarif_and_html(tmp_path: Path, command: str) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "a.html").write_text('<script src="http://cdn.acme-corp.com/a.js"></script>')
    (tmp_path / "site" / "c.yaml").write_text("hook: http://hooks.acme-corp.com/x\n")
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", command, str(tmp_path / "site"), "--json",
         "--sarif", str(tmp_path / "r.sarif"), "--html", str(tmp_path / "r.html")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 1, run.stderr
    sarif = json.loads((tmp_path / "r.sarif").read_text())
    [result] = sarif["runs"][0]["results"]
    expected = "a.html" if command == "content" else "c.yaml"
    assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == expected
    assert result["ruleId"] in (tmp_path / "r.html").read_text()


def test_scan_tls_writes_sarif_with_its_unknowns(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "tls", f"127.0.0.1:{port}",
         "--sarif", str(tmp_path / "r.sarif")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    run_doc = json.loads((tmp_path / "r.sarif").read_text())["runs"][0]
    assert run_doc["results"][0]["ruleId"] == "tls.unknown"
    assert run_doc["invocations"][0]["toolExecutionNotifications"]


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[db]]\nkind = "oracle"\ntarget = "db:1521"\n', "kind must be one of mysql, postgres"),
        ('[[tls]]\ntarget = "mail:25"\nstarttls = "smtp"\n', "starttls must be one of mysql, postgres"),
        ('[[tls]]\ntarget = "api:443"\nsnl = "api"\n', "unknown fields ['snl']"),
        ('[[tls]]\ntarget = "[::1]:https"\n', "the port must be a number"),
        ('[[ssh]]\ntarget = "\\u001b[2Jx"\n', "'\\x1b[2Jx' is not a host name or address"),
        ('[[ssh]]\ntarget = "  "\n', "'  ' is not a host name or address"),
        ('[[http]]\nca = "ca.pem"\n', "[[http]] number 1 lacks url"),
        ('[tls]\ntarget = "api:443"\n', "write [[tls]], an array of tables"),
        ('[[content]]\ntarget = "site"\ncrawl = "2"\n', "crawl must be a number"),
        (
            '[[db]]\nkind = "mysql"\ntarget = "db"\nuser = "scan"\npassword_env = "NOPE_1"\n',
            "NOPE_1 is not set",
        ),
    ],
    ids=["kind", "starttls", "field", "port", "escape", "blank", "required", "table", "type", "password-env"],
)
def test_a_malformed_targets_file_is_refused_before_any_scan(tmp_path: Path, toml: str, message: str) -> None:
    targets = tmp_path / "t.toml"
    targets.write_text(toml)
    with pytest.raises(ValueError, match=re.escape(message)):
        scan_targets(targets)


def test_targets_parse_bracketed_ipv6() -> None:
    assert host_port("[::1]:8443", 443) == ("::1", 8443)
    assert host_port("[::1]", 443) == ("::1", 443)
    assert host_port("::1", 5432) == ("::1", 5432)
    assert host_port("db.example.com:3307", 3306) == ("db.example.com", 3307)


def test_targets_paths_are_relative_to_the_targets_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ci" / "code").mkdir(parents=True)
    (tmp_path / "ci" / "code" / "c.yaml").write_text("hook: http://hooks.acme-corp.com/x\n")
    (tmp_path / "ci" / "targets.toml").write_text('[[code]]\npath = "code"\n')
    monkeypatch.chdir(tmp_path)
    [result] = scan_targets(Path("ci/targets.toml"))
    assert [f.rule for f in result.findings] == ["code.insecure-url"]


def test_a_target_with_a_missing_ca_is_unknown_and_the_rest_still_runs(tmp_path: Path) -> None:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "c.yaml").write_text("hook: http://hooks.acme-corp.com/x\n")
    targets = tmp_path / "t.toml"
    targets.write_text('[[tls]]\ntarget = "127.0.0.1:9"\nca = "missing.pem"\n[[code]]\npath = "code"\n')
    tls, code = scan_targets(targets)
    assert any(f.rule == "tls.unknown" and "cannot be loaded" in f.detail for f in tls.findings)
    assert [f.rule for f in code.findings] == ["code.insecure-url"]
