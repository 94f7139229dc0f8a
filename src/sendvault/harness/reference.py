"""The generated parts of docs/harness.md: every check id, and the JSON schema of the reports.

``python -m sendvault.harness.reference`` prints both blocks; a test keeps the document current.
"""

from __future__ import annotations

import json
import sys

import msgspec

from ._model import CheckReport, LoadReport
from .checks import CHECKS
from .load import LOAD_CHECKS

__all__ = ["checks_table", "json_schema"]


def checks_table() -> str:
    """Markdown table of every check id of `harness check` and `harness load`."""
    lines = ["| id | command | passes when |", "|---|---|---|"]
    for registry, command in ((CHECKS, "check"), (LOAD_CHECKS, "load")):
        for check_id, (_, meaning) in registry.items():
            lines.append(f"| `{check_id}` | {command} | {meaning} |")
    return "\n".join(lines) + "\n"


def json_schema() -> str:
    """JSON Schema (2020-12) of what `--json` prints, for both commands."""
    _, components = msgspec.json.schema_components([CheckReport, LoadReport], ref_template="#/$defs/{name}")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "sendvault harness report",
        "oneOf": [{"$ref": "#/$defs/CheckReport"}, {"$ref": "#/$defs/LoadReport"}],
        "$defs": components,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":  # pragma: no cover - documentation generator
    sys.stdout.write(checks_table() + "\n" + json_schema())
