"""Normalization: golden vectors, idempotence, and the email fast path's equivalence."""

from __future__ import annotations

import json
import string

import email_validator
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from tests.conftest import VECTORS

from sendvault.errors import InvalidValue
from sendvault.vault.normalize import Kind, Normalizer, parse_kind

_VECTORS = json.loads((VECTORS / "normalize.json").read_text())


def _cases(kind: str) -> list[dict[str, object]]:
    return list(_VECTORS[kind])


@pytest.mark.parametrize("case", _cases("email") + _cases("mobile"), ids=lambda c: repr(c["input"]))
def test_vector(case: dict[str, object]) -> None:
    kind = Kind.EMAIL if case in _VECTORS["email"] else Kind.MOBILE
    normalizer = Normalizer(keep_local_case=bool(case.get("keep_case")), default_region=case.get("region"))  # type: ignore[arg-type]
    raw = str(case["input"])
    if "expect" in case:
        assert normalizer.normalize(kind, raw) == case["expect"]
    else:
        with pytest.raises(InvalidValue) as info:
            normalizer.normalize(kind, raw)
        assert info.value.reason == case["reason"]


def test_invalid_value_never_carries_the_value() -> None:
    secret = "secret.person@-bad-domain.com"
    with pytest.raises(InvalidValue) as info:
        Normalizer().email(secret)
    assert "secret" not in str(info.value)
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


@pytest.mark.parametrize(
    ("name", "kind"), [("Email", Kind.EMAIL), ("MobileNumber", Kind.MOBILE), ("mobile", Kind.MOBILE)]
)
def test_parse_kind_accepts_marketing_cloud_names(name: str, kind: Kind) -> None:
    assert parse_kind(name) is kind


def test_parse_kind_rejects_unknown_types() -> None:
    with pytest.raises(InvalidValue, match="unknown-type"):
        parse_kind("Fax")


_ATEXT = string.ascii_letters + string.digits + "_+-.!#$%&'*/=?^`{|}~"
_local = st.text(alphabet=_ATEXT, min_size=1, max_size=70)
_label = st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=66)
_domain = st.lists(_label, min_size=1, max_size=4).map(".".join)
_tld = st.sampled_from(
    ["com", "COM", "org", "c", "c1", "123", "invalid", "test", "xn--p1ai", "local", "onion"]
)
_near_emails = st.builds(lambda loc, dom, tld: f"{loc}@{dom}.{tld}", _local, _domain, _tld)


@settings(max_examples=400, deadline=None)
@given(_near_emails)
@example("ab--cd@xy--z.com")
@example("a@ab--cd.com")
@example("a@example.local")
def test_email_fast_path_agrees_with_email_validator(address: str) -> None:
    """Whatever the fast path accepts, email-validator accepts with the same domain."""
    normalizer = Normalizer(keep_local_case=True)
    try:
        ours = normalizer.email(address)
    except InvalidValue:
        ours = None
    try:
        checked = email_validator.validate_email(address, check_deliverability=False, allow_smtputf8=True)
        theirs: str | None = f"{checked.local_part}@{checked.ascii_domain}"
    except email_validator.EmailNotValidError:
        theirs = None
    assert ours == theirs


_unicode_local = st.text(
    alphabet=st.characters(min_codepoint=0x41, max_codepoint=0x24F, exclude_characters='"(),:;<>@[\\]'),
    min_size=1,
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(st.one_of(_near_emails, st.builds(lambda loc: f"{loc}@Bücher.example", _unicode_local)), st.booleans())
def test_email_normalization_is_idempotent(address: str, keep_case: bool) -> None:
    normalizer = Normalizer(keep_local_case=keep_case)
    try:
        once = normalizer.email(address)
    except InvalidValue:
        return
    assert normalizer.email(once) == once


@settings(max_examples=300, deadline=None)
@given(st.from_regex(r"\+?[1-9][0-9]{6,14}", fullmatch=True))
def test_mobile_normalization_is_idempotent(number: str) -> None:
    normalizer = Normalizer()
    try:
        once = normalizer.mobile(number)
    except InvalidValue:
        return
    assert once.isdigit()
    assert normalizer.mobile(once) == once
