"""Helpers shared by test modules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(
    home: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `python -m sendvault ARGS` as a script would, with SENDVAULT_HOME set."""
    return subprocess.run(
        [sys.executable, "-m", "sendvault", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**os.environ, "SENDVAULT_HOME": str(home), **(env or {})},
        timeout=120,
        check=False,
    )
