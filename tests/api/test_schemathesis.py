"""Schemathesis against the OpenAPI document: generated requests never get a 5xx.

The app runs in-process (ASGI) with an authenticated client, so generated bodies reach the
Marketing Cloud handlers rather than stopping at 401.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from sendvault.api import Authenticator, TokenApi, openapi_document, register_client
from sendvault.config import load_settings
from sendvault.vault import open_vault

schema = schemathesis.openapi.from_dict(openapi_document())


@pytest.fixture(scope="module")
def app_and_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TokenApi, str]]:
    home = tmp_path_factory.mktemp("schemathesis") / "home"
    cfg = load_settings(env={"SENDVAULT_HOME": str(home)})
    vault = open_vault(cfg)
    secret = register_client(vault.store, "mc")
    app = TokenApi(vault, Authenticator(vault.store, vault.shared_key("jwt")), cfg)
    yield app, "Basic " + base64.b64encode(f"mc:{secret}".encode()).decode()
    vault.close()


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_errors(case: schemathesis.Case, app_and_auth: tuple[TokenApi, str]) -> None:
    app, auth = app_and_auth
    case.headers = {**(case.headers or {}), "Authorization": auth}
    response = case.call(app=app)
    assert response.status_code < 500, response.text
