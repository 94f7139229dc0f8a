"""The golden vectors of the contract (``vectors/contract.json``), with their templates filled."""

from __future__ import annotations

import functools
import json
import random
import re
from importlib import resources
from typing import Any

__all__ = ["contract", "fill"]

_SLOT = re.compile(r"\{(hex|digits:\d+|[^{}]*\|[^{}]*)\}")


@functools.cache
def contract() -> dict[str, Any]:
    """The parsed vectors file (shipped inside the package, so the harness has it installed)."""
    text = (resources.files("sendvault.harness") / "vectors" / "contract.json").read_text()
    doc: dict[str, Any] = json.loads(text)
    return doc


def fill(template: str, rng: random.Random) -> str:
    """A template with each slot filled: ``{hex}``, ``{digits:N}``, ``{a|b|c}``."""

    def one(match: re.Match[str]) -> str:
        slot = match.group(1)
        if slot == "hex":
            return f"{rng.getrandbits(32):08x}"
        if slot.startswith("digits:"):
            width = int(slot.partition(":")[2])
            return str(rng.randrange(10**width)).zfill(width)
        choices: list[str] = slot.split("|")
        return choices[rng.randrange(len(choices))]

    return _SLOT.sub(one, template)
