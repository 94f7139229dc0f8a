"""Token formats: random strings that look like an email address or a phone number.

Tokens come from a random source (the operating system's CSPRNG unless a test injects another)
and are never derived from the value they stand for. A token is not a secret: resolving one
needs an authenticated client. Its job is to be unique, never reused and free of information
about the value; uniqueness is the store's (a token that collides with any existing one, live or
erased, is drawn again, see :mod:`sendvault.vault.service`).

- Email tokens carry 120 random bits (30 hex characters) on the operator's token domain.
- Mobile tokens are E.164-shaped, at most 15 digits, because Marketing Cloud's SMS side takes
  E.164 numbers only. The default style is the prefix ``999`` (a country code the ITU has not
  assigned, so a token can never reach a phone) and 12 random digits: 10^12 tokens.
- ``keep-country`` keeps the value's country calling code, for accounts whose SMS setup checks
  the country, and fills the national number from ranges where ``phonenumbers`` judges every
  number possible but not valid (unassigned). Each token is checked again when it is drawn.

A configuration that cannot produce at least 10^9 distinct mobile tokens is refused when the
vault opens (docs/design.md explains the trade-off).
"""

from __future__ import annotations

import functools
import random
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import phonenumbers
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE

from ..errors import ConfigError, CryptoError
from .normalize import Kind

__all__ = [
    "MIN_MOBILE_TOKENS",
    "CountryRange",
    "RandomBelow",
    "TokenFormat",
    "country_range",
    "parse_country_codes",
]

# ``rng(n)`` returns a uniform integer in [0, n); secrets.randbelow by default.
RandomBelow = Callable[[int], int]

MIN_MOBILE_TOKENS = 10**9
E164_MAX_DIGITS = 15
_EMAIL_RANDOM_BITS = 120
# Completions of a candidate national prefix sampled before the whole range is taken as unassigned.
_RANGE_SAMPLES = 48
# A drawn keep-country token that phonenumbers judges valid after all is drawn again, this often.
_MAX_REDRAWS = 64


def _e164_ok(digits: str, *, possible: bool) -> bool:
    """Whether ``+digits`` reads back as itself, is not a valid number, and (if asked) is possible."""
    try:
        number = phonenumbers.parse("+" + digits, None)
    except phonenumbers.NumberParseException:
        return not possible
    if phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) != "+" + digits:
        return False
    if possible and not phonenumbers.is_possible_number(number):
        return False
    return not phonenumbers.is_valid_number(number)


def _calling_code(digits: str) -> str | None:
    """The assigned country calling code ``digits`` starts with (codes are prefix-free), if any."""
    for size in (1, 2, 3):
        if len(digits) >= size and int(digits[:size]) in COUNTRY_CODE_TO_REGION_CODE:
            return digits[:size]
    return None


def _may_start_assigned_code(prefix: str) -> bool:
    """Whether numbers under ``prefix`` may belong to an assigned calling code.

    Calling codes are prefix-free and at most three digits: a prefix whose first three digits are
    no assigned code (999) can never make a real number; a shorter one (99) may (992 is assigned).
    """
    return _calling_code(prefix) is not None or len(prefix) < 3


@dataclass(frozen=True, slots=True)
class CountryRange:
    """Where keep-country tokens of one calling code are drawn: national prefixes of one length."""

    code: str
    national_digits: int
    prefixes: tuple[str, ...]

    @property
    def capacity(self) -> int:
        """How many distinct tokens the range holds."""
        return sum(10 ** (self.national_digits - len(p)) for p in self.prefixes)

    def nth(self, index: int) -> str:
        """The ``index``-th token of the range (0 <= index < capacity)."""
        for prefix in self.prefixes:
            size = 10 ** (self.national_digits - len(prefix))
            if index < size:
                rest = self.national_digits - len(prefix)
                return self.code + prefix + (str(index).zfill(rest) if rest else "")
            index -= size
        raise IndexError(index)


