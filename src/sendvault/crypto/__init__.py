"""The safe cryptographic layer: sealed values, the keyring, the blind index, KEK providers.

Raw primitives live in private modules; nothing outside this package touches them.
"""

from .keyring import CIPHERTEXT_VERSION, BlindIndex, Keyring
from .keys import KeyProvider, LocalKeyProvider, load_local_kek

__all__ = ["CIPHERTEXT_VERSION", "BlindIndex", "KeyProvider", "Keyring", "LocalKeyProvider", "load_local_kek"]
