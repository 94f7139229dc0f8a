"""docs/harness.md lists every check id and the report schema as the code has them."""

from __future__ import annotations

import re
from pathlib import Path

from sendvault.harness.reference import checks_table, json_schema

DOC = Path(__file__).parents[2] / "docs" / "harness.md"


def _block(name: str) -> str:
    text = DOC.read_text()
    match = re.search(
        rf"<!-- BEGIN GENERATED: {name} [^>]*-->\n(.*?)<!-- END GENERATED: {name} -->", text, re.S
    )
    assert match, f"docs/harness.md lacks the generated {name} block"
    return match.group(1)


def test_the_check_ids_in_the_docs_are_current() -> None:
    assert _block("checks") == checks_table(), "regenerate: python -m sendvault.harness.reference"


def test_the_json_schema_in_the_docs_is_current() -> None:
    assert _block("schema") == "```json\n" + json_schema() + "```\n"