def _national_lengths(code: int) -> list[int]:
    region = phonenumbers.region_code_for_country_code(code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(code, region)
    if metadata is None or metadata.general_desc is None:
        return []
    return sorted(set(metadata.general_desc.possible_length or ()), reverse=True)


def _all_unassigned(code: str, national_digits: int, prefix: str, sampler: random.Random) -> bool | None:
    """True if every sampled completion is possible-not-valid, False if none is, None if mixed."""
    rest = national_digits - len(prefix)
    hits = 0
    for _ in range(_RANGE_SAMPLES if rest else 1):
        tail = str(sampler.randrange(10**rest)).zfill(rest) if rest else ""
        hits += _e164_ok(code + prefix + tail, possible=True)
    if hits == 0:
        return False
    return True if hits == (_RANGE_SAMPLES if rest else 1) else None


@functools.lru_cache(maxsize=512)
def country_range(code: str) -> CountryRange:
    """The unassigned national ranges of a calling code, at its longest possible length.

    National prefixes of one, two and three digits are sampled (deterministically, so start-up
    decisions are reproducible); a prefix whose sampled numbers are all possible but not valid is
    taken whole, a mixed one is split into its ten children until the range holds 10^9 numbers.
    Every drawn token is checked again.
    """
    lengths = [n for n in _national_lengths(int(code)) if len(code) + n <= E164_MAX_DIGITS]
    if not lengths:
        return CountryRange(code, 0, ())
    national = lengths[0]
    sampler = random.Random(f"sendvault-range:{code}:{national}")  # noqa: S311 - reproducible sampling
    taken: list[str] = []
    level = [str(d) for d in range(10)]
    # Level by level (one-digit prefixes, then two, then three), stopping after the first level
    # that reaches the minimum: each level costs ten times the one before it.
    while level and sum(10 ** (national - len(p)) for p in taken) < MIN_MOBILE_TOKENS:
        mixed = []
        for prefix in level:
            verdict = _all_unassigned(code, national, prefix, sampler)
            if verdict:
                taken.append(prefix)
            elif verdict is None and len(prefix) < min(3, national):
                mixed.append(prefix)
        level = [prefix + str(d) for prefix in mixed for d in range(10)]
    return CountryRange(code, national, tuple(sorted(taken)))


def parse_country_codes(text: str) -> tuple[str, ...]:
    """``"1 44,49"`` to ``("1", "44", "49")``; order kept, duplicates dropped."""
    seen: dict[str, None] = {}
    for part in text.replace(",", " ").split():
        seen.setdefault(part.removeprefix("+"), None)
    return tuple(seen)


class TokenFormat:
    """Makes new tokens. Lookups never rely on a token's shape: the domain or prefix may change."""

    __slots__ = ("_check_prefix_tokens", "_ranges", "_rng", "mobile_digits", "mobile_prefix", "token_domain")

    def __init__(
        self,
        token_domain: str = "tokens.sendvault.invalid",  # noqa: S107 - a domain, not a password
        mobile_prefix: str = "999",
        mobile_digits: int = 12,
        *,
        mobile_style: str = "prefix",
        mobile_country_codes: Iterable[str] = (),
        rng: RandomBelow = secrets.randbelow,
    ) -> None:
        self.token_domain = token_domain
        self.mobile_prefix = mobile_prefix
        self.mobile_digits = mobile_digits
        self._rng = rng
        self._check_prefix()
        self._ranges: dict[str, CountryRange] = {}
        if mobile_style == "keep-country":
            self._ranges = {code: self._check_country(code) for code in mobile_country_codes}
            if not self._ranges:
                raise ConfigError(
                    "mobile_token_country_codes",
                    'keep-country needs the calling codes whose country tokens keep, e.g. "1 44"',
                )
        elif mobile_style != "prefix":
            raise ConfigError("mobile_token_style", "allowed: prefix, keep-country")

    def _check_prefix(self) -> None:
        prefix, digits = self.mobile_prefix, self.mobile_digits
        if not prefix.isdigit() or prefix.startswith("0"):
            raise ConfigError("mobile_token_prefix", "must be digits not starting with 0 (E.164)")
        if len(prefix) + digits > E164_MAX_DIGITS:
            raise ConfigError(
                "mobile_token_digits",
                f"the prefix and the random digits make {len(prefix) + digits} digits; "
                f"E.164 allows at most {E164_MAX_DIGITS}",
            )
        # A prefix under an assigned calling code could make real numbers: every token is checked
        # and the share of real numbers counts against the capacity.
        self._check_prefix_tokens = _may_start_assigned_code(prefix)
        usable = 10**digits
        if self._check_prefix_tokens:
            sampler = random.Random(f"sendvault-prefix:{prefix}:{digits}")  # noqa: S311 - reproducible
            fine = sum(
                _e164_ok(prefix + str(sampler.randrange(10**digits)).zfill(digits), possible=False)
                for _ in range(200)
            )
            usable = usable * fine // 200
        if usable < MIN_MOBILE_TOKENS:
            raise ConfigError(
                "mobile_token_digits",
                f"this prefix leaves room for about {usable:.1e} mobile tokens; at least 1e+09 are needed",
            )

    @staticmethod
    def _check_country(code: str) -> CountryRange:
        if not code.isdigit() or int(code) not in COUNTRY_CODE_TO_REGION_CODE:
            raise ConfigError("mobile_token_country_codes", f"{code} is not an assigned country calling code")
        found = country_range(code)
        if found.capacity < MIN_MOBILE_TOKENS:
            raise ConfigError(
                "mobile_token_country_codes",
                f"country code {code} has unassigned room for about {found.capacity:.1e} tokens "
                "(at least 1e+09 are needed); leave it out and its numbers get prefix-style tokens",
            )
        return found

    @property
    def keeps_country(self) -> tuple[str, ...]:
        """The calling codes whose numbers get keep-country tokens."""
        return tuple(self._ranges)

    def new(self, kind: Kind, value: str | None = None) -> str:
        """A fresh random token of the given kind; ``value`` is the normalized value it will stand for.

        Only a keep-country mobile token reads the value, and only its calling code.
        """
        if kind is Kind.EMAIL:
            return f"{self._rng(1 << _EMAIL_RANDOM_BITS):030x}@{self.token_domain}"
        if self._ranges and value:
            code = _calling_code(value)
            if code in self._ranges:
                return self._country_token(self._ranges[code])
        return self._prefix_token()

    def _prefix_token(self) -> str:
        for _ in range(_MAX_REDRAWS):
            token = self.mobile_prefix + str(self._rng(10**self.mobile_digits)).zfill(self.mobile_digits)
            if not self._check_prefix_tokens or _e164_ok(token, possible=False):
                return token
        raise CryptoError("the random source keeps drawing real phone numbers")

    def _country_token(self, found: CountryRange) -> str:
        for _ in range(_MAX_REDRAWS):
            token = found.nth(self._rng(found.capacity))
            if _e164_ok(token, possible=True):
                return token
        raise CryptoError("the random source keeps drawing assigned phone numbers")
