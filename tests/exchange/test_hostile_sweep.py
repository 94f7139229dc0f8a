"""`exchange sweep` never deletes outside the folders it was given (hostile round).

Real files in real folders: a sweep folder that is a symbolic link (to an outside folder, as
``inbox -> /`` would be), a folder named through ``..``, the root, links inside the folder, and a
subfolder swapped for a link while the sweep runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import run_cli

from sendvault.exchange import SweepRefused
from sendvault.exchange.retention import DAY, check_sweep_folder, sweep_local

NOW = 1_900_000_000.0


def _old(path: Path, text: str = "x", days: float = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    os.utime(path, (NOW - days * DAY, NOW - days * DAY))
    return path


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder the sweep must never touch, full of old files."""
    folder = tmp_path / "precious"
    _old(folder / "keep.csv")
    _old(folder / "deep" / "keep2.csv")
    return folder


def _untouched(outside: Path) -> bool:
    return (outside / "keep.csv").exists() and (outside / "deep" / "keep2.csv").exists()


def test_a_sweep_folder_that_is_a_link_is_refused(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "inbox"
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(SweepRefused, match="symbolic link"):
        sweep_local([link], days=10, now=NOW, dry_run=False)
    assert _untouched(outside)


def test_nothing_is_deleted_when_any_folder_is_refused(tmp_path: Path, outside: Path) -> None:
    real = tmp_path / "outbox"
    old = _old(real / "old.csv")
    link = tmp_path / "inbox"
    link.symlink_to(outside, target_is_directory=True)
    with pytest.raises(SweepRefused):
        sweep_local([real, link], days=10, now=NOW, dry_run=False)
    assert old.exists()
    assert _untouched(outside)


def test_dot_dot_and_the_root_are_refused(tmp_path: Path, outside: Path) -> None:
    (tmp_path / "inbox").mkdir()
    with pytest.raises(SweepRefused, match=r"'\.\.'"):
        sweep_local([tmp_path / "inbox" / ".." / "precious"], days=10, now=NOW, dry_run=False)
    assert _untouched(outside)
    with pytest.raises(SweepRefused, match="root"):
        check_sweep_folder(Path("/"))


def test_links_inside_the_folder_are_left_alone(tmp_path: Path, outside: Path) -> None:
    folder = tmp_path / "inbox"
    gone = _old(folder / "old.csv")
    (folder / "to-dir").symlink_to(outside, target_is_directory=True)
    (folder / "to-file.csv").symlink_to(outside / "keep.csv")
    os.utime(folder / "to-file.csv", (NOW - 30 * DAY, NOW - 30 * DAY), follow_symlinks=False)
    deleted = sweep_local([folder], days=10, now=NOW, dry_run=False)
    assert [d.path for d in deleted] == [str(gone)]
    assert (folder / "to-file.csv").is_symlink()
    assert _untouched(outside)


def test_a_subfolder_swapped_for_a_link_mid_sweep_cannot_lead_it_outside(
    tmp_path: Path, outside: Path
) -> None:
    folder = tmp_path / "inbox"
    _old(folder / "b" / "1.csv")
    _old(folder / "b" / "keep.csv")  # same name as the outside file
    swapped: list[str] = []

    def swap(meta: dict[str, Any]) -> None:
        # After the first deletion in b/, an attacker replaces b/ by a link to the outside folder.
        if not swapped:
            (folder / "b").rename(folder / "b.orig")
            (folder / "b").symlink_to(outside, target_is_directory=True)
            swapped.append(meta["path"])

    sweep_local([folder], days=10, now=NOW, dry_run=False, record=swap)
    assert swapped
    assert _untouched(outside)
    assert not any((folder / "b.orig").iterdir())  # both deleted where they really were


def test_cli_refuses_a_linked_folder_in_one_line(tmp_path: Path, outside: Path) -> None:
    link = tmp_path / "inbox"
    link.symlink_to(outside, target_is_directory=True)
    done = run_cli(tmp_path / "home", "exchange", "sweep", "--dir", str(link), "--days", "1")
    assert done.returncode == 2
    assert done.stderr.startswith("error: ")
    assert "symbolic link" in done.stderr
    assert "Traceback" not in done.stderr
    assert _untouched(outside)
