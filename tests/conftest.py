"""Shared fixtures: throwaway settings and vaults in tmp_path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sendvault.config import Settings, load_settings
from sendvault.vault import Vault, open_vault

VECTORS = Path(__file__).parent / "vectors"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose home is a fresh temporary directory."""
    return load_settings(env={"SENDVAULT_HOME": str(tmp_path / "home")})


@pytest.fixture
def vault(settings: Settings) -> Iterator[Vault]:
    """An open vault on a fresh SQLite database."""
    v = open_vault(settings)
    yield v
    v.close()
