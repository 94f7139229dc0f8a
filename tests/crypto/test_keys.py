"""The local key-encryption key: created safely, refused when unsafe, wrong keys detected."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from sendvault.config import load_settings
from sendvault.crypto import LocalKeyProvider, load_local_kek
from sendvault.errors import ConfigError, KeyProviderError
from sendvault.vault import open_vault


def test_key_file_is_created_with_mode_0600(tmp_path: Path) -> None:
    kek = load_local_kek(tmp_path, None)
    path = tmp_path / "keys" / "master.key"
    assert len(kek) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_local_kek(tmp_path, None) == kek


def test_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    load_local_kek(tmp_path, None)
    path = tmp_path / "keys" / "master.key"
    path.chmod(0o644)
    with pytest.raises(KeyProviderError, match="chmod 600"):
        load_local_kek(tmp_path, None)


def test_master_key_from_environment_is_used(tmp_path: Path) -> None:
    key = os.urandom(32)
    assert load_local_kek(tmp_path, base64.b64encode(key).decode()) == key
    assert not (tmp_path / "keys").exists()


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"short").decode()])
def test_bad_master_key_names_the_setting_not_the_value(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_local_kek(tmp_path, text)
    assert info.value.setting == "master_key"
    assert text not in str(info.value)


def test_wrapped_key_does_not_open_under_another_kek() -> None:
    wrapped = LocalKeyProvider(os.urandom(32)).wrap("data", 2, os.urandom(32))
    with pytest.raises(KeyProviderError, match="wrong master key"):
        LocalKeyProvider(os.urandom(32)).unwrap("data", 2, wrapped)


def test_wrapped_key_is_bound_to_its_id() -> None:
    provider = LocalKeyProvider(os.urandom(32))
    wrapped = provider.wrap("data", 2, os.urandom(32))
    with pytest.raises(KeyProviderError):
        provider.unwrap("data", 3, wrapped)


def test_vault_with_wrong_master_key_refuses_to_open(tmp_path: Path) -> None:
    home = str(tmp_path / "home")
    first = base64.b64encode(os.urandom(32)).decode()
    open_vault(load_settings(env={"SENDVAULT_HOME": home, "SENDVAULT_MASTER_KEY": first})).close()
    other = base64.b64encode(os.urandom(32)).decode()
    with pytest.raises(KeyProviderError):
        open_vault(load_settings(env={"SENDVAULT_HOME": home, "SENDVAULT_MASTER_KEY": other}))
