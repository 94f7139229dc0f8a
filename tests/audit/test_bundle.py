"""A bundle's shape: what `audit merge` never writes is broken before any chain is checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from sendvault.audit.bundle import BundleBroken, compose, read_bundle, write_bundle


def _bundle(path: Path, sections: list[tuple[str, str]]) -> Path:
    """A bundle written by hand, with a sound header for ``sections`` (no check of the names)."""
    path.write_text(compose(sections))
    return path


def test_a_bundle_of_no_export_proves_nothing(tmp_path: Path) -> None:
    with pytest.raises(BundleBroken, match="holds no export"):
        read_bundle(_bundle(tmp_path / "empty.jsonl", []))


def test_two_sources_of_one_name_are_refused_as_merge_refuses_them(tmp_path: Path) -> None:
    text = '{"type": "record"}\n'
    with pytest.raises(BundleBroken, match="same name"):
        read_bundle(_bundle(tmp_path / "twice.jsonl", [("a", text), ("a", text)]))
    export = tmp_path / "a.jsonl"
    export.write_text(text)
    with pytest.raises(BundleBroken, match="own name"):
        write_bundle([("a", export), ("a", export)], tmp_path / "merged.jsonl")


def test_a_sound_hand_made_bundle_reads_back(tmp_path: Path) -> None:
    sections = [("a", '{"x": 1}\n'), ("b", '{"y": 2}\n{"z": 3}\n')]
    assert read_bundle(_bundle(tmp_path / "ok.jsonl", sections)) == sections


@pytest.mark.parametrize("name", ["x=y", "file://a", "", "a b", "é", "-a", "a" * 65])
def test_a_source_name_verify_bundle_could_not_address_is_refused_by_merge(tmp_path: Path, name: str) -> None:
    export = tmp_path / "a.jsonl"
    export.write_text('{"type": "record"}\n')
    with pytest.raises(BundleBroken, match="cannot be given to verify-bundle"):
        write_bundle([(name, export)], tmp_path / "merged.jsonl")
    assert not (tmp_path / "merged.jsonl").exists()
    write_bundle([("replica-a.1_x", export)], tmp_path / "merged.jsonl")
