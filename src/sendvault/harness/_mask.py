"""Masking clear values in evidence, and keeping evidence short.

Evidence shows what was sent and what came back, so a reader can see why a check failed, but
never a clear value: every value the harness sent is replaced by a masked form wherever it shows
(also inside a token, where a broken server may have put it). Tokens and ids stay as they are.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

__all__ = ["Masker", "mask_value"]

_MAX_ITEMS = 6
_MAX_TEXT = 400


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
        """``text`` with every known value masked, cut to a readable length."""
        if self._pattern is not None:
            text = self._pattern.sub(lambda m: self._values[m.group(0).lower()], text)
        if len(text) > _MAX_TEXT:
            text = text[:_MAX_TEXT] + f"... ({len(text) - _MAX_TEXT} more characters)"
        return text

    def json(self, doc: Any) -> Any:
        """A JSON document with values masked and long arrays cut to their first items."""
        if isinstance(doc, str):
            return self.text(doc)
        if isinstance(doc, list):
            shown = [self.json(item) for item in doc[:_MAX_ITEMS]]
            if len(doc) > _MAX_ITEMS:
                shown.append(f"... {len(doc) - _MAX_ITEMS} more items")
            return shown
        if isinstance(doc, dict):
            return {self.text(str(k)): self.json(v) for k, v in doc.items()}
        return doc
