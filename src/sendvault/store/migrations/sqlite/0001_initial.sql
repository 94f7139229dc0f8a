-- sendvault SQLite schema, version 1.
-- Clear values never reach this file: `value_ct` and `attrs_ct` are AES-256-GCM ciphertexts
-- bound to their token; `bidx` is an HMAC-SHA256 blind index under its own key.

CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Data keys, wrapped by the key-encryption key of `provider`. Never stored in clear.
CREATE TABLE data_keys (
    id         INTEGER PRIMARY KEY,
    purpose    TEXT    NOT NULL CHECK (purpose IN ('data', 'bidx')),
    provider   TEXT    NOT NULL,
    wrapped    BLOB    NOT NULL,
    created_at INTEGER NOT NULL
);

-- One row per token, forever. Erasure clears bidx, value_ct and attrs_ct and keeps the row as a
-- tombstone, so the token is never issued again.
CREATE TABLE contacts (
    token      TEXT    PRIMARY KEY,
    kind       INTEGER NOT NULL,
    bidx       BLOB    UNIQUE,
    value_ct   BLOB,
    attrs_ct   BLOB,
    created_at INTEGER NOT NULL,
    erased_at  INTEGER,
    CHECK ((erased_at IS NULL) = (value_ct IS NOT NULL AND bidx IS NOT NULL))
) WITHOUT ROWID;
