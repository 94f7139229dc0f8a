"""The storage contract every backend fulfils (SQLite now; PostgreSQL next).

The store sees only tokens, blind indexes and ciphertexts. Each batch operation is one query,
never one query per item. The same contract test suite (tests/store/) runs on every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from .migrations import SchemaStatus

__all__ = [
    "CLIENT_COLUMNS",
    "ClientRecord",
    "ContactRow",
    "KeyRecord",
    "NewContact",
    "Store",
    "StoreFacts",
    "StoredKey",
]


class KeyRecord(NamedTuple):
    """A wrapped data key as stored."""

    id: int
    purpose: str
    provider: str
    wrapped: bytes


class StoredKey(NamedTuple):
    """A wrapped data key with the time it was added (``sendvault status`` shows its age)."""

    id: int
    purpose: str
    provider: str
    wrapped: bytes
    created_at: int


class StoreFacts(NamedTuple):
    """What ``config check`` and ``sendvault status`` read, without changing anything.

    ``schema`` is 0 for a database without sendvault's tables yet; ``live`` and ``erased`` are
    None unless counts were asked for (a count reads the whole table).
    """

    schema: int
    latest_schema: int
    keys: list[StoredKey]
    meta: dict[str, str]
    live: int | None = None
    erased: int | None = None


# One token's row: (token, kind, value_ct, attrs_ct); value_ct is None for an erased token (a
# tombstone). A plain tuple, not a NamedTuple: building 500 named tuples per resolve batch cost
# more than decrypting them.
ContactRow = tuple[str, int, bytes | None, bytes | None]


class NewContact(NamedTuple):
    """A token to create, unless its blind index already has one.

    ``bidx_key`` names the blind-index key ``bidx`` was computed under. While the blind-index
    key rotates, ``alt_bidx`` is the same value's index under the old key ``alt_key``: a row that
    holds it (not yet re-indexed) is the value's token, and no new row is made. The store checks,
    inside the writing transaction, that these are exactly the vault's blind-index keys
    (:class:`~sendvault.errors.StaleKeys` otherwise), so no process can add a row under an index
    that lookups no longer ask for.
    """

    token: str
    kind: int
    bidx: bytes
    value_ct: bytes
    bidx_key: int = 1
    alt_bidx: bytes | None = None
    alt_key: int | None = None


# Column order of ClientRecord in every backend's client table.
CLIENT_COLUMNS = "client_id, secret_hash, scopes, allow_cidrs, tokenize_rate, created_at, rotated_at"


class ClientRecord(NamedTuple):
    """An API client as stored: the secret only as a slow hash."""

    client_id: str
    secret_hash: str
    scopes: str
    allow_cidrs: str
    tokenize_rate: float
    created_at: int
    rotated_at: int


class Store(Protocol):
    """What the vault needs from a database."""

    def migrate(self, *, upgrade: bool = True) -> list[int]:
        """Apply pending migrations; the versions applied. Safe from several processes at once.

        An empty database is always set up; an older one only with ``upgrade`` (else
        :class:`~sendvault.errors.SchemaOutdated`); a newer one never
        (:class:`~sendvault.errors.SchemaTooNew`).
        """
        ...

    def schema_status(self) -> SchemaStatus:
        """The schema version, the history of applied migrations and what is pending; reads only."""
        ...

    def get_meta(self, name: str) -> str | None:
        """A vault-wide setting recorded at creation, or None."""
        ...

    def claim_meta(self, name: str, value: str) -> str:
        """Record ``value`` unless ``name`` is set; return what is recorded now."""
        ...

    def ensure_keys(self, make: Callable[[], Iterable[KeyRecord]]) -> list[KeyRecord]:
        """Return all keys; when there are none, store what ``make()`` returns, atomically."""
        ...

    def add_key(self, purpose: str, provider: str, wrap: Callable[[int], bytes]) -> int:
        """Store a new key; ``wrap`` receives the new id (wrapping binds it). Returns the id.

        A second blind-index key is refused (:class:`~sendvault.errors.CryptoError`) while two
        exist: one rotation of the blind index at a time."""
        ...

    def fetch_by_tokens(self, tokens: Sequence[str]) -> list[ContactRow]:
        """The rows of the given tokens that exist, in any order; one query."""
        ...

    def fetch_for_resolve(self, tokens: Sequence[str]) -> list[ContactRow]:
        """:meth:`fetch_by_tokens` for resolve traffic, which a backend may serve from a standby
        as long as every committed token is found (rows of a token changed a moment ago may be
        a moment old)."""
        ...

    def fetch_by_bidx(self, bidxs: Sequence[bytes]) -> dict[bytes, str]:
        """Blind index to token for those that exist; one query."""
        ...

    def insert_new(self, rows: Sequence[NewContact]) -> dict[bytes, str]:
        """Insert-or-get: blind index to the token that holds it after the call.

        A row whose blind index exists already is dropped in favour of the existing token; a row
        whose token collides is dropped and missing from the answer (the caller retries it).
        Concurrent callers' rows may share one transaction.
        """
        ...

    async def insert_new_async(self, rows: Sequence[NewContact]) -> dict[bytes, str]:
        """:meth:`insert_new` for an event loop; concurrent calls on one loop share a commit."""
        ...

    def insert_bulk(self, rows: Sequence[NewContact]) -> dict[bytes, str]:
        """:meth:`insert_new` for bulk jobs (file conversion): same insert-or-get answer.

        Made for large batches (tens of thousands of rows) from one caller: the backend writes
        them in key order, in few large transactions bounded in time so online callers still get
        the write lock between them. Every row in the answer is committed when the call returns;
        a caller that dies mid-call loses only uncommitted rows, none of which it has handed out.
        """
        ...

    def bulk_batch_rows(self) -> int:
        """Rows the backend's next bulk transaction takes (on SQLite this follows
        ``sqlite_bulk_lock_seconds`` and the time its last large transaction took); 0 while it
        has no measure yet. A converter gathering fewer new rows per :meth:`insert_bulk` call
        than this makes smaller transactions than the backend would."""
        ...

    def update_attrs_many(self, items: Sequence[tuple[str, bytes | None]]) -> int:
        """:meth:`update_attrs` for many live tokens in one transaction; how many were updated."""
        ...

    def update_attrs(self, token: str, attrs_ct: bytes | None) -> bool:
        """Replace a live token's attribute ciphertext; False if the token is unknown or erased."""
        ...

    def erase(self, token: str) -> bool:
        """Drop value, attributes and blind index, keep a tombstone; False if nothing to erase."""
        ...

    def load_keys(self) -> list[StoredKey]:
        """Every stored key (data and blind-index), by id."""
        ...

    def rewrap_keys(
        self, items: Sequence[tuple[int, bytes, str, bytes]], meta: Sequence[tuple[str, str, str]] = ()
    ) -> None:
        """Replace wrapped keys ``(id, old wrapped, provider, new wrapped)`` and wrapped secrets in
        the meta table ``(name, old, new)`` in one transaction; :class:`~sendvault.errors.StaleKeys`
        and no change if any is not as it was read."""
        ...

    def key_usage(self) -> dict[int, int]:
        """Live rows per data key id (one full read of the table)."""
        ...

    def scan_stale(self, after: str, header: bytes, limit: int) -> list[ContactRow]:
        """Up to ``limit`` live rows after token ``after``, in token order, with a value or
        attribute ciphertext that does not begin with ``header`` (not under the current key)."""
        ...

    def replace_ciphertexts(
        self, items: Sequence[tuple[str, bytes, bytes | None, bytes, bytes | None]], cursor: tuple[str, str]
    ) -> int:
        """Swap re-encrypted ciphertexts in, each only if the row is unchanged since it was read,
        and record ``cursor`` (meta name, value) in the same transaction; how many rows changed.

        Every write of a ciphertext (this, new tokens, attributes) refuses with
        :class:`~sendvault.errors.StaleKeys` a data key that no longer exists.
        """
        ...

    def index_usage(self) -> dict[int, int]:
        """Live rows per blind-index key id (one full read of the table)."""
        ...

    def scan_unindexed(self, after: str, key_id: int, limit: int) -> list[tuple[str, int, bytes, bytes]]:
        """Up to ``limit`` live rows after token ``after``, in token order, whose blind index is
        not under key ``key_id``: ``(token, kind, value_ct, bidx)``, the next batch to re-index."""
        ...

    def replace_indexes(
        self, items: Sequence[tuple[str, bytes, bytes]], key_id: int, cursor: tuple[str, str]
    ) -> int:
        """Move rows ``(token, old bidx, new bidx)`` to blind-index key ``key_id``, each only if
        its index is still the old one (not erased or moved meanwhile), and record ``cursor`` in
        the same transaction; how many rows changed. :class:`~sendvault.errors.StaleKeys` if
        ``key_id`` is not the newest blind-index key."""
        ...

    def set_meta(self, name: str, value: str | None) -> None:
        """Set, or with None delete, a vault-wide value."""
        ...

    def retire_key(self, key_id: int) -> int:
        """Delete data key (or blind-index key) ``key_id`` unless a live row uses it; the number
        of rows using it (0: deleted). Refuses the current (newest) key of its purpose."""
        ...

    def purge_erased(self) -> None:
        """Make erased values unrecoverable from the database files as far as the backend can
        (SQLite: overwritten pages are checkpointed out of the write-ahead log, which is
        truncated; PostgreSQL keeps dead row versions until its own vacuum)."""
        ...

    def put_client(self, record: ClientRecord) -> None:
        """Insert or replace an API client."""
        ...

    def get_client(self, client_id: str) -> ClientRecord | None:
        """One API client, or None."""
        ...

    def list_clients(self) -> list[ClientRecord]:
        """Every API client, by id."""
        ...

    def delete_client(self, client_id: str) -> bool:
        """Remove an API client; False if there was none."""
        ...

    def count(self) -> int:
        """Number of live (not erased) tokens."""
        ...

    def ping(self) -> None:
        """Raise :class:`~sendvault.errors.StoreUnavailable` if the store cannot answer."""
        ...

    def describe(self, *, counts: bool = False) -> StoreFacts:
        """Schema version, keys, vault metadata (and token counts): reads only, never migrates."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...
