"""Masking clear values in evidence, and keeping evidence short.

Evidence shows what was sent and what came back, so a reader can see why a check failed, but
never a clear value: every value the harness sent is replaced by a masked form wherever it shows
(also inside a token, where a broken server may have put it). Tokens and ids stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["Masker", "clean", "mask_value"]

_MAX_ITEMS = 6
_MAX_KEYS = 12
_MAX_DEPTH = 12
_MAX_TEXT = 400
# Control characters (C0, DEL, C1) and the Unicode marks that reorder or hide text on a
# terminal: a server's text must not move the cursor, set a title or turn text around.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group(0))
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(text: str, limit: int = _MAX_TEXT) -> str:
    """``text`` as a server may not abuse it: control characters made visible, cut to ``limit``."""
    cut = len(text) > limit
    text = _UNSAFE.sub(_visible, text[: limit + 1] if cut else text)
    if cut or len(text) > limit:
        text = text[:limit] + "... (cut)"
    return text


def mask_value(value: str) -> str:
    """``someone@example.com`` -> ``s***@e***.com``; ``447700900123`` -> ``44********23``."""
    if "@" in value:
        local, _, domain = value.rpartition("@")
        head, _, tld = domain.rpartition(".")
        masked_domain = f"{head[:1]}***.{tld}" if head else f"{domain[:1]}***"
        return f"{local[:1]}***@{masked_domain}"
    if len(value) <= 4:
        return "*" * len(value)
    return value[:2] + "*" * (len(value) - 4) + value[-2:]


class Masker:
    """Masks the clear values the harness sent, wherever they appear in evidence."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: dict[str, str] = {}
        self._pattern: re.Pattern[str] | None = None
        self.add(values)

    def add(self, values: Iterable[str]) -> None:
        """Learn more clear values (and their local parts or national digits)."""
        for value in values:
            # Short strings ("12", "abc" of the invalid vectors) are no one's data, and masking
            # them would garble every token that happens to contain them.
            if len(value) < 6:
                continue
            self._values[value.lower()] = mask_value(value)
            if "@" in value:
                local = value.rpartition("@")[0]
                if len(local) >= 4:
                    self._values.setdefault(local.lower(), mask_value(local))
        if self._values:
            # Longest first, so an address is masked whole before its local part is.
            alternatives = sorted(self._values, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(v) for v in alternatives), re.IGNORECASE)

    def text(self, text: str) -> str:
        """``text`` with every known value masked, cut to a readable length, control characters shown."""
        more = len(text) - _MAX_TEXT
        if more > 0:
            # Cut before masking (a server's 30 MB must not go through the pattern), keeping
            # enough that a value across the cut is still masked whole.
            text = text[: _MAX_TEXT + self._longest]
        if self._pattern is not None:
            text = self._pattern.sub(lambda m: self._values[m.group(0).lower()], text)
        text = clean(text, limit=10 * _MAX_TEXT)
        if more > 0 or len(text) > _MAX_TEXT:
            text = text[:_MAX_TEXT] + f"... ({max(more, len(text) - _MAX_TEXT)} more characters)"
        return text

    @property
    def _longest(self) -> int:
        return max(map(len, self._values), default=0)

    def json(self, doc: Any, depth: int = 0) -> Any:
        """A JSON document with values masked, long arrays and objects cut, deep nesting cut."""
        if isinstance(doc, str):
            return self.text(doc)
        if isinstance(doc, (list, dict)) and depth >= _MAX_DEPTH:
            return f"... nested deeper than {_MAX_DEPTH} levels"
        if isinstance(doc, list):
            shown = [self.json(item, depth + 1) for item in doc[:_MAX_ITEMS]]
            if len(doc) > _MAX_ITEMS:
                shown.append(f"... {len(doc) - _MAX_ITEMS} more items")
            return shown
        if isinstance(doc, dict):
            out = {}
            for n, (k, v) in enumerate(doc.items()):
                if n == _MAX_KEYS:
                    out["..."] = f"{len(doc) - _MAX_KEYS} more keys"
                    break
                out[self.text(str(k))] = self.json(v, depth + 1)
            return out
        return doc
