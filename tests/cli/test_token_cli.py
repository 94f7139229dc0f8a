"""The CLI as scripts use it: real processes, stdout for tokens, stderr for errors, exit codes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from tests.helpers import run_cli as run

from sendvault.cli.reference import cli_reference


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def test_get_prints_one_token_per_line_in_order_and_is_stable(home: Path) -> None:
    first = run(home, "token", "get", "--type", "email", "a@example.com", "b@example.com")
    assert first.returncode == 0, first.stderr
    tokens = first.stdout.splitlines()
    assert len(tokens) == 2
    assert tokens[0] != tokens[1]
    again = run(home, "token", "get", "--type", "email", "b@example.com", "A@Example.com")
    assert again.stdout.splitlines() == [tokens[1], tokens[0]]


def test_resolve_prints_values_and_dash_for_unresolved(home: Path) -> None:
    tok = run(home, "token", "get", "--type", "mobile", "+1 212 555 0123").stdout.strip()
    out = run(home, "token", "resolve", tok, "unknown@tokens.sendvault.invalid")
    assert out.returncode == 0
    assert out.stdout.splitlines() == ["12125550123", "-"]


def test_values_from_stdin_with_dash(home: Path) -> None:
    out = run(home, "token", "get", "--type", "email", "-", stdin="a@example.com\nb@example.com\n")
    assert out.returncode == 0
    assert len(out.stdout.splitlines()) == 2
    resolved = run(home, "token", "resolve", "-", stdin=out.stdout)
    assert resolved.stdout.splitlines() == ["a@example.com", "b@example.com"]


def test_bad_value_names_position_not_value_and_exits_1_after_the_rest(home: Path) -> None:
    out = run(
        home, "token", "get", "--type", "email", "good@example.com", "secret-person@@bad", "c@example.com"
    )
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[1] == "-"
    assert "@" in lines[0]
    assert "@" in lines[2]
    assert "value 2" in out.stderr
    assert "invalid-email" in out.stderr
    assert "secret-person" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


def test_json_output_has_per_item_results(home: Path) -> None:
    out = run(home, "token", "get", "--type", "email", "--json", "a@example.com", "nope")
    doc = json.loads(out.stdout)
    assert doc[0]["token"]
    assert doc[0]["created"] is True
    assert doc[1] == {"position": 2, "token": None, "error": "invalid-email"}
    res = json.loads(run(home, "token", "resolve", "--json", doc[0]["token"]).stdout)
    assert res == [{"token": doc[0]["token"], "value": "a@example.com", "type": "email", "attributes": {}}]


def test_attrs_and_erase(home: Path) -> None:
    tok = run(home, "token", "get", "--type", "email", "a@example.com").stdout.strip()
    assert run(home, "contact", "attrs", "set", tok, "FirstName=Ann", "City=Oslo").returncode == 0
    assert run(home, "contact", "attrs", "get", tok).stdout.splitlines() == ["City=Oslo", "FirstName=Ann"]
    assert run(home, "contact", "attrs", "delete", tok, "City").returncode == 0
    assert json.loads(run(home, "contact", "attrs", "get", "--json", tok).stdout) == {"FirstName": "Ann"}
    erased = run(home, "erase", "--value", "A@example.com", "--type", "email")
    assert erased.returncode == 0
    assert run(home, "token", "resolve", tok).stdout.strip() == "-"
    again = run(home, "erase", "--token", tok)
    assert again.returncode == 1
    assert "nothing to erase" in again.stderr


def test_erase_needs_exactly_one_target(home: Path) -> None:
    out = run(home, "erase")
    assert out.returncode == 2
    assert "exactly one" in out.stderr


def test_bad_setting_is_one_line_naming_it(home: Path) -> None:
    out = run(
        home, "token", "get", "--type", "email", "a@example.com", env={"SENDVAULT_MOBILE_TOKEN_DIGITS": "5"}
    )
    assert out.returncode == 2
    first = out.stderr.splitlines()[0]
    source = "(from environment SENDVAULT_MOBILE_TOKEN_DIGITS)"
    assert first.startswith(f"error: setting mobile_token_digits {source}:")
    assert "(allowed: a whole number from 9 to 14)" in first
    assert "Traceback" not in out.stderr


def test_unsafe_key_file_is_refused_with_a_hint(home: Path) -> None:
    run(home, "token", "get", "--type", "email", "a@example.com")
    (home / "keys" / "master.key").chmod(0o644)
    out = run(home, "token", "resolve", "x")
    assert out.returncode == 1
    assert "chmod 600" in out.stderr
    assert "Traceback" not in out.stderr


def test_config_show_masks_the_master_key(home: Path) -> None:
    key = base64.b64encode(b"k" * 32).decode()
    out = run(home, "config", "show", "--json", env={"SENDVAULT_MASTER_KEY": key})
    doc = {row["setting"]: row for row in json.loads(out.stdout)}
    assert doc["master_key"]["value"] == "***"
    assert doc["master_key"]["source"] == "environment SENDVAULT_MASTER_KEY"
    assert key not in out.stdout
    table = run(home, "config", "show", env={"SENDVAULT_MASTER_KEY": key})
    assert key not in table.stdout
    assert "***" in table.stdout


def test_cli_reference_is_current() -> None:
    docs = Path(__file__).parent.parent.parent / "docs" / "cli.md"
    assert docs.read_text() == cli_reference(), "regenerate: python -m sendvault.cli.reference > docs/cli.md"


def test_cli_reference_covers_every_command_including_lazy_ones() -> None:
    import click

    from sendvault.cli import cli

    text = cli_reference()
    ctx = click.Context(cli, info_name="sendvault")
    for name in cli.list_commands(ctx):
        assert f"## `sendvault {name}`" in text, name
    for nested in ("token get", "audit verify", "scan tls", "clients add", "contact attrs set"):
        assert f"## `sendvault {nested}`" in text, nested
