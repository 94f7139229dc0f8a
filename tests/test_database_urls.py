"""PostgreSQL links in the settings (`database_url`, `database_read_url`, `audit_witness`): a
malformed one is one clear line naming the setting, never a traceback, and no password is ever
shown, neither in that line, nor by `config show`, nor by a connection error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from tests.helpers import run_cli

from sendvault._pglink import masked, problem, scrubbed
from sendvault.config import load_settings
from sendvault.errors import ConfigError

pytest.importorskip("psycopg")

SECRET = "Hunter2-Secret"
PRIMARY = "postgresql://sv@127.0.0.1:9/sv"  # valid (nothing listens on port 9)

# (URL, words of the error): each holds the password where it would be most tempting to echo it.
BAD = [
    (f"postgresql://user:{SECRET}@host:notaport/db", "has a port that is not a number from 1 to 65535"),
    (f"postgres://user:{SECRET}@[::1", 'looking for matching "]" in IPv6 host address'),
    (f"postgresql://u:{SECRET}@/db?sslmode=bogus", "has sslmode=bogus, which is not one of disable, allow"),
    (f"postgresql://u:{SECRET}@127.0.0.1/db?bogusopt=1", 'invalid URI query parameter: "bogusopt"'),
    (f"postgresql://u@127.0.0.1/db?password={SECRET}&nosuch=1", 'invalid URI query parameter: "nosuch"'),
    (f"postgresql://u:{SECRET}%zz@127.0.0.1/db", 'invalid percent-encoded token: "***"'),
    (f"postgresql://u:{SECRET} x@127.0.0.1/db", 'unexpected spaces found in "***"'),
    (
        f"postgresql://u:{SECRET}@127.0.0.1/db?connect_timeout=soon",
        "connect_timeout=soon, which is not a whole",
    ),
    (f"postgresql://u:{SECRET}@127.0.0.1:5432,other:0/db", "has a port that is not a number"),
]
SETTINGS = {
    "database_url": {},
    "database_read_url": {"SENDVAULT_DATABASE_URL": PRIMARY},
    "audit_witness": {"SENDVAULT_DATABASE_URL": PRIMARY},
}


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize(("url", "words"), BAD)
def test_a_malformed_postgres_url_is_refused_naming_the_setting_without_the_password(
    setting: str, url: str, words: str
) -> None:
    if setting == "audit_witness" and " " in url:
        pytest.skip("audit_witness is a space-separated list: a space ends the URL")
    with pytest.raises(ConfigError) as info:
        load_settings(env={**SETTINGS[setting], f"SENDVAULT_{setting.upper()}": url})
    assert info.value.setting == setting
    assert words in str(info.value)
    assert SECRET not in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("url", "words"), BAD[:4])
@pytest.mark.parametrize("command", [("config", "check"), ("db", "status"), ("serve",)])
def test_cli_says_what_is_wrong_in_one_line_and_exits_2(
    tmp_path: Path, command: tuple[str, ...], url: str, words: str
) -> None:
    done = run_cli(tmp_path / "home", *command, env={"SENDVAULT_DATABASE_URL": url})
    assert done.returncode == 2, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert errors[0].startswith("error: setting database_url (from environment SENDVAULT_DATABASE_URL): ")
    assert words in errors[0]
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.parametrize("setting", ["database_read_url", "audit_witness"])
def test_config_check_names_the_other_postgres_settings(tmp_path: Path, setting: str) -> None:
    for url, words in BAD:
        if setting == "audit_witness" and " " in url:
            continue  # a space-separated list: a space ends the URL
        env = {**SETTINGS[setting], f"SENDVAULT_{setting.upper()}": url}
        done = run_cli(tmp_path / "home", "config", "check", env=env)
        assert done.returncode == 2, done.stderr
        assert f"error: setting {setting} (from environment SENDVAULT_{setting.upper()}): " in done.stderr
        assert words in done.stderr
        assert "Traceback" not in done.stderr
        assert SECRET not in done.stdout + done.stderr


def test_config_show_masks_every_form_of_a_database_password(tmp_path: Path) -> None:
    env = {
        "SENDVAULT_DATABASE_URL": f"postgresql://sv@db.internal/sv?password={SECRET}&sslmode=verify-full",
        "SENDVAULT_DATABASE_READ_URL": f"postgresql://sv:{SECRET}@standby/sv?sslpassword={SECRET}A",
        "SENDVAULT_AUDIT_WITNESS": f"postgresql://w@wit/w?pass%77ord={SECRET}B postgresql://w:{SECRET}C@wit/w",
    }
    done = run_cli(tmp_path / "home", "config", "show", "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert SECRET not in done.stdout
    shown = {row["setting"]: row["value"] for row in json.loads(done.stdout)}
    assert shown["database_url"] == "postgresql://sv@db.internal/sv?password=***&sslmode=verify-full"
    assert shown["database_read_url"] == "postgresql://sv:***@standby/sv?sslpassword=***"
    assert shown["audit_witness"] == "postgresql://w@wit/w?pass%77ord=*** postgresql://w:***@wit/w"
    table = run_cli(tmp_path / "home", "config", "show", env=env)
    assert table.returncode == 0, table.stderr
    assert SECRET not in table.stdout


@pytest.mark.parametrize(
    ("link", "shown"),
    [
        (f"postgresql://user:{SECRET}@host/db", "postgresql://user:***@host/db"),
        (f"postgresql://user@host/db?password={SECRET}", "postgresql://user@host/db?password=***"),
        (
            f"postgresql://user@host/db?sslpassword={SECRET}&x=1",
            "postgresql://user@host/db?sslpassword=***&x=1",
        ),
        # A password with unencoded '@', '/' or '?' (libpq misreads it): masked up to the last '@'.
        (f"postgresql://user:a@b/{SECRET}?@host/db", "postgresql://user:***@host/db"),
        (f"host=db password={SECRET} dbname=sv", "host=db password=*** dbname=sv"),
        (f"host=db password = '{SECRET} x' sslpassword={SECRET}", "host=db password = *** sslpassword=***"),
        ("host=db dbname=sv", "host=db dbname=sv"),
        # A conninfo string with '://' in some value is still a conninfo string.
        (
            f"host=db application_name=http://x password={SECRET}",
            "host=db application_name=http://x password=***",
        ),
        (f"  password={SECRET} options='-c x=a://b'", "  password=*** options='-c x=a://b'"),
        (
            "postgresql://user@host:5432/db?application_name=a@b",
            "postgresql://user@host:5432/db?application_name=a@b",
        ),
    ],
)
def test_masked_hides_passwords_in_urls_and_conninfo_strings(link: str, shown: str) -> None:
    assert masked(link) == shown


def test_conninfo_strings_are_checked_and_their_passwords_never_quoted() -> None:
    assert (
        problem("host=db password=x nosuch=1")
        == 'is not a valid PostgreSQL URL: invalid connection option "nosuch"'
    )
    assert SECRET not in (problem(f"host=db password='{SECRET}") or "")
    assert problem("host=db sslmode=verify-full") is None
    # libpq quotes the host it could not resolve; here that is a piece of the password.
    message = 'could not translate host name "tail@db" to address'
    assert (
        scrubbed(message, "postgresql://u:head@tail@db/x") == 'could not translate host name "***" to address'
    )


def test_a_connection_error_never_shows_the_password(tmp_path: Path) -> None:
    # The password holds an unencoded '@': libpq takes its end for the host name, and says so.
    url = f"postgresql://u:{SECRET}@{SECRET}x.invalid@127.0.0.1/db"
    done = run_cli(tmp_path / "home", "db", "status", env={"SENDVAULT_DATABASE_URL": url, **_no_pg_env()})
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert SECRET not in done.stdout + done.stderr


def _no_pg_env() -> dict[str, str]:
    return {k: "" for k in os.environ if k.startswith("PG")}
