"""Shared fixtures: throwaway settings and vaults in tmp_path."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.openbao_server import OpenBaoServer

from sendvault.config import Settings, load_settings
from sendvault.vault import Vault, open_vault

VECTORS = Path(__file__).parent / "vectors"


PG_ADMIN_URL = os.environ.get("SENDVAULT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _pg_available() -> str | None:
    """None when the test PostgreSQL answers, else why not."""
    try:
        import psycopg

        psycopg.connect(PG_ADMIN_URL, connect_timeout=3).close()
    except Exception as exc:  # noqa: BLE001 - any failure means "not available", reported below
        return f"{type(exc).__name__}"
    return None


def require_pg() -> None:
    """Skip when PostgreSQL is not reachable, unless SENDVAULT_TEST_REQUIRE_PG is set (CI sets it),
    in which case the test fails: a backend must not pass by not running."""
    problem = _pg_available()
    if problem is not None:
        if os.environ.get("SENDVAULT_TEST_REQUIRE_PG"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required but unreachable ({problem})")
        pytest.skip(f"PostgreSQL at {PG_ADMIN_URL} unreachable ({problem})")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL URL whose search_path is a fresh schema, dropped afterwards."""
    require_pg()
    from tests.replicas import pg_schema

    yield from pg_schema(PG_ADMIN_URL)


@pytest.fixture(scope="module")
def pg_module_url() -> Iterator[str]:
    """:func:`pg_url` shared by one test module (for servers started once per module)."""
    require_pg()
    from tests.replicas import pg_schema

    yield from pg_schema(PG_ADMIN_URL)


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


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBaoServer]:
    """A real OpenBao (``bao server``) with transit mounted, shared by the whole session.

    Tests that stop it (outage tests) must start it again before they end; each test makes its
    own transit key with ``openbao.new_key()``.
    """
    server = OpenBaoServer(tmp_path_factory.mktemp("openbao"))
    server.start()
    yield server
    server.stop()
