"""Sealed values fail closed: changed bytes, moved ciphertexts and wrong keys never open."""

from __future__ import annotations

import os

import pytest

from sendvault.crypto import CIPHERTEXT_VERSION, BlindIndex, Keyring
from sendvault.errors import CryptoError


@pytest.fixture
def keyring() -> Keyring:
    return Keyring([(7, os.urandom(32))])


def test_sealed_value_opens_with_its_context(keyring: Keyring) -> None:
    sealed = keyring.seal(b"someone@example.com", b"token-1")
    assert keyring.open(sealed, b"token-1") == b"someone@example.com"


def test_ciphertext_starts_with_version_and_key_id(keyring: Keyring) -> None:
    sealed = keyring.seal(b"x", b"ctx")
    assert sealed[0] == CIPHERTEXT_VERSION
    assert int.from_bytes(sealed[1:5], "big") == 7
    assert Keyring.key_id_of(sealed) == 7


def test_plaintext_does_not_appear_in_ciphertext(keyring: Keyring) -> None:
    assert b"someone" not in keyring.seal(b"someone@example.com", b"ctx")


@pytest.mark.parametrize("position", [0, 1, 4, 5, 16, 17, -1])
def test_any_changed_byte_fails_closed(keyring: Keyring, position: int) -> None:
    sealed = bytearray(keyring.seal(b"someone@example.com", b"token-1"))
    sealed[position] ^= 0x01
    with pytest.raises(CryptoError, match=r"^ciphertext could not be opened$"):
        keyring.open(bytes(sealed), b"token-1")


def test_ciphertext_moved_to_another_context_fails(keyring: Keyring) -> None:
    sealed = keyring.seal(b"someone@example.com", b"token-1")
    with pytest.raises(CryptoError):
        keyring.open(sealed, b"token-2")


def test_wrong_key_fails_closed(keyring: Keyring) -> None:
    sealed = keyring.seal(b"someone@example.com", b"token-1")
    other = Keyring([(7, os.urandom(32))])
    with pytest.raises(CryptoError):
        other.open(sealed, b"token-1")


@pytest.mark.parametrize("blob", [b"", b"\x01", b"\x01\x00\x00\x00\x07" + b"\x00" * 20])
def test_truncated_ciphertext_fails_closed(keyring: Keyring, blob: bytes) -> None:
    with pytest.raises(CryptoError):
        keyring.open(blob, b"ctx")


def test_rotation_seals_with_newest_and_opens_old() -> None:
    old = Keyring([(1, os.urandom(32))])
    sealed_old = old.seal(b"a", b"c")
    new = old.with_key(2, os.urandom(32))
    assert new.current_key_id == 2
    assert Keyring.key_id_of(new.seal(b"b", b"c")) == 2
    assert new.open(sealed_old, b"c") == b"a"


def test_empty_keyring_is_refused() -> None:
    with pytest.raises(CryptoError):
        Keyring([])


def test_blind_index_is_keyed_and_separates_kinds() -> None:
    key = os.urandom(32)
    index = BlindIndex(key)
    assert index.digest(1, "a@example.com") == BlindIndex(key).digest(1, "a@example.com")
    assert index.digest(1, "a@example.com") != index.digest(2, "a@example.com")
    assert index.digest(1, "a@example.com") != BlindIndex(os.urandom(32)).digest(1, "a@example.com")
    assert len(index.digest(1, "x")) == 32


def test_open_many_opens_what_open_opens_and_fails_closed_item_by_item(keyring: Keyring) -> None:
    good = keyring.seal(b"a@example.com", b"t1")
    flipped = bytearray(keyring.seal(b"b@example.com", b"t2"))
    flipped[-1] ^= 1
    foreign = Keyring([(7, os.urandom(32))]).seal(b"c@example.com", b"t3")
    other_key_id = Keyring([(8, os.urandom(32))]).seal(b"d@example.com", b"t4")
    items = [
        (good, b"t1"),
        (bytes(flipped), b"t2"),
        (good, b"t2"),  # moved to another row
        (foreign, b"t3"),
        (other_key_id, b"t4"),
        (good[:20], b"t1"),  # truncated
    ]
    assert keyring.open_many(items) == [b"a@example.com", None, None, None, None, None]
