"""`scan client`, `scan all --targets` with SARIF and HTML reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sendvault.scan.client import scan_client
from sendvault.scan.content import scan_content


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
