"""Token formats: random strings that look like an email address or a phone number.

Tokens come from the operating system's CSPRNG and are never derived from the value they stand
for. Email tokens carry 120 random bits (30 hex characters) on the operator's token domain;
mobile tokens are the configured prefix followed by at least 29 random digits (96 bits). With
the default prefix 999, a country code the ITU has not assigned, and more than E.164's 15
digits, a mobile token can never be a subscriber's real number.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from .normalize import Kind

__all__ = ["TokenFormat"]

_EMAIL_RANDOM_BYTES = 15


@dataclass(frozen=True, slots=True)
class TokenFormat:
    """Makes new tokens. Lookups never rely on a token's shape: the domain or prefix may change."""

    token_domain: str = "tokens.sendvault.invalid"
    mobile_prefix: str = "999"
    mobile_digits: int = 29

    def __post_init__(self) -> None:
        if self.mobile_digits < 29:
            raise ValueError("mobile tokens need at least 29 random digits (96 bits)")

    def new(self, kind: Kind) -> str:
        """A fresh random token of the given kind."""
        if kind is Kind.EMAIL:
            return f"{secrets.token_hex(_EMAIL_RANDOM_BYTES)}@{self.token_domain}"
        return self.mobile_prefix + str(secrets.randbelow(10**self.mobile_digits)).zfill(self.mobile_digits)
