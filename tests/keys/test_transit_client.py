"""The OpenBao/Vault transit client against a real `bao server` (the session fixture)."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from tests.openbao_server import OpenBaoServer

from sendvault.crypto.transit import TransitClient, ciphertext_version
from sendvault.errors import KeyProviderError, KeyProviderUnavailable


def test_wraps_unwraps_and_rewraps_across_key_versions(openbao: OpenBaoServer) -> None:
    client = openbao.client()
    name = openbao.new_key()
    secret = bytes(range(32))
    first = client.encrypt(name, secret)
    assert ciphertext_version(first) == 1
    assert client.decrypt(name, first) == secret

    openbao.rotate(name)
    assert client.read_key(name).latest_version == 2
    moved = client.rewrap(name, first)
    assert ciphertext_version(moved) == 2
    assert client.decrypt(name, moved) == secret
    # The old version still decrypts until the operator raises min_decryption_version.
    assert client.decrypt(name, first) == secret


def test_a_tampered_ciphertext_is_refused_in_one_line(openbao: OpenBaoServer) -> None:
    client = openbao.client()
    name = openbao.new_key()
    wrapped = client.encrypt(name, b"k" * 32)
    prefix, body = wrapped.rsplit(":", 1)
    raw = bytearray(base64.b64decode(body))
    raw[-1] ^= 1
    with pytest.raises(KeyProviderError) as caught:
        client.decrypt(name, f"{prefix}:{base64.b64encode(bytes(raw)).decode()}")
    assert "\n" not in str(caught.value)
    assert name in str(caught.value)


def test_missing_key_wrong_token_and_unreachable_server_are_told_apart(openbao: OpenBaoServer) -> None:
    with pytest.raises(KeyProviderError, match=r"does not exist|refused"):
        openbao.client().read_key("no-such-key")
    with pytest.raises(KeyProviderError, match="permission denied"):
        openbao.client(token="s.wrong").read_key(openbao.new_key())
    from tests.openbao_server import _free_port

    down = TransitClient(f"https://127.0.0.1:{_free_port()}", "t", ca_file=str(openbao.ca_file), timeout=2)
    with pytest.raises(KeyProviderUnavailable, match="unreachable"):
        down.encrypt("k", b"x")


def test_ed25519_signing_for_audit_heads(openbao: OpenBaoServer) -> None:
    client = openbao.client()
    name = openbao.new_key("ed25519")
    signature = client.sign(name, b"head 42")
    client.verify(name, b"head 42", signature)
    with pytest.raises(KeyProviderError):
        client.verify(name, b"head 43", signature)
    # The public key verifies offline too (what `audit verify` needs without the server).
    key = client.read_key(name)
    public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key.public_keys[1]))
    public.verify(base64.b64decode(signature.split(":", 2)[2]), b"head 42")


def test_the_server_survives_a_restart_with_its_keys(openbao: OpenBaoServer) -> None:
    client = openbao.client()
    name = openbao.new_key()
    wrapped = client.encrypt(name, b"s" * 32)
    openbao.stop()
    try:
        with pytest.raises(KeyProviderUnavailable):
            TransitClient(openbao.url, openbao.root_token, ca_file=str(openbao.ca_file), timeout=2).decrypt(
                name, wrapped
            )
    finally:
        openbao.start()
    assert client.decrypt(name, wrapped) == b"s" * 32
    client.health()
