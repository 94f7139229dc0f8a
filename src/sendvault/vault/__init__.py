"""Normalization, token formats and the Vault service (tokenize_many / resolve_many / erase)."""

from .factory import open_store, open_vault
from .formats import TokenFormat
from .normalize import Kind, Normalizer, parse_kind
from .service import Resolved, Tokenized, Vault

__all__ = [
    "Kind",
    "Normalizer",
    "Resolved",
    "TokenFormat",
    "Tokenized",
    "Vault",
    "open_store",
    "open_vault",
    "parse_kind",
]
