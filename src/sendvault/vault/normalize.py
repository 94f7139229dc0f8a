"""Normalization of emails and mobile numbers to the one form the blind index sees.

Normalization is idempotent (``normalize(normalize(v)) == normalize(v)``); the vault relies on
that to look values up before normalizing them (see :mod:`sendvault.vault.service`).

Errors carry a reason code only. email-validator's and phonenumbers' own messages may quote
parts of the input, so they are never passed on.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from dataclasses import dataclass

import email_validator
import phonenumbers

from ..errors import InvalidValue

__all__ = ["Kind", "Normalizer", "parse_kind"]

MAX_EMAIL_LENGTH = 254  # RFC 5321 4.5.3.1.3 (path, less the angle brackets) and RFC 3696 errata
MAX_LOCAL_OCTETS = 64  # RFC 5321 4.5.3.1.1
MAX_DOMAIN_OCTETS = 255  # RFC 5321 4.5.3.1.2
MAX_MOBILE_LENGTH = 40


class Kind(enum.IntEnum):
    """What a token stands for. The numbers are stored; never renumber."""

    EMAIL = 1
    MOBILE = 2

    @property
    def label(self) -> str:
        """The CLI's name of the kind."""
        return "email" if self is Kind.EMAIL else "mobile"


_KIND_NAMES = {
    "email": Kind.EMAIL,
    "mobile": Kind.MOBILE,
    "mobilenumber": Kind.MOBILE,
    "phone": Kind.MOBILE,
    "sms": Kind.MOBILE,
}


def parse_kind(name: str) -> Kind:
    """``email``/``Email`` and ``mobile``/``MobileNumber`` (Marketing Cloud's names) to a kind."""
    try:
        return _KIND_NAMES[name.strip().lower()]
    except KeyError:
        raise InvalidValue("unknown-type") from None


# A strict subset of the addresses email-validator accepts, for which its normalized form is the
# input with the domain lowercased. tests/vault/test_normalize.py proves the equivalence with
# Hypothesis; anything outside the subset takes the full email-validator path.
_FAST_EMAIL = re.compile(
    r"[A-Za-z0-9_+-]{1,64}(?:\.[A-Za-z0-9_+-]{1,64})*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
)
_SPECIAL_USE = frozenset(email_validator.SPECIAL_USE_DOMAIN_NAMES)
# The fast path checks only the last label; names with a dot would need the full check.
assert all("." not in name for name in _SPECIAL_USE)
_DIGITS = re.compile(r"\+?[0-9]{1,20}")
_NATIONAL_CHARS = re.compile(r"[0-9 ()./\-]+")


def _fast_domain_ok(domain: str) -> bool:
    # Labels like "ab--cd" are reserved for IDNA A-labels; leave them to the full check.
    for label in domain.split("."):
        if len(label) >= 4 and label[2:4] == "--":
            return False
    return domain.rpartition(".")[2] not in _SPECIAL_USE


@dataclass(frozen=True, slots=True)
class Normalizer:
    """Turns raw input into the canonical form of its kind, or raises :class:`InvalidValue`."""

    keep_local_case: bool = False
    default_region: str | None = None

    def normalize(self, kind: Kind, raw: str) -> str:
        """The canonical form of ``raw``: lowercase ASCII-domain email, or E.164 digits without ``+``."""
        if kind is Kind.EMAIL:
            return self.email(raw)
        return self.mobile(raw)

    def email(self, raw: str) -> str:
        """Normalize an email address (NFC, IDNA domain lowercased, local part lowercased by default)."""
        text = unicodedata.normalize("NFC", raw.strip())
        if not text:
            raise InvalidValue("empty-value")
        if len(text) > MAX_EMAIL_LENGTH:
            raise InvalidValue("invalid-email")
        if _FAST_EMAIL.fullmatch(text):
            local, _, domain = text.rpartition("@")
            domain = domain.lower()
            if len(local) <= MAX_LOCAL_OCTETS and _fast_domain_ok(domain):
                return f"{local if self.keep_local_case else local.lower()}@{domain}"
        try:
            checked = email_validator.validate_email(
                text, check_deliverability=False, allow_smtputf8=True, allow_quoted_local=False
            )
        except email_validator.EmailNotValidError:
            raise InvalidValue("invalid-email") from None
        local = checked.local_part
        if not self.keep_local_case:
            local = unicodedata.normalize("NFC", local.lower())
        # email-validator lets a local part of 65 octets and more through (and counts characters,
        # not the octets of an internationalized one): SMTP servers refuse them.
        local_octets, domain_octets = len(local.encode()), len(checked.ascii_domain)
        if (
            local_octets > MAX_LOCAL_OCTETS
            or domain_octets > MAX_DOMAIN_OCTETS
            or local_octets + 1 + domain_octets > MAX_EMAIL_LENGTH
        ):
            raise InvalidValue("invalid-email")
        return f"{local}@{checked.ascii_domain}"

    def mobile(self, raw: str) -> str:
        """Normalize a mobile number to E.164 digits without ``+`` (Marketing Cloud's form).

        Digits only (optionally after ``+``) is read as E.164; national forms (spaces, brackets,
        dashes, a leading 0) use ``default_region``. Every *possible* number is accepted.
        """
        text = raw.strip()
        if not text:
            raise InvalidValue("empty-value")
        if len(text) > MAX_MOBILE_LENGTH:
            raise InvalidValue("invalid-mobile")
        if _DIGITS.fullmatch(text) and not text.startswith("0"):
            candidate, region = "+" + text.removeprefix("+"), None
        elif text.startswith("+") and _NATIONAL_CHARS.fullmatch(text[1:]):
            candidate, region = text, None
        elif _NATIONAL_CHARS.fullmatch(text):
            if self.default_region is None:
                raise InvalidValue("mobile-needs-country-code")
            candidate, region = text, self.default_region
        else:
            raise InvalidValue("invalid-mobile")
        try:
            number = phonenumbers.parse(candidate, region)
        except phonenumbers.NumberParseException:
            raise InvalidValue("invalid-mobile") from None
        if not phonenumbers.is_possible_number(number):
            raise InvalidValue("invalid-mobile")
        as_given = region is None and candidate.removeprefix("+").isdigit()
        return _canonical_digits(number, candidate, as_given=as_given)


def _canonical_digits(number: phonenumbers.PhoneNumber, candidate: str, *, as_given: bool) -> str:
    """E.164 digits of a parsed number, refused unless they read back as themselves.

    Idempotence matters: the vault looks values up before normalizing them, so a form that
    normalized differently a second time could give one number two tokens.
    """
    digits = str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)).removeprefix("+")
    if as_given and digits == candidate.removeprefix("+"):
        return digits
    # A national form, or E.164 digits that still carried a trunk prefix after the country code
    # (82 0 10... for a Korean mobile): the number phonenumbers made is accepted only if it reads
    # back as itself; forms that do not settle (31 0000000) are refused.
    try:
        again = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        raise InvalidValue("invalid-mobile") from None
    if phonenumbers.format_number(again, phonenumbers.PhoneNumberFormat.E164) != "+" + digits:
        raise InvalidValue("invalid-mobile")
    return digits
