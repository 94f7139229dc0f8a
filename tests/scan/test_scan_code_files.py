"""`scan code`: which files are scanned (.gitignore with and without git), and empty trees."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sendvault.scan.code import scan_code

GIT = shutil.which("git")


def test_gitignore_is_honoured_outside_a_git_work_tree(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("ignored/\n*.local.yaml\n!keep.local.yaml\n")
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "x.yaml").write_text("x: http://ign.acme-corp.io\n")
    (tmp_path / "dev.local.yaml").write_text("x: http://dev.acme-corp.io\n")
    (tmp_path / "keep.local.yaml").write_text("x: http://keep.acme-corp.io\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".gitignore").write_text("/gen.json\n")
    (tmp_path / "sub" / "gen.json").write_text('{"u": "http://gen.acme-corp.io"}')
    (tmp_path / "sub" / "app.json").write_text('{"u": "http://app.acme-corp.io"}')
    found = sorted(f.detail for f in scan_code(str(tmp_path)).findings)
    assert found == ["keep.local.yaml:1 http://keep.acme-corp.io", "sub/app.json:1 http://app.acme-corp.io"]


PATTERNS = [
    "*.log", "foo", "foo/", "/foo", "a/*", "a/**", "**/b", "a/**/z.py", "!y.txt", "!*.log", "b/", "*",
    "!a/", "[xy].*", "[!x]*.txt", "?.py", "\\#h", "\\!n", "a/b", "/a/b/", "**", "foo/**/", "*.txt ",
    "# comment", "b/**/*.log", "**/foo/y.txt", "[a-c]", "a*", "!b", "x.log/", "", "foo/*/",
]  # fmt: skip
NAMES = ["a", "b", "foo", "x.log", "y.txt", "z.py", "[x]", "!n", "#h", "sp ace"]


def _random_tree(root: Path, rng: random.Random) -> None:
    for _ in range(25):
        parts = [rng.choice(NAMES[:4]) for _ in range(rng.randint(0, 3))] + [rng.choice(NAMES)]
        path = root.joinpath(*parts)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text("x: 1\n")
        except (FileExistsError, NotADirectoryError):
            continue  # a name already taken by a file (or a directory)
    directories = [root, *(d for d in root.rglob("*") if d.is_dir())]
    for directory in rng.sample(directories, min(len(directories), 3)):
        (directory / ".gitignore").write_text("\n".join(rng.sample(PATTERNS, 4)) + "\n")


@pytest.mark.skipif(GIT is None, reason="needs git to compare with")
def test_gitignore_matcher_agrees_with_git(tmp_path: Path) -> None:
    from sendvault.scan import code

    rng = random.Random(6)  # a fixed seed: the same trees on every run
    # Only the tree's own .gitignore files: no global or system excludes.
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
    for trial in range(60):
        root = tmp_path / str(trial)
        root.mkdir()
        _random_tree(root, rng)
        ours = sorted(p.relative_to(root).as_posix() for p in code._walk(root))
        subprocess.run([GIT, "init", "-q", str(root)], check=True, env=env)
        listing = subprocess.run(
            [GIT, "-C", str(root), "ls-files", "--others", "--exclude-standard", "-z"],
            capture_output=True, check=True, env=env,
        )  # fmt: skip
        theirs = sorted(p for p in listing.stdout.decode().split("\0") if p)
        assert ours == theirs, [g.read_text() for g in root.rglob(".gitignore")]


def test_the_matcher_is_used_when_git_is_not_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    (tmp_path / ".gitignore").write_text("secret.yaml\n")
    (tmp_path / "secret.yaml").write_text("x: http://ign.acme-corp.io\n")
    (tmp_path / "app.yaml").write_text("x: http://app.acme-corp.io\n")
    assert [f.detail for f in scan_code(str(tmp_path)).findings] == ["app.yaml:1 http://app.acme-corp.io"]


def test_an_empty_directory_is_unknown(tmp_path: Path) -> None:
    result = scan_code(str(tmp_path))
    assert result.unknown
    assert result.passed == 0


def test_a_tree_with_nothing_to_scan_exits_2(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("http://readme.acme-corp.io\n")
    run = subprocess.run(
        [sys.executable, "-m", "sendvault", "scan", "code", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=False, env=os.environ.copy(),
    )  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr


def test_a_named_file_is_scanned_whatever_its_suffix(tmp_path: Path) -> None:
    settings = tmp_path / "settings.local"
    settings.write_text("hook = http://hook.acme-corp.io/x\n")
    [finding] = scan_code(str(settings)).findings
    assert (finding.file, finding.line) == (str(settings), 1)
