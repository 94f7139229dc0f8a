"""The Store protocol and its backends (SQLite; PostgreSQL follows)."""

from .base import ClientRecord, ContactRow, KeyRecord, NewContact, Store
from .sqlite import SQLiteStore

__all__ = ["ClientRecord", "ContactRow", "KeyRecord", "NewContact", "SQLiteStore", "Store"]
