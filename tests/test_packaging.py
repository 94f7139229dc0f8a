"""A non-editable install (`pip install .`, a wheel, a Docker image) ships every data file."""

from __future__ import annotations

import fnmatch
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _matches(path: str, glob: str) -> bool:
    """setuptools' package-data glob: ``*`` stays within one directory, as in the shell."""
    parts, pattern = path.split("/"), glob.split("/")
    return len(parts) == len(pattern) and all(
        fnmatch.fnmatchcase(a, b) for a, b in zip(parts, pattern, strict=True)
    )


def test_every_data_file_under_src_is_package_data() -> None:
    # An editable install reads files from the checkout, so a missing glob only shows up once
    # installed for real: a fresh `pip install .` could not create its database (no migrations).
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"][
        "sendvault"
    ]
    package = ROOT / "src" / "sendvault"
    data = [
        p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file() and p.suffix != ".py"
    ]
    data = [p for p in data if "__pycache__" not in p]
    assert data, "no data files found: the test is looking in the wrong place"
    missing = [p for p in data if not any(_matches(p, g) for g in globs)]
    assert not missing, f"add to [tool.setuptools.package-data] in pyproject.toml: {missing}"
