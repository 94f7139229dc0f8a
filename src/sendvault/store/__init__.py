"""The Store protocol and its backends (SQLite; PostgreSQL follows)."""

from .base import ContactRow, KeyRecord, NewContact, Store
from .sqlite import SQLiteStore

__all__ = ["ContactRow", "KeyRecord", "NewContact", "SQLiteStore", "Store"]
