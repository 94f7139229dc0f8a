"""Audit key rotation and status (the hooks `sendvault keys rotate audit` / `keys status` call).

Against real logs on disk: after a rotation old records still verify (their signatures are
under the retired key, which stays in the ring) and still open (the retired sealing key stays),
a running writer follows the rotation, and a log that does not match its head is not rotated.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.audit.conftest import fill
from tests.audit.tamper import rechain, sign_head
from tests.helpers import run_cli

from sendvault.audit import (
    AuditKeyInfo,
    Event,
    audit_key_status,
    audit_sealer,
    open_audit,
    open_audit_reader,
    rotate_audit_keys,
    trusted_public_key,
    verify_store,
)
from sendvault.config import Settings, load_settings
from sendvault.errors import AuditTampered, ConfigError


def _home(tmp_path: Path, **env: str) -> Settings:
    return load_settings(env={"SENDVAULT_HOME": str(tmp_path / "home"), **env})


def _current(status: list[AuditKeyInfo], role: str) -> AuditKeyInfo:
    (info,) = [k for k in status if k.role == role and k.state == "current"]
    return info


def _records(settings: Settings, event: str) -> list[dict[str, object]]:
    store = open_audit_reader(settings)
    with store.snapshot() as conn:
        rows = [json.loads(r.body) for r in store.records(conn) if r.event == event]
    store.close()
    return rows


def test_status_of_a_fresh_home_lists_nothing_and_creates_nothing(tmp_path: Path) -> None:
    settings = _home(tmp_path)
    assert audit_key_status(settings) == []
    assert not (tmp_path / "home").exists()


def test_status_names_the_local_keys_with_ids_ages_and_providers(tmp_path: Path) -> None:
    settings = _home(tmp_path)
    log = open_audit(settings)
    fill(log, 2)
    log.close()
    status = audit_key_status(settings)
    assert {(k.role, k.state, k.provider) for k in status} == {
        ("signing", "current", "local"),
        ("sealing", "current", "local"),
    }
    for info in status:
        assert re.fullmatch(r"[0-9a-f]{16}", info.key_id)
        assert info.age_days is not None
        assert 0 <= info.age_days < 1
        assert info.created is not None
    key_bytes = (settings.home_path / "keys" / "audit.key").read_text().strip()
    assert all(key_bytes not in repr(k) for k in status)  # ids, never key material


def test_a_rotation_keeps_old_records_verifiable_and_readable(tmp_path: Path) -> None:
    settings = _home(tmp_path)
    log = open_audit(settings)
    fill(log, 4)
    log.close()
    old_pub = (settings.home_path / "keys" / "audit-signing.pub").read_text()
    before = audit_key_status(settings)
    rotation = rotate_audit_keys(settings, actor="cli:test")
    assert not rotation.pending
    assert rotation.signing is not None
    assert rotation.sealing is not None
    assert rotation.signing[0] == _current(before, "signing").key_id
    assert rotation.sealing[0] == _current(before, "sealing").key_id
    after = audit_key_status(settings)
    assert _current(after, "signing").key_id == rotation.signing[1]
    assert _current(after, "sealing").key_id == rotation.sealing[1]
    assert {(k.role, k.key_id) for k in after if k.state == "retired"} == {
        ("signing", rotation.signing[0]),
        ("sealing", rotation.sealing[0]),
    }
    # The rotation is itself a record, with the ids only.
    (rotated,) = _records(settings, Event.AUDIT_KEYS_ROTATE.value)
    assert rotated["meta"] == {
        "signing": {"from": rotation.signing[0], "to": rotation.signing[1], "provider": "local"},
        "sealing": {"from": rotation.sealing[0], "to": rotation.sealing[1]},
    }
    # Records written after the rotation are signed with the new key and sealed with the new one.
    log = open_audit(settings)
    fill(log, 2, start=10)
    log.close()
    new_pub = (settings.home_path / "keys" / "audit-signing.pub").read_text()
    assert new_pub == rotation.public_key_pem != old_pub
    both = tmp_path / "trusted.pub"
    both.write_text(old_pub + new_pub)
    ok = run_cli(settings.home_path, "audit", "verify", "--public-key", str(both))
    assert ok.returncode == 0, ok.stderr
    # The old key alone cannot vouch for the heads signed since, nor the new one for those before.
    for only in (old_pub, new_pub):
        single = tmp_path / "single.pub"
        single.write_text(only)
        assert run_cli(settings.home_path, "audit", "verify", "--public-key", str(single)).returncode == 1
    # A record sealed under the old key still opens and is still found by its value.
    shown = run_cli(
        settings.home_path, "audit", "search", "--value", "user1@example.com", "--reveal", "--json"
    )
    assert shown.returncode == 0, shown.stderr
    assert "user1@example.com" in shown.stdout
    found = run_cli(settings.home_path, "audit", "search", "--value", "user11@example.com", "--json")
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout), found.stderr
    assert audit_sealer(settings).fingerprints("x")[0] == audit_sealer(settings).fingerprint("x")
    # The old private key is gone: only its public half is kept.
    retired = settings.home_path / "keys" / "audit-retired"
    assert sorted(p.name for p in retired.iterdir()) == [
        f"sealing-{rotation.sealing[0]}.key",
        f"signing-{rotation.signing[0]}.pub",
    ]
    assert "PRIVATE" not in (retired / f"signing-{rotation.signing[0]}.pub").read_text()


def test_a_running_writer_follows_a_rotation_made_by_another_process(tmp_path: Path) -> None:
    settings = _home(tmp_path)
    running = open_audit(settings)
    fill(running, 3)
    rotation = rotate_audit_keys(settings, sealing=False)
    assert rotation.signing is not None
    assert rotation.sealing is None
    fill(running, 3, start=20)
    running.check()  # still accepting: it read the keys again instead of stopping
    new = trusted_public_key(settings, settings.home_path / "keys" / "audit-signing.pub")
    assert running.store.signer_public_key() in new
    running.close()
    store = open_audit_reader(
        settings, trusted_public_key(settings, _ring_file(tmp_path, settings, rotation))
    )
    assert verify_store(store).last == 3 + 1 + 3
    store.close()


def _ring_file(tmp_path: Path, settings: Settings, rotation: object) -> Path:
    keys = settings.home_path / "keys"
    ring = tmp_path / "ring.pub"
    ring.write_text(
        (keys / "audit-signing.pub").read_text()
        + "".join(p.read_text() for p in sorted((keys / "audit-retired").glob("signing-*.pub")))
    )
    return ring


def test_with_a_configured_trusted_key_a_new_key_waits_until_it_is_trusted(tmp_path: Path) -> None:
    settings = _home(tmp_path)
    log = open_audit(settings)
    fill(log, 2)
    log.close()
    trusted = tmp_path / "trusted.pub"
    trusted.write_text((settings.home_path / "keys" / "audit-signing.pub").read_text())
    configured = _home(tmp_path, SENDVAULT_AUDIT_PUBLIC_KEY=str(trusted))
    first = rotate_audit_keys(configured, sealing=False)
    assert first.pending
    assert first.signing is None
    assert first.seq is None
    assert first.public_key_pem is not None
    assert [k.state for k in audit_key_status(configured) if k.role == "signing"] == ["current", "pending"]
    # Not trusted yet: the writers keep the old key, and a second try prepares nothing new.
    assert rotate_audit_keys(configured, sealing=False).public_key_pem == first.public_key_pem
    trusted.write_text(trusted.read_text() + first.public_key_pem)
    second = rotate_audit_keys(configured, sealing=False)
    assert not second.pending
    assert second.signing is not None
    assert (configured.home_path / "keys" / "audit-signing.pub").read_text() == first.public_key_pem
    log = open_audit(configured)
    fill(log, 2, start=5)
    log.close()
    ok = run_cli(configured.home_path, "audit", "verify", env={"SENDVAULT_AUDIT_PUBLIC_KEY": str(trusted)})
    assert ok.returncode == 0, ok.stderr


def test_a_log_that_does_not_match_its_head_is_not_rotated(tmp_path: Path) -> None:
    settings = _home(tmp_path)
    log = open_audit(settings)
    fill(log, 3)
    log.close()
    rechain(settings.home_path / "audit.db", 2, b'"source":"192.0.2.1"', b'"source":"203.0.113.9"')
    keys = settings.home_path / "keys"
    before = {p.name: p.read_bytes() for p in keys.iterdir() if p.is_file()}
    with pytest.raises(AuditTampered):
        rotate_audit_keys(settings)
    assert {p.name: p.read_bytes() for p in keys.iterdir() if p.is_file()} == before
    assert not (keys / "audit-retired").exists()


def test_a_sealing_key_from_configuration_is_rotated_there(tmp_path: Path) -> None:
    settings = _home(tmp_path, SENDVAULT_AUDIT_KEY="a2V5LWtleS1rZXkta2V5LWtleS1rZXkta2V5LWtleTA=")
    log = open_audit(settings)
    fill(log, 1)
    log.close()
    with pytest.raises(ConfigError, match="audit_key"):
        rotate_audit_keys(settings)
    assert rotate_audit_keys(settings, sealing=False).signing is not None
    (sealing,) = [k for k in audit_key_status(settings) if k.role == "sealing"]
    assert (sealing.provider, sealing.state, sealing.created) == ("config", "current", None)


def test_a_swapped_key_pair_under_a_running_writer_is_an_integrity_alarm(tmp_path: Path) -> None:
    settings = _home(tmp_path)
    log = open_audit(settings)
    fill(log, 2)
    log.close()
    trusted = tmp_path / "trusted.pub"
    trusted.write_text((settings.home_path / "keys" / "audit-signing.pub").read_text())
    configured = _home(tmp_path, SENDVAULT_AUDIT_PUBLIC_KEY=str(trusted))
    running = open_audit(configured)
    fill(running, 1, start=5)
    # The insider swaps in a key pair of their own and signs the head with it.
    mine = Ed25519PrivateKey.generate()
    (configured.home_path / "keys" / "audit-signing.key").write_bytes(
        mine.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    sign_head(configured.home_path / "audit.db", mine)
    with pytest.raises(AuditTampered, match="does not verify"):
        running.store.append([])
    running.close()
