"""`exchange check`: clear values are found anywhere, masked; tokenized files pass."""

from __future__ import annotations

from pathlib import Path

from sendvault.exchange import check_file, mask

TOKEN_DOMAIN = "tokens.sendvault.invalid"


def _check(path: Path, region: str | None = None) -> list[tuple[int, str, str, str]]:
    return [
        (f.line, f.column, f.kind, f.masked)
        for f in check_file(str(path), token_domain=TOKEN_DOMAIN, default_region=region)
    ]


def test_an_email_hidden_in_the_subscriber_key_is_found(tmp_path: Path) -> None:
    f = tmp_path / "send.csv"
    f.write_text(
        "SubscriberKey,EmailAddress,Notes\n"
        "jane.roe@example.com,0f3a9c@tokens.sendvault.invalid,ok\n"
        "K-2,77aa@tokens.sendvault.invalid,call +1 212 555 0123 later\n"
    )
    assert _check(f) == [(2, "SubscriberKey", "email-in-subscriber-key", "j***@***.com")]


def test_clear_values_in_any_column_are_reported_masked(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text(
        "id;contact;mobile;misc\n"
        '1;"Ann <ann@example.org>";+44 20 7946 0958;12345\n'
        "2;;14155552671;2024-01-15\n"
        "3;;999123456789012345678901234567890;\n"
    )
    found = _check(f)
    assert found == [
        (2, "contact", "email", "a***@***.org"),
        (2, "mobile", "phone", "+**********58"),
        (3, "mobile", "phone", "*********71"),
    ]
    for *_, masked in found:
        assert "example" not in masked
        assert "7946" not in masked


def test_a_tokenized_file_passes(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text(
        "SubscriberKey,EmailAddress,Mobile,Amount\n"
        "K-1,a62783ecc0c50865301b92a9995853@tokens.sendvault.invalid,99951545671664023701692334392502,19.99\n"
    )
    assert _check(f) == []


def test_national_numbers_need_a_region(tmp_path: Path) -> None:
    f = tmp_path / "n.csv"
    f.write_text("name,phone\nA,020 7946 0958\n")
    assert _check(f) == []
    assert _check(f, region="GB") == [(2, "phone", "phone", "*********58")]


def test_mask_shows_almost_nothing() -> None:
    assert mask("email", "someone@example.com") == "s***@***.com"
    assert mask("phone", "+33 6 12 34 56 78") == "+*********78"
