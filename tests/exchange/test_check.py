"""`exchange check`: clear values are found anywhere, masked; tokenized files pass."""

from __future__ import annotations

import time
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
    assert _check(f) == [
        (2, "SubscriberKey", "email-in-subscriber-key", "j***@***.com"),
        # A number in a free-text note is as clear as one in a phone column (was missed before).
        (3, "Notes", "phone", "+*********23"),
    ]


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


def test_clear_values_in_odd_places_are_found(tmp_path: Path) -> None:
    # Hostile-round findings: URL-encoded addresses (once and twice), an HTML entity, numbers inside
    # text, behind tel:/sms: and in "(+44)" form were all missed.
    f = tmp_path / "odd.csv"
    f.write_text(
        "SubscriberKey,Note\n"
        '"""Ann Roe"" <ann.roe@example.com>",x\n'
        "K1,https://t.example/c?e=ann%40example.com\n"
        "K2,https://t.example/c?e=ann%2540example.com\n"
        "K3,ann&#64;example.com\n"
        "K4,Call +44 7911 123456 today\n"
        "K5,tel:+447911123456\n"
        "K6,sms:%2B14155552671\n"
        "K7,(+44) 7911-123456\n"
        "K8,Mobile: 447911123456\n"
    )
    found = [(line, column, kind) for line, column, kind, _ in _check(f)]
    assert found == [
        (2, "SubscriberKey", "email-in-subscriber-key"),
        (3, "Note", "email"),
        (4, "Note", "email"),
        (5, "Note", "email"),
        (6, "Note", "phone"),
        (7, "Note", "phone"),
        (8, "Note", "phone"),
        (9, "Note", "phone"),
        (10, "Note", "phone"),
    ]
    for *_, masked in _check(f):
        assert "example" not in masked
        assert "7911" not in masked
        assert "ann" not in masked


def test_digits_inside_tokens_and_ids_are_not_numbers(tmp_path: Path) -> None:
    f = tmp_path / "t.csv"
    f.write_text(
        "SubscriberKey,EmailAddress,Mobile,Notes\n"
        "K-1,4479111234560a62783ecc0c508653@tokens.sendvault.invalid,999515456716640,order 2024-01-15\n"
        "K-2,a62783ecc0c508653447911123456b@tokens.sendvault.invalid,999123,ref AB447911123456CD\n"
    )
    assert _check(f) == []


def test_a_mask_never_carries_control_characters() -> None:
    masked = mask("email", "\x1b[31mann@example.c\x1b[0mom")
    assert masked.isprintable()
    assert "\x1b" not in masked


def test_a_long_cell_ending_in_an_at_sign_is_checked_in_linear_time(tmp_path: Path) -> None:
    # Hostile round: the address pattern backtracked quadratically (40 KB took 13 s, 1 MiB hours),
    # so one crafted cell could stall the guard in front of every push.
    f = tmp_path / "slow.csv"
    f.write_text("SubscriberKey,Note\nK1," + "a" * 200_000 + "@\nK2," + "x" * 100 + "@example.com\n")
    started = time.monotonic()
    found = _check(f)
    assert time.monotonic() - started < 5
    assert [(line, kind) for line, _, kind, _ in found] == [(3, "email")]


def test_numbers_a_spreadsheet_or_a_dialler_wrote_and_quoted_local_parts_are_found(tmp_path: Path) -> None:
    f = tmp_path / "x.csv"
    f.write_text(
        "K,N\n"
        "1,0044 7911 123456\n"  # the international prefix instead of +
        "2,447911123456.0\n"  # saved by a spreadsheet as a number
        '3,"""ann smith""@example.com"\n'  # a quoted local part
    )
    assert [(line, kind) for line, _, kind, _ in _check(f)] == [(2, "phone"), (3, "phone"), (4, "email")]


def test_a_number_as_the_subscriber_key_is_named_as_such(tmp_path: Path) -> None:
    f = tmp_path / "k.csv"
    f.write_text("SubscriberKey,EmailAddress\n+447911123456,0f3a9c@tokens.sendvault.invalid\n")
    assert [(line, kind) for line, _, kind, _ in _check(f)] == [(2, "phone-in-subscriber-key")]
