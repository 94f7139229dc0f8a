"""CSV edge cases as golden files: tokenize, then detokenize back to the normalized input."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from sendvault.config import Settings
from sendvault.exchange import CsvInput, RejectsFile, detokenize_file, sniff, tokenize_file
from sendvault.vault import Kind, Vault, parse_kind

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(p.stem for p in GOLDEN.glob("*.json"))


class Collect:
    def __init__(self) -> None:
        self.items: list[tuple[int, str, str]] = []

    def add(self, line: int, column: str, reason: str) -> None:
        self.items.append((line, column, reason))


def _columns(specs: list[str]) -> list[tuple[str, Kind]]:
    return [(name, parse_kind(kind)) for name, _, kind in (s.partition("=") for s in specs)]


@pytest.mark.parametrize("case", CASES)
def test_golden_file_round_trips_to_its_normalized_form(
    case: str, vault: Vault, settings: Settings, tmp_path: Path
) -> None:
    spec = json.loads((GOLDEN / f"{case}.json").read_text())
    source = GOLDEN / f"{case}.csv"
    tokenized, back = tmp_path / "tok.csv", tmp_path / "back.csv"
    rejects = Collect()
    src = CsvInput(str(source))
    summary = tokenize_file(
        vault, settings, src, str(tokenized), columns=_columns(spec["columns"]), rejects=rejects, workers=0
    )
    src.close()
    assert [list(r) for r in rejects.items] == spec["rejects"]
    assert (summary.rows, summary.written, summary.values, summary.empty) == (
        spec["rows"],
        spec["written"],
        spec["values"],
        spec["empty"],
    )
    assert summary.rejected == len({line for line, _, _ in rejects.items})

    src = CsvInput(str(tokenized))
    detokenize_file(vault, settings, src, str(back), columns=spec["detokenize"], rejects=Collect(), workers=0)
    src.close()
    assert back.read_bytes() == (GOLDEN / f"{case}.roundtrip.csv").read_bytes()

    # The tokenized file keeps the input's format, holds tokens where values were, and passes
    # the other columns through unchanged.
    fmt = sniff(source.read_bytes())
    assert sniff(tokenized.read_bytes()) == fmt
    text = tokenized.read_bytes().decode(fmt.encoding)
    rows = list(csv.reader(io.StringIO(text, newline=""), delimiter=fmt.delimiter))
    header = rows[0]
    token_cols = [header.index(name) for name, _ in _columns(spec["columns"])]
    for row in rows[1:]:
        for col in token_cols:
            if row and row[col]:
                assert row[col].endswith("@tokens.sendvault.invalid") or row[col].startswith("999")
    if "distinct_tokens" in spec:
        cells = {row[c] for row in rows[1:] for c in token_cols if row and row[c]}
        assert len(cells) == spec["distinct_tokens"]


def test_the_same_file_again_gives_the_same_tokens(vault: Vault, settings: Settings, tmp_path: Path) -> None:
    source = GOLDEN / "quoted_newlines.csv"
    outputs = []
    for n in range(2):
        src = CsvInput(str(source))
        out = tmp_path / f"out{n}.csv"
        summary = tokenize_file(
            vault, settings, src, str(out), columns=_columns(["Email=Email", "Phone=MobileNumber"]),
            rejects=Collect(), workers=0,
        )  # fmt: skip
        src.close()
        outputs.append(out.read_bytes())
        assert summary.created == (5 if n == 0 else 0)
    assert outputs[0] == outputs[1]


def test_attributes_are_stored_and_dropped_from_the_output(
    vault: Vault, settings: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("Email,FirstName,City,Plan\na@example.com,Ann,Paris,gold\nb@example.com,,Rome,silver\n")
    out = tmp_path / "out.csv"
    src = CsvInput(str(source))
    summary = tokenize_file(
        vault, settings, src, str(out), columns=[("Email", Kind.EMAIL)], attributes=["FirstName", "City"],
        rejects=Collect(), workers=0,
    )  # fmt: skip
    src.close()
    assert summary.attributes == 2
    rows = list(csv.reader(io.StringIO(out.read_text(), newline="")))
    assert rows[0] == ["Email", "Plan"]
    assert vault.get_attributes(rows[1][0]) == {"FirstName": "Ann", "City": "Paris"}
    assert vault.get_attributes(rows[2][0]) == {"City": "Rome"}  # an empty cell sets nothing


def test_rejects_file_holds_line_column_reason_and_never_the_value(tmp_path: Path) -> None:
    sink = RejectsFile(tmp_path / "r.csv")
    sink.add(7, "Email", "invalid-email")
    sink.finish()
    assert (tmp_path / "r.csv").read_text() == "line,column,reason\n7,Email,invalid-email\n"
    empty = RejectsFile(tmp_path / "r.csv")
    empty.finish()  # nothing rejected this time: the stale file of the earlier run goes
    assert not (tmp_path / "r.csv").exists()
