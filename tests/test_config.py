"""Settings: defaults, TOML, environment precedence, one clear error per bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from sendvault.config import load_settings, settings_reference
from sendvault.errors import ConfigError

DOCS = Path(__file__).parent.parent / "docs" / "configuration.md"


def test_defaults_need_nothing() -> None:
    s = load_settings(env={})
    assert s.home == "./.sendvault"
    assert s.token_domain.endswith(".invalid")


def test_toml_file_then_environment_wins(tmp_path: Path) -> None:
    cfg = tmp_path / "sendvault.toml"
    cfg.write_text('token_domain = "t.example.org"\nmobile_token_digits = 10\n')
    s = load_settings(cfg, env={"SENDVAULT_MOBILE_TOKEN_DIGITS": "11"})
    assert s.token_domain == "t.example.org"
    assert s.mobile_token_digits == 11


def test_toml_in_home_is_found(tmp_path: Path) -> None:
    (tmp_path / "sendvault.toml").write_text('default_region = "GB"\n')
    assert load_settings(env={"SENDVAULT_HOME": str(tmp_path)}).default_region == "GB"


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"SENDVAULT_MOBILE_TOKEN_DIGITS": "8"}, "mobile_token_digits"),
        ({"SENDVAULT_MOBILE_TOKEN_DIGITS": "29"}, "mobile_token_digits"),
        ({"SENDVAULT_MOBILE_TOKEN_DIGITS": "many"}, "mobile_token_digits"),
        ({"SENDVAULT_TOKEN_DOMAIN": "Not A Domain"}, "token_domain"),
        ({"SENDVAULT_DEFAULT_REGION": "gbr"}, "default_region"),
        ({"SENDVAULT_EMAIL_KEEP_LOCAL_CASE": "perhaps"}, "email_keep_local_case"),
        ({"SENDVAULT_KEY_PROVIDER": "hsm"}, "key_provider"),
    ],
)
def test_bad_value_names_the_setting_and_hides_the_value(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    assert info.value.setting == setting
    assert next(iter(env.values())) not in str(info.value)


def test_unknown_setting_in_file_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("tokne_domain = 'x.example'\n")
    with pytest.raises(ConfigError, match="tokne_domain"):
        load_settings(cfg, env={})


def test_broken_toml_is_one_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("token_domain = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(cfg, env={})


def test_configuration_reference_is_current() -> None:
    assert DOCS.read_text() == settings_reference(), (
        "regenerate: python -m sendvault.config > docs/configuration.md"
    )


def test_config_show_hides_a_database_password() -> None:
    s = load_settings(env={"SENDVAULT_DATABASE_URL": "postgresql://sv:hunter2@db.internal:5432/sendvault"})
    assert s.redacted()["database_url"] == "postgresql://sv:***@db.internal:5432/sendvault"


def test_unknown_database_scheme_is_refused() -> None:
    with pytest.raises(ConfigError, match="database_url"):
        load_settings(env={"SENDVAULT_DATABASE_URL": "mysql://x"})


def test_a_choice_setting_lists_what_it_accepts_and_old_tls_is_named() -> None:
    with pytest.raises(ConfigError) as bad:
        load_settings(env={"SENDVAULT_AUDIT": "maybe"})
    assert str(bad.value) == (
        "setting audit (from environment SENDVAULT_AUDIT): is not one of the choices (allowed: on or off)"
    )
    with pytest.raises(ConfigError) as old:
        load_settings(env={"SENDVAULT_TLS_MIN_VERSION": "1.0"})
    assert "is below TLS 1.2, which is refused (allowed: 1.2 or 1.3)" in str(old.value)


def test_database_link_settings_that_do_not_fit_together_are_refused() -> None:
    pg = {"SENDVAULT_DATABASE_URL": "postgresql://sendvault@db.internal/sendvault"}
    cases = {
        "database_read_url": ({"SENDVAULT_DATABASE_READ_URL": "postgresql://sv@s/sv"}, "needs database_url"),
        "database_ssl_ca_file": ({"SENDVAULT_DATABASE_SSL_CA_FILE": "/ca.pem"}, "not name PostgreSQL"),
        "database_ssl_key_file": ({**pg, "SENDVAULT_DATABASE_SSL_CERT_FILE": "/etc/c.pem"}, "is needed when"),
        "database_ssl_cert_file": ({**pg, "SENDVAULT_DATABASE_SSL_KEY_FILE": "/etc/c.key"}, "is needed when"),
    }
    for setting, (env, words) in cases.items():
        with pytest.raises(ConfigError) as info:
            load_settings(env=env)
        assert info.value.setting == setting
        assert words in str(info.value)
    both = load_settings(
        env={**pg, "SENDVAULT_DATABASE_READ_URL": "postgresql://sendvault:pw@standby.internal/sendvault"}
    )
    assert both.redacted()["database_read_url"] == "postgresql://sendvault:***@standby.internal/sendvault"


@pytest.mark.parametrize(
    ("url", "lock", "busy", "warned"),
    [
        ("", "15", "10000", True),
        ("sqlite:///tmp/x.db", "2.6", "10000", True),
        ("", "2.5", "10000", False),
        ("", "2.5000001", "10000", True),  # a hair over: asks for 11 s, never the 10 s already set
        ("", "15", "60000", False),
        ("postgresql://sv@127.0.0.1/sv", "15", "10000", False),  # PostgreSQL has no such lock
    ],
)
def test_a_bulk_lock_beyond_a_quarter_of_the_busy_timeout_is_named(
    tmp_path: Path, url: str, lock: str, busy: str, warned: bool
) -> None:
    settings = load_settings(
        env={
            "SENDVAULT_HOME": str(tmp_path),
            "SENDVAULT_DATABASE_URL": url,
            "SENDVAULT_SQLITE_BULK_LOCK_SECONDS": lock,
            "SENDVAULT_SQLITE_BUSY_TIMEOUT_MS": busy,
        }
    )
    warning = settings.bulk_lock_warning()
    assert (warning is not None) == warned, warning
    if lock.startswith("2.") and warning is not None:  # 10,400 ms (or a hair over 10,000) needed:
        assert "SENDVAULT_SQLITE_BUSY_TIMEOUT_MS=11000" in warning  # rounded up to a whole second
