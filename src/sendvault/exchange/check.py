"""`exchange check`: find clear email addresses and phone numbers in files bound for the platform.

With tokenized sending nothing that leaves the company may hold a clear address or number: not
the email column, not a subscriber key that happens to be an address, not a free-text note. Every
cell of every row is searched; tokens are not findings: email tokens are addresses on the token
domain, and mobile tokens are never *valid* numbers (country code 999, or unassigned ranges of
a real country code), while a phone finding must be a valid one. Findings name the file, line,
column and kind with the value masked, so the report itself leaks nothing worth having.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import unquote

import phonenumbers

from ._csvio import CsvInput

__all__ = ["Finding", "check_file", "column_label", "mask"]

# Broad on purpose: a guard should rather show a false finding than miss an address. Every part
# is bounded (64 characters of local part, 63 per label, 10 labels: more than any deliverable
# address) so the search stays linear: unbounded, a 40 KB cell of letters ending in "@" took 13 s
# and a 1 MiB one hours.
_EMAIL = re.compile(
    r"[^\s@<>()\[\],;:\"']{1,64}@(?:[^\s@<>()\[\],;:\"'.]{1,63}\.){1,10}[^\s@<>()\[\],;:\"'.]{2,63}"
)
# A quoted local part ("ann smith"@example.com) is legal and holds what the plain pattern stops at.
_QUOTED_EMAIL = re.compile(
    r'"[^"\r\n]{1,64}"@(?:[^\s@<>()\[\],;:\"\'.]{1,63}\.){1,10}[^\s@<>()\[\],;:\"\'.]{2,63}'
)
_EXCEL_FLOAT = re.compile(r"([0-9]{7,15})\.0+")
_PHONE_CELL = re.compile(r"\+?[0-9][0-9 ().\-/]{5,24}")
# A number inside other text ("Call +44 7911 123456", "tel:+1...", "Mobile: 4479..."): a run of
# digits and separators that no letter or digit touches on either side (so a run of digits inside
# an email token's hex is never one).
_PHONE_RUN = re.compile(r"(?<![0-9A-Za-z+])\(?\+?\(?[0-9][0-9 ().\-/]{5,24}[0-9](?![0-9A-Za-z@])")
_SUBSCRIBER_KEY = re.compile(r"subscriber.?key|contact.?key", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Finding:
    """A clear value found: where it is and what kind, masked."""

    file: str
    line: int
    column: str
    kind: str
    masked: str

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "file": self.file,
            "line": self.line,
            "column": self.column,
            "kind": self.kind,
            "masked": self.masked,
        }


def mask(kind: str, value: str) -> str:
    """A masked form that helps find the cell without showing the value."""
    if kind == "email" or "@" in value:
        local, _, domain = value.rpartition("@")
        # Only letters and digits are shown: a hostile cell cannot put escape sequences on a terminal.
        tld = re.sub(r"[^A-Za-z0-9]", "", domain.rpartition(".")[2])[:12]
        first = local[:1] if local[:1].isascii() and local[:1].isalnum() else "*"
        return f"{first}***@***.{tld}"
    digits = re.sub(r"[^0-9]", "", value)
    return ("+" if value.strip().startswith("+") else "") + "*" * max(len(digits) - 2, 1) + digits[-2:]


def column_label(name: str, index: int) -> str:
    """How a column is named in messages, reports and rejects: its header, unless the header cell
    itself looks like a clear value (a file whose first line is data, not a header): then
    ``#N``, so the name never carries an address or a number out."""
    text = name.strip()
    if ("@" in text and _EMAIL.search(text)) or sum(c.isdigit() for c in text) >= 7:
        return f"#{index + 1}"
    return text


