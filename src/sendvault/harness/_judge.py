"""Pure judgements the checks make: token shapes, a value leaking into its token, ids.

Kept free of I/O so the golden vectors (``vectors/contract.json``) test them directly.
"""

from __future__ import annotations

import base64
import re
from collections import Counter
from collections.abc import Iterable

import email_validator
import phonenumbers

__all__ = [
    "RESERVED_TLDS",
    "email_shape",
    "id_problems",
    "mobile_reachable",
    "mobile_shape",
    "value_inside",
]

# Top-level domains reserved for tests and documentation (RFC 2606, RFC 6761): fine for a
# development server's tokens, noted because Marketing Cloud may refuse such addresses.
RESERVED_TLDS = frozenset({"invalid", "test", "example", "localhost"})
_E164 = re.compile(r"[1-9][0-9]{7,14}")
_SEPARATORS = re.compile(r"[.+_\-]")


def email_shape(token: str) -> tuple[bool, str | None]:
    """Whether ``token`` is a well-formed email address, and a note (reserved domain) or the problem."""
    local, at, domain = token.rpartition("@")
    if not at or not local or not domain:
        return False, "not an address (local part, @, domain)"
    labels = domain.lower().split(".")
    note = None
    checked = token
    if labels[-1] in RESERVED_TLDS:
        # email-validator refuses special-use names outright; judge the syntax under a stand-in
        # TLD and say that the real one is reserved.
        note = f"reserved domain .{labels[-1]}: fine for development, use a domain you own in production"
        checked = f"{local}@{'.'.join([*labels[:-1], 'com'])}"
    try:
        email_validator.validate_email(
            checked, check_deliverability=False, allow_smtputf8=False, allow_quoted_local=False
        )
    except email_validator.EmailNotValidError as exc:
        return False, f"not a valid address ({_short(str(exc))})"
    return True, note


def _short(message: str) -> str:
    # email-validator's messages describe the rule; keep the first sentence, without quoting input.
    return message.split(". ", maxsplit=1)[0].rstrip(".")


def mobile_shape(token: str) -> tuple[bool, str | None]:
    """Whether ``token`` is E.164-shaped: 8 to 15 digits, no leading 0, no ``+`` or punctuation."""
    if _E164.fullmatch(token):
        return True, None
    if token.startswith("+"):
        return False, "starts with + (Marketing Cloud stores E.164 digits without it)"
    if not token.isdigit():
        return False, "not digits only"
    if token.startswith("0"):
        return False, "starts with 0 (no country code does)"
    return False, f"{len(token)} digits (E.164 allows 8 to 15)"


def mobile_reachable(token: str) -> bool:
    """Whether phonenumbers judges the token a valid, assigned number (it could reach a phone)."""
    try:
        number = phonenumbers.parse("+" + token, None)
    except phonenumbers.NumberParseException:
        return False
    return bool(phonenumbers.is_valid_number(number))


def _base64_cores(data: bytes) -> list[str]:
    """Substrings every base64 (or base64url) encoding of ``data`` contains, whatever its alignment."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + data).decode()
        start = 4 if offset else 0
        core = encoded[start : len(encoded) - 4]
        if len(core) >= 8:
            cores += [core, core.replace("+", "-").replace("/", "_")]
    return cores


def _email_parts(value: str) -> list[str]:
    local = value.rpartition("@")[0].lower()
    parts = [value.lower()]
    if len(local) >= 4:
        parts += [local, local[::-1], local.encode().hex()]
    parts += [p for p in _SEPARATORS.split(local) if len(p) >= 6]
    return parts


def _mobile_parts(value: str) -> list[str]:
    digits = value.lstrip("+")
    parts = [digits, digits[::-1]]
    try:
        national = str(phonenumbers.parse("+" + digits, None).national_number)
    except phonenumbers.NumberParseException:
        national = digits
    if len(national) >= 6:
        parts += [national, national[::-1]]
    if len(digits) >= 7:
        parts.append(digits[-7:])
    return parts


def value_inside(kind: str, value: str, token: str) -> str | None:
    """What part of ``value`` shows in ``token`` (None when nothing does).

    Emails: the address, the local part (also reversed, hex or base64), or a run of six or more
    characters of it. Mobiles: the digits, the national number (also reversed), or the last seven
    digits. A kept country code is allowed (``keep-country`` tokens do that on purpose).
    """
    if not value or not token:
        return None
    lowered = token.lower()
    if kind == "Email":
        for part in _email_parts(value):
            if part in lowered:
                return "the local part" if part != value.lower() else "the address"
        local = value.rpartition("@")[0]
        for core in _base64_cores(local.encode()):
            if core in token:
                return "the local part, base64-encoded"
        return None
    for part in _mobile_parts(value):
        if part in token:
            return "the number's digits"
    return None


def id_problems(sent: Iterable[object], answered: Iterable[object]) -> list[str]:
    """What is wrong with the request ids of an answer: missing, repeated or never sent."""
    wanted = Counter(str(i) for i in sent)
    got = Counter(str(i) for i in answered)
    problems = []
    missing = [i for i in wanted if i not in got]
    repeated = [i for i, n in got.items() if n > 1]
    extra = [i for i in got if i not in wanted]
    if missing:
        problems.append(f"{len(missing)} id(s) missing: {_few(missing)}")
    if repeated:
        problems.append(f"{len(repeated)} id(s) answered more than once: {_few(repeated)}")
    if extra:
        problems.append(f"{len(extra)} id(s) never sent: {_few(extra)}")
    return problems


def _few(items: list[str], limit: int = 5) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
