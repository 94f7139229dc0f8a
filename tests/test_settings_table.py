"""Every setting, fed a bad value, gets one error line naming it and what it allows; exit 2.

`sendvault config check` runs start-up's own checks, so a value only start-up used to refuse
(a missing certificate, a CA needed by client certificates) is caught here too.

When you add a setting, add a row to BAD: the completeness test below fails until you do, so no
setting can reach a traceback unseen.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner

from sendvault.cli import cli
from sendvault.config import Settings, allowed_text, load_settings
from sendvault.errors import ConfigError

# setting -> (bad value, where it is set: "env" or "file"). The value is a string for the
# environment, and a TOML literal for a file.
BAD: dict[str, tuple[str, str]] = {
    "exchange": ("{ retention_days = -1 }", "file"),
    "home": ("<a file>", "env"),
    "database_url": ("mysql://db.internal/sendvault", "env"),
    "database_read_url": ("mysql://standby.internal/sendvault", "env"),
    "database_ssl_ca_file": ("/nonexistent/db-ca.pem", "env"),
    "database_ssl_cert_file": ("/nonexistent/db-client.pem", "env"),
    "database_ssl_key_file": ("/nonexistent/db-client.key", "env"),
    "key_provider": ("hsm", "env"),
    "master_key": ("short", "env"),
    "master_passphrase": ("too short", "env"),
    "transit_url": ("ftp://bao.internal", "env"),
    "transit_token": ("two words", "env"),
    "transit_key": ("no such/key", "env"),
    "transit_mount": ("no mount!", "env"),
    "transit_ca_file": ("  ", "env"),
    "reencrypt_share": ("1.5", "env"),
    "token_domain": ("Not A Domain", "env"),
    "mobile_token_prefix": ("12a", "env"),
    "mobile_token_digits": ("29", "env"),
    "mobile_token_style": ("random", "env"),
    "mobile_token_country_codes": ("1 x4", "env"),
    "email_keep_local_case": ("perhaps", "env"),
    "default_region": ("gbr", "env"),
    "sqlite_busy_timeout_ms": ("5", "env"),
    "sqlite_bulk_lock_seconds": ("0", "env"),
    "sqlite_mmap_mb": ("-1", "env"),
    "audit": ('"maybe"', "file"),
    "audit_key": (base64.b64encode(b"k" * 16).decode(), "env"),
    "audit_public_key": ("/nonexistent/audit-signing.pub", "env"),
    "audit_checkpoint_records": ("0", "env"),
    "audit_checkpoint_seconds": ("0", "env"),
    "audit_signer": ('"remote"', "file"),
    "audit_transit_url": ("ftp://bao.example", "env"),
    "audit_transit_key": ("no such name!", "env"),
    "audit_transit_token": ("two words", "env"),
    "audit_transit_mount": ("tr ansit", "env"),
    "audit_transit_ca_file": ("   ", "env"),
    "audit_witness": ("ftp://witness.example/heads", "env"),
    "host": ("not a host!", "env"),
    "https_port": ('"eighty"', "file"),
    "http_port": ("70000", "env"),
    "admin_host": ("bad host name", "env"),
    "admin_port": ("-1", "env"),
    "workers": ("0", "env"),
    "public_host": ("bad_host!", "env"),
    "public_https_port": ("99999", "env"),
    "tls_cert_file": ("/nonexistent/server.pem", "env"),
    "tls_key_file": ("/nonexistent/server.key", "env"),
    "tls_min_version": ('"1.0"', "file"),
    "tls_client_ca_file": ("/nonexistent/ca.pem", "env"),
    "tls_client_cert": ("sometimes", "env"),
    "allow_cidrs": ("10.0.0.0/33 nonsense", "env"),
    "trusted_proxies": ('["10.0.0.0/8", "bogus"]', "file"),
    "max_batch": ("0", "env"),
    "max_body_bytes": ("10", "env"),
    "max_inflight": ("0", "env"),
    "retry_after_seconds": ("0", "env"),
    "token_lifetime_seconds": ("10", "env"),
    "auth_cache_seconds": ("-1", "env"),
    "auth_max_failures": ("0", "env"),
    "auth_failure_window_seconds": ("zero", "env"),
    "hsts_max_age": ("-5", "env"),
    "compat_echo_token": ("maybe", "env"),
    "compat_status_code": ("2", "file"),
    "tls_reload_seconds": ("-1", "env"),
    "cert_warn_days": ("0", "env"),
    "log_format": ("xml", "env"),
    "log_level": ("verbose", "env"),
    "access_log": ("sometimes", "env"),
    "header_timeout_seconds": ("0.1", "env"),
    "body_timeout_seconds": ("0", "env"),
    "body_min_bytes_per_second": ("-1", "env"),
    "keep_alive_seconds": ("forever", "env"),
    "max_connections_per_address": ("0", "env"),
    "max_connections": ('"many"', "file"),
    "auth_failure_spacing_seconds": ("11", "env"),
}
# Settings whose value may be shown (paths and names an operator typed, never secrets); for
# every other row the value must not appear in the output.
SHOWN = {"home", "tls_cert_file", "tls_key_file", "tls_client_ca_file", "audit_public_key"}
SHOWN |= {"database_ssl_ca_file", "database_ssl_cert_file", "database_ssl_key_file"}
# Refused by start-up's checks rather than the parser: the allowed part says what the file
# must be (e.g. a key that matches the certificate), not the setting's general form.
FILE_LEVEL = {"tls_cert_file", "tls_key_file", "tls_client_ca_file", "audit_public_key"}
FILE_LEVEL |= {"database_ssl_ca_file", "database_ssl_cert_file", "database_ssl_key_file"}
# What a bad value of these needs beside it to be reached (a CA file only matters with mTLS; the
# database link's files with PostgreSQL, and a certificate with its key). Nothing listens on
# port 1: the files are refused before any connection is tried.
_PG = {"SENDVAULT_DATABASE_URL": "postgresql://sendvault@127.0.0.1:1/sendvault"}
WITH = {
    "tls_client_ca_file": {"SENDVAULT_TLS_CLIENT_CERT": "optional"},
    "database_ssl_ca_file": _PG,
    "database_ssl_cert_file": {**_PG, "SENDVAULT_DATABASE_SSL_KEY_FILE": "/nonexistent/db-client.key"},
    "database_ssl_key_file": {**_PG, "SENDVAULT_DATABASE_SSL_CERT_FILE": "{home}/certs/server.pem"},
}


def test_every_setting_has_a_bad_value_row() -> None:
    missing = set(Settings.__struct_fields__) - set(BAD)
    assert not missing, f"add a bad-value row to tests/test_settings_table.py for: {sorted(missing)}"
    assert not set(BAD) - set(Settings.__struct_fields__), "a row names a setting that no longer exists"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A home that passes `config check`: certificate, a client, keys. Each row then breaks one thing."""
    home = tmp_path_factory.mktemp("table") / "home"
    env = {"SENDVAULT_HOME": str(home)}
    runner = CliRunner()
    for args in (["certs", "server", "localhost"], ["clients", "add", "mc"]):
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["config", "check", "--no-ports"], env=env)
    assert result.exit_code == 0, result.stderr
    return home, env


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_value_is_one_line_naming_the_setting_and_what_it_allows(
    name: str, prepared: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    home, base = prepared
    value, where = BAD[name]
    env = {**base, **{k: v.replace("{home}", str(home)) for k, v in WITH.get(name, {}).items()}}
    args = ["config", "check", "--no-ports"]
    if name == "home":
        value = str(tmp_path / "a-file")
        Path(value).write_text("not a directory\n")
    if where == "env":
        env[f"SENDVAULT_{name.upper()}"] = value
    else:
        config = tmp_path / "sendvault.toml"
        config.write_text(f"{name} = {value}\n")
        args = ["--config", str(config), *args]
    result = CliRunner().invoke(cli, args, env=env)

    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert isinstance(result.exception, SystemExit)  # no traceback: click's runner keeps any other
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    line = errors[0]
    assert f"setting {name} " in line
    # What the setting takes in general, or (for a file start-up refuses) what it must hold.
    assert f"(allowed: {allowed_text(name)}" in line or name in FILE_LEVEL, line
    assert "(allowed: " in line
    source = f"environment SENDVAULT_{name.upper()}" if where == "env" else "file "
    if name != "home":  # a bad home is found by the data directory check, which names the setting
        assert f"(from {source}" in line, line
    for leak in ("Traceback", "Expected `", "matching regex", "ValidationError", "Error:"):
        assert leak not in result.stderr, result.stderr
    if name not in SHOWN and len(value) > 4:  # "0" or "-1" would match any line
        assert value.strip('"') not in result.stderr


def test_every_allowed_text_is_words_not_a_type_name() -> None:
    for name in Settings.__struct_fields__:
        text = allowed_text(name)
        assert text not in ("", "text"), f"{name}: give it allowed=... in config.py"
        assert "`" not in text, text
        assert "Annotated" not in text, text


def test_the_table_values_really_are_bad_for_the_settings_parser_or_start_up() -> None:
    # A row must not become valid by accident (e.g. a bound widened): the parser or start-up
    # refuses it. Here the parser's part: these rows never load.
    parser_level = {n for n, (_, w) in BAD.items() if w == "env"} - SHOWN - {"audit_key", "master_key"}
    for name in sorted(parser_level):
        with pytest.raises(ConfigError) as info:
            load_settings(env={f"SENDVAULT_{name.upper()}": BAD[name][0]})
        assert info.value.setting == name


def test_a_toml_list_of_networks_is_accepted(tmp_path: Path) -> None:
    config = tmp_path / "sendvault.toml"
    config.write_text('allow_cidrs = ["10.0.0.0/8", "2001:db8::/32"]\n')
    assert load_settings(config, env={}).allow_cidrs == "10.0.0.0/8 2001:db8::/32"


def test_a_misspelt_setting_suggests_the_right_one(tmp_path: Path) -> None:
    config = tmp_path / "sendvault.toml"
    config.write_text('tls_cert = "/etc/ssl/x.pem"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "config", "check"], env={})
    assert result.exit_code == 2
    assert "setting tls_cert (from file" in result.stderr
    assert "did you mean tls_cert_file?" in result.stderr


def test_settings_are_all_typed_for_the_reference() -> None:
    # The generated reference lists every setting; a Struct change that msgspec cannot describe
    # would break `config reference` (and docs/configuration.md's test) rather than this one.
    schema = msgspec.json.schema(Settings)
    assert set(schema["$defs"]["Settings"]["properties"]) == set(Settings.__struct_fields__)


def test_a_mistyped_environment_variable_is_a_warning_naming_the_setting(
    prepared: tuple[Path, dict[str, str]],
) -> None:
    _home, base = prepared
    env = {
        **base,
        "SENDVAULT_HTTPS_PORTS": "8443",
        "SENDVAULT_CONFIG_FILE": "x",
        "SENDVAULT_TEST_PG_URL": "y",
    }
    result = CliRunner().invoke(cli, ["config", "check", "--no-ports"], env=env)
    assert result.exit_code == 0, result.stderr
    warnings = [ln for ln in result.stdout.splitlines() if ln.startswith("warning")]
    assert any(
        "SENDVAULT_HTTPS_PORTS is not a setting and is ignored (did you mean SENDVAULT_HTTPS_PORT?)" in w
        for w in warnings
    )
    assert any("SENDVAULT_CONFIG_FILE is not a setting" in w for w in warnings)
    assert not any("SENDVAULT_TEST_PG_URL" in w for w in warnings)  # the test suite's own switch
