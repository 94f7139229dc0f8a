"""docs/operations.md stays true: the metrics it names exist, the settings it sets exist."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from sendvault.audit import Event, open_audit
from sendvault.config import Settings, load_settings
from sendvault.server.certs import CertAuthority
from sendvault.server.status import StatusCollector
from sendvault.vault import open_vault

DOC = Path(__file__).parent.parent / "docs" / "operations.md"
SRC = Path(__file__).parent.parent / "src" / "sendvault"
# The operator's gauges (server/status.py): each must be in the doc's table.
STATUS_PREFIXES = (
    "sendvault_certificate",
    "sendvault_audit",
    "sendvault_key_provider",
    "sendvault_stored",
    "sendvault_data_key",
    "sendvault_attention",
)


def _exposed(tmp_path: Path) -> set[str]:
    """Every metric family name the admin listener serves for a working vault."""
    settings = load_settings(env={"SENDVAULT_HOME": str(tmp_path / "home")})
    open_vault(settings).close()
    CertAuthority.load_or_create(settings.home_path / "certs").issue(
        settings.cert_path, settings.key_path, ["localhost"]
    )
    log = open_audit(settings)
    log.record_sync(Event.CLIENT_ADD, actor="cli:test", meta={"client": "mc"})
    log.close()
    from sendvault.server.status import note_verify

    note_verify(settings, intact=True, detail={"records": 1})
    registry = CollectorRegistry()
    registry.register(StatusCollector(settings, reloads=lambda: {"ok": 0, "failed": 0}))
    names = set(re.findall(r"^# TYPE (\S+)", generate_latest(registry).decode(), re.MULTILINE))
    # The workers' counters and histograms, wherever a module declares one.
    for source in SRC.rglob("*.py"):
        names |= set(
            re.findall(r'(?:Counter|Gauge|Histogram|Summary)\(\s*"(sendvault_[a-z_]+)"', source.read_text())
        )
    return names


def test_every_metric_the_doc_names_is_served_and_every_gauge_is_documented(tmp_path: Path) -> None:
    text = DOC.read_text()
    exposed = _exposed(tmp_path)
    named = set(re.findall(r"\b(sendvault_[a-z_]+?)(?:_bucket|_total)?\b", text))
    served = {re.sub(r"_total$", "", n) for n in exposed}
    assert named - served == set(), "docs/operations.md names metrics sendvault does not serve"
    status_gauges = {n for n in exposed if n.startswith(STATUS_PREFIXES)}
    undocumented = {re.sub(r"_total$", "", n) for n in status_gauges} - named
    assert not undocumented, f"document these in docs/operations.md: {sorted(undocumented)}"


def test_the_example_configuration_loads(tmp_path: Path) -> None:
    text = DOC.read_text()
    example = re.search(r"```toml\n(.*?)```", text, re.DOTALL)
    assert example is not None
    config = tmp_path / "sendvault.toml"
    config.write_text(example.group(1))
    settings = load_settings(config, env={})
    assert settings.https_port == 443
    assert set(tomllib.loads(example.group(1))) <= set(Settings.__struct_fields__)


def test_the_unit_uses_commands_that_exist() -> None:
    text = DOC.read_text()
    assert "ExecStart=/opt/sendvault/bin/sendvault serve" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    for setting in ("tls_reload_seconds", "cert_warn_days", "log_format", "log_level", "access_log"):
        assert setting in Settings.__struct_fields__
        assert re.search(rf"`{setting}\b", text), setting
