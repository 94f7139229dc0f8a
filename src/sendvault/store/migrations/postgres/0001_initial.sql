-- sendvault PostgreSQL schema, version 1 (same shape as the SQLite schema).
CREATE TABLE sv_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE sv_data_keys (
    id         INTEGER PRIMARY KEY,
    purpose    TEXT    NOT NULL CHECK (purpose IN ('data', 'bidx')),
    provider   TEXT    NOT NULL,
    wrapped    BYTEA   NOT NULL,
    created_at BIGINT  NOT NULL
);

CREATE TABLE sv_contacts (
    token      TEXT     PRIMARY KEY,
    kind       SMALLINT NOT NULL,
    bidx       BYTEA    UNIQUE,
    value_ct   BYTEA,
    attrs_ct   BYTEA,
    created_at BIGINT   NOT NULL,
    erased_at  BIGINT,
    CHECK ((erased_at IS NULL) = (value_ct IS NOT NULL AND bidx IS NOT NULL))
);