class _Detector:
    def __init__(self, token_domain: str, mobile_prefix: str, default_region: str | None) -> None:
        self._token_domain = token_domain.lower()
        self._mobile_prefix = mobile_prefix
        self._region = default_region

    def emails(self, cell: str) -> list[str]:
        found = []
        matches = list(_EMAIL.finditer(cell))
        if '"' in cell:
            matches += _QUOTED_EMAIL.finditer(cell)
        for match in matches:
            address = match.group(0).rstrip(".")
            domain = address.rpartition("@")[2].lower()
            if domain == self._token_domain or domain.endswith("." + self._token_domain):
                continue
            found.append(address)
        return found

    def phones(self, cell: str) -> list[str]:
        """Valid numbers in ``cell``: the whole cell, else each number-shaped run inside it."""
        text = cell.strip()
        if _PHONE_CELL.fullmatch(text) or _EXCEL_FLOAT.fullmatch(text):
            return [text] if self.phone(text) else []
        if not any(c.isdigit() for c in text):
            return []
        return [m.group(0) for m in _PHONE_RUN.finditer(text) if self.phone(m.group(0))]

    def phone(self, cell: str) -> bool:
        text = cell.strip()
        excel = _EXCEL_FLOAT.fullmatch(text)
        if excel:
            text = excel.group(1)  # a number a spreadsheet saved as 447911123456.0
        if text.startswith("00") and not text.startswith("000"):
            text = "+" + text[2:]  # the international prefix most countries dial
        if text.startswith("(+"):
            text = "+" + text[2:].replace(")", " ", 1)  # "(+44) 7911-123456"
        if not _PHONE_CELL.fullmatch(text):
            return False
        digits = re.sub(r"[^0-9]", "", text)
        if not 7 <= len(digits) <= 15:
            return False  # longer than any E.164 number
        if digits.startswith("999") and (text.startswith("+") or digits == text):
            return False  # country code 999 is not assigned: a default-style mobile token, cheaply
        try:
            if text.startswith("+"):
                number = phonenumbers.parse(text, None)
            elif digits == text and not text.startswith("0"):
                # Marketing Cloud's own form: E.164 digits without the plus.
                number = phonenumbers.parse("+" + digits, None)
            elif self._region is not None:
                number = phonenumbers.parse(text, self._region)
            else:
                return False
        except phonenumbers.NumberParseException:
            return False
        return bool(phonenumbers.is_valid_number(number))


def check_file(
    path: str,
    *,
    token_domain: str,
    mobile_prefix: str = "999",
    default_region: str | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> Iterator[Finding]:
    """Every clear email address and phone number in the CSV file at ``path`` (header included)."""
    detector = _Detector(token_domain, mobile_prefix, default_region)
    src = CsvInput(path, encoding=encoding, delimiter=delimiter)
    try:
        header = src.header
        yield from _row(detector, path, 1, header, ["(header)"] * len(header))
        for line, fields in src.rows():
            yield from _row(detector, path, line, fields, header)
    finally:
        src.close()


def _row(
    detector: _Detector, path: str, line: int, fields: list[str], header: list[str]
) -> Iterator[Finding]:
    for index, cell in enumerate(fields):
        if not cell:
            continue
        column = column_label(header[index], index) if index < len(header) else f"#{index + 1}"
        emails: dict[str, str] = {}
        phones: dict[str, str] = {}
        for text in _decoded(cell):
            if "@" in text:
                for address in detector.emails(text):
                    emails.setdefault(address.lower(), address)
            for number in detector.phones(text):
                phones.setdefault(re.sub(r"[^0-9]", "", number), number)
        for address in emails.values():
            kind = "email-in-subscriber-key" if _SUBSCRIBER_KEY.search(column) else "email"
            yield Finding(path, line, column, kind, mask("email", address))
        for number in phones.values():
            kind = "phone-in-subscriber-key" if _SUBSCRIBER_KEY.search(column) else "phone"
            yield Finding(path, line, column, kind, mask("phone", number))


def _decoded(cell: str) -> list[str]:
    """The cell, and what it says once URL-decoded (even twice over) and HTML-unescaped.

    ``ann%40example.com`` in a tracking link, ``%2B44...`` in a query string and ``ann&#64;...``
    in an HTML snippet are as clear as the plain forms.
    """
    out = [cell]
    text = cell
    for _ in range(3):
        if "%" not in text:
            break
        decoded = unquote(text)
        if decoded == text:
            break
        out.append(decoded)
        text = decoded
    if "&" in text:
        unescaped = html.unescape(text)
        if unescaped != text:
            out.append(unescaped)
    return out
