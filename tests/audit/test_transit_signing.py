"""Audit heads signed by an ed25519 key in OpenBao transit: end to end against a real `bao server`.

sendvault never holds the private key: no signing key file is made, heads verify under the
transit key's public key, an OpenBao outage stops the log (503) instead of leaving answers
unrecorded, and a rotation adds a transit version that verifies alongside the old one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tests.api.conftest import ApiEnv
from tests.audit.conftest import fill
from tests.helpers import run_cli
from tests.openbao_server import OpenBaoServer

from sendvault.api import Authenticator, TokenApi, register_client
from sendvault.audit import (
    AuditLog,
    Event,
    audit_key_status,
    open_audit,
    rotate_audit_keys,
    signing_key_warning,
)
from sendvault.audit.keys import TransitSigner, public_pem, transit_client
from sendvault.config import Settings, load_settings
from sendvault.errors import AuditUnavailable, ConfigError
from sendvault.vault import open_vault


def _env(openbao: OpenBaoServer, key: str, home: Path) -> dict[str, str]:
    return {
        "SENDVAULT_HOME": str(home),
        "SENDVAULT_AUDIT_SIGNER": "transit",
        "SENDVAULT_AUDIT_TRANSIT_URL": openbao.url,
        "SENDVAULT_AUDIT_TRANSIT_KEY": key,
        "SENDVAULT_AUDIT_TRANSIT_TOKEN": openbao.root_token,
        "SENDVAULT_AUDIT_TRANSIT_CA_FILE": str(openbao.ca_file),
    }


def _trusted(settings: Settings, out: Path) -> Path:
    """Every version's public key, read from OpenBao (as an operator would, once, off the host)."""
    signer = TransitSigner(transit_client(settings), settings.audit_transit_key or "")
    out.write_text("".join(public_pem(k) for _, k in sorted(signer.versions.items())))
    return out


@pytest.fixture
def transit_home(openbao: OpenBaoServer, tmp_path: Path) -> tuple[dict[str, str], Settings]:
    env = _env(openbao, openbao.new_key("ed25519", prefix="audit"), tmp_path / "home")
    return env, load_settings(env=env)


def test_heads_are_signed_in_openbao_and_no_signing_key_is_on_the_host(
    transit_home: tuple[dict[str, str], Settings], tmp_path: Path
) -> None:
    env, settings = transit_home
    log = open_audit(settings)
    fill(log, 5)
    log.close()
    keys = settings.home_path / "keys"
    assert not (keys / "audit-signing.key").exists()
    assert not (keys / "audit-signing.pub").exists()
    assert signing_key_warning(settings) is None
    trusted = _trusted(settings, tmp_path / "trusted.pub")
    ok = run_cli(settings.home_path, "audit", "verify", "--public-key", str(trusted), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "intact: records 1..5" in ok.stdout
    (signing,) = [k for k in audit_key_status(settings) if k.role == "signing"]
    assert (signing.provider, signing.state) == ("transit", "current")
    assert signing.where.endswith(" v1")


def test_an_openbao_outage_stops_the_log_and_it_resumes_when_openbao_is_back(
    openbao: OpenBaoServer, transit_home: tuple[dict[str, str], Settings], tmp_path: Path
) -> None:
    env, settings = transit_home
    log = open_audit(settings)
    fill(log, 2)
    openbao.stop()
    try:
        # The API's records do not wait: the first is queued, its write fails, and from then on
        # every record is refused (the API answers 503) until a write succeeds again.
        log.record(Event.API_REQUEST, actor="mc", route="/v1/x", status=200)
        _refused_within(log, 15)
        with pytest.raises(AuditUnavailable):
            log.record_sync(Event.KEY_ROTATE, actor="cli:test", timeout=15)
    finally:
        openbao.start()
    _accepting_within(log, 30)
    fill(log, 1, start=10)
    log.close()
    trusted = _trusted(settings, tmp_path / "trusted.pub")
    ok = run_cli(settings.home_path, "audit", "verify", "--public-key", str(trusted), env=env)
    assert ok.returncode == 0, ok.stderr
    # The queued record of the outage was written once OpenBao was back: 2 + 1 + 1.
    assert "intact: records 1..4" in ok.stdout


def test_a_transit_rotation_adds_a_version_and_old_heads_still_verify(
    transit_home: tuple[dict[str, str], Settings], tmp_path: Path
) -> None:
    env, settings = transit_home
    log = open_audit(settings)
    fill(log, 3)
    log.close()
    rotation = rotate_audit_keys(settings, sealing=False)
    assert rotation.signing is not None
    assert not rotation.pending
    log = open_audit(settings)
    fill(log, 2, start=5)
    log.close()
    states = {k.where.rsplit(" ", 1)[1]: k.state for k in audit_key_status(settings) if k.role == "signing"}
    assert states == {"v1": "retired", "v2": "current"}
    trusted = _trusted(settings, tmp_path / "trusted.pub")
    ok = run_cli(settings.home_path, "audit", "verify", "--public-key", str(trusted), env=env)
    assert ok.returncode == 0, ok.stderr


def test_a_transit_key_that_cannot_sign_ed25519_is_refused(openbao: OpenBaoServer, tmp_path: Path) -> None:
    settings = load_settings(env=_env(openbao, openbao.new_key("aes256-gcm96"), tmp_path / "home"))
    with pytest.raises(ConfigError, match="ed25519"):
        open_audit(settings)


def test_a_transit_key_the_trusted_file_does_not_hold_is_refused(
    transit_home: tuple[dict[str, str], Settings], tmp_path: Path
) -> None:
    env, _ = transit_home
    other = tmp_path / "other.pub"
    other.write_text(public_pem(Ed25519PrivateKey.generate().public_key()))
    settings = load_settings(env={**env, "SENDVAULT_AUDIT_PUBLIC_KEY": str(other)})
    with pytest.raises(AuditUnavailable, match="trusted"):
        open_audit(settings)


def _refused_within(log: AuditLog, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            log.check()
        except AuditUnavailable:
            return
        time.sleep(0.05)
    raise AssertionError("the log kept accepting records while OpenBao was down")


def _accepting_within(log: AuditLog, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            log.check()
        except AuditUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        else:
            return


def test_the_api_answers_503_while_openbao_cannot_sign_and_200_when_it_can(
    openbao: OpenBaoServer, transit_home: tuple[dict[str, str], Settings]
) -> None:
    _, settings = transit_home
    vault = open_vault(settings)
    log = open_audit(settings)
    log._retry_seconds = 0.2
    api = ApiEnv(TokenApi(vault, Authenticator(vault.store, vault.shared_key("jwt")), settings, audit=log))
    api.secrets["mc"] = register_client(vault.store, "mc")
    try:
        assert api.call("POST", "/v1/mc/resolve", {"tokens": []}, api.basic("mc")).status == 200
        openbao.stop()
        try:
            # The call whose record cannot be signed is answered; from then on every call is 503.
            api.call("POST", "/v1/mc/resolve", {"tokens": []}, api.basic("mc"))
            _refused_within(log, 15)
            refused = api.call("POST", "/v1/mc/resolve", {"tokens": []}, api.basic("mc"))
            assert refused.status == 503
            assert refused.json()["reason"] == "audit log unavailable"
        finally:
            openbao.start()
        _accepting_within(log, 30)
        assert api.call("POST", "/v1/mc/resolve", {"tokens": []}, api.basic("mc")).status == 200
    finally:
        log.close()
        vault.close()
