"""Mobile tokens Marketing Cloud accepts: E.164-shaped, at most 15 digits, never a real number."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import phonenumbers
import pytest

from sendvault.config import load_settings
from sendvault.errors import ConfigError
from sendvault.vault import Kind, TokenFormat, open_vault
from sendvault.vault.formats import MIN_MOBILE_TOKENS, country_range

M = Kind.MOBILE
E164 = re.compile(r"[1-9][0-9]{7,14}")


def _number(token: str) -> phonenumbers.PhoneNumber:
    return phonenumbers.parse("+" + token, None)


def test_default_mobile_token_is_999_and_twelve_random_digits() -> None:
    fmt = TokenFormat()
    tokens = {fmt.new(M, "12125550123") for _ in range(200)}
    assert len(tokens) == 200
    for token in tokens:
        assert E164.fullmatch(token)
        assert len(token) == 15
        assert token.startswith("999")
        # 999 is no country's code: phonenumbers cannot even place the number.
        with pytest.raises(phonenumbers.NumberParseException):
            _number(token)


def test_prefix_and_digits_longer_than_e164_are_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SENDVAULT_MOBILE_TOKEN_PREFIX": "99901", "SENDVAULT_MOBILE_TOKEN_DIGITS": "11"})
    assert info.value.setting == "mobile_token_digits"
    assert "16 digits" in str(info.value)
    with pytest.raises(ConfigError, match="at most 15"):
        TokenFormat(mobile_prefix="99901", mobile_digits=11)


def test_fewer_than_a_billion_tokens_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SENDVAULT_MOBILE_TOKEN_DIGITS": "8"})
    assert info.value.setting == "mobile_token_digits"
    with pytest.raises(ConfigError, match="at least 1e\\+09"):
        TokenFormat(mobile_digits=8)
    assert TokenFormat(mobile_digits=9).new(M).startswith("999")


def test_a_prefix_under_a_real_country_code_counts_only_numbers_that_cannot_be_real() -> None:
    # 447 and 9 digits are UK mobile numbers, most of them valid: not enough room is left.
    with pytest.raises(ConfigError, match="mobile_token_digits"):
        TokenFormat(mobile_prefix="447", mobile_digits=9)
    # 44 and 13 digits are longer than any UK number: accepted, and each token is checked.
    fmt = TokenFormat(mobile_prefix="44", mobile_digits=13)
    for _ in range(50):
        assert not phonenumbers.is_valid_number(_number(fmt.new(M)))


def test_a_prefix_starting_with_zero_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SENDVAULT_MOBILE_TOKEN_PREFIX": "0999"})
    assert info.value.setting == "mobile_token_prefix"


@pytest.mark.parametrize(
    ("code", "value"), [("1", "12125550123"), ("44", "447700900123"), ("49", "4915112345678")]
)
def test_keep_country_tokens_keep_the_code_and_are_possible_but_not_valid(code: str, value: str) -> None:
    fmt = TokenFormat(mobile_style="keep-country", mobile_country_codes=[code])
    assert country_range(code).capacity >= MIN_MOBILE_TOKENS
    tokens = {fmt.new(M, value) for _ in range(300)}
    assert len(tokens) == 300
    for token in tokens:
        assert E164.fullmatch(token)
        number = _number(token)
        assert number.country_code == int(code)
        assert phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == "+" + token
        assert phonenumbers.is_possible_number(number)
        assert not phonenumbers.is_valid_number(number)
        assert value[len(code) :] not in token


def test_keep_country_gives_other_countries_prefix_tokens() -> None:
    fmt = TokenFormat(mobile_style="keep-country", mobile_country_codes=["1"])
    assert fmt.new(M, "447700900123").startswith("999")
    assert fmt.new(M, "12125550123").startswith("1")


def test_keep_country_refuses_codes_without_room_for_a_billion_tokens() -> None:
    # French numbers have nine digits, most of them assigned: not 10^9 unassigned ones.
    with pytest.raises(ConfigError) as info:
        TokenFormat(mobile_style="keep-country", mobile_country_codes=["1", "33"])
    assert info.value.setting == "mobile_token_country_codes"
    assert "country code 33" in str(info.value)
    with pytest.raises(ConfigError, match="not an assigned"):
        TokenFormat(mobile_style="keep-country", mobile_country_codes=["999"])


def test_keep_country_needs_codes_and_is_refused_at_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(env={"SENDVAULT_MOBILE_TOKEN_STYLE": "keep-country"})
    assert info.value.setting == "mobile_token_country_codes"
    settings = load_settings(
        env={
            "SENDVAULT_HOME": str(tmp_path / "home"),
            "SENDVAULT_MOBILE_TOKEN_STYLE": "keep-country",
            "SENDVAULT_MOBILE_TOKEN_COUNTRY_CODES": "1, 33",
        }
    )
    with pytest.raises(ConfigError, match="country code 33"):
        open_vault(settings)
    assert not (tmp_path / "home").exists()  # refused before anything was created


def test_keep_country_vault_round_trip(tmp_path: Path) -> None:
    settings = load_settings(
        env={
            "SENDVAULT_HOME": str(tmp_path / "home"),
            "SENDVAULT_MOBILE_TOKEN_STYLE": "keep-country",
            "SENDVAULT_MOBILE_TOKEN_COUNTRY_CODES": "+1 44",
        }
    )
    vault = open_vault(settings)
    try:
        us, fr = vault.tokenize_many([(M, "+1 212 555 0123"), (M, "33612345678")])
        assert us.token is not None
        assert fr.token is not None
        assert us.token.startswith("1")
        assert fr.token.startswith("999")
        assert [r.value for r in vault.resolve_many([us.token, fr.token])] == ["12125550123", "33612345678"]
    finally:
        vault.close()


class _LegacyFormat(TokenFormat):
    """The format of earlier releases: 999 and 29 random digits (32 in all)."""

    def new(self, kind: Kind, value: str | None = None) -> str:
        return super().new(kind, value) + "12345678901234567"


def test_tokens_issued_with_32_digits_keep_resolving_and_are_not_reissued(tmp_path: Path) -> None:
    settings = load_settings(env={"SENDVAULT_HOME": str(tmp_path / "home")})
    old = open_vault(settings)
    old._format = _LegacyFormat()  # stands in for an older release's vault
    (legacy,) = old.tokenize_many([(M, "12125550123")])
    old.set_attributes(legacy.token or "", {"FirstName": "Ann"})
    old.close()
    assert legacy.token is not None
    assert len(legacy.token) == 32

    vault = open_vault(settings)
    try:
        (again,) = vault.tokenize_many([(M, "+1 (212) 555-0123")])
        assert again.token == legacy.token
        assert not again.created
        (resolved,) = vault.resolve_many([legacy.token])
        assert resolved.value == "12125550123"
        assert resolved.attributes == {"FirstName": "Ann"}
        (fresh,) = vault.tokenize_many([(M, "12125550124")])
        assert fresh.token is not None
        assert len(fresh.token) == 15
    finally:
        vault.close()
    with sqlite3.connect(settings.sqlite_path) as db:
        assert db.execute("SELECT count(*) FROM contacts").fetchone() == (2,)


def test_config_check_refuses_a_keep_country_code_without_room(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sendvault.cli import cli

    env = {
        "SENDVAULT_HOME": str(tmp_path / "home"),
        "SENDVAULT_MOBILE_TOKEN_STYLE": "keep-country",
        "SENDVAULT_MOBILE_TOKEN_COUNTRY_CODES": "44 33",
    }
    result = CliRunner().invoke(cli, ["config", "check", "--no-ports"], env=env)
    assert result.exit_code == 2
    assert "setting mobile_token_country_codes" in result.stderr
    assert "country code 33" in result.stderr
