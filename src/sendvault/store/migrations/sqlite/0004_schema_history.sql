-- sendvault SQLite schema, version 4: the history of applied migrations (`sendvault db status`).
-- One row per version: the file's name and SHA-256 as applied, and when (seconds since the
-- epoch). Versions applied before this table existed have neither. PRAGMA user_version stays
-- the version marker that older releases read.
CREATE TABLE schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    sha256     TEXT,
    applied_at INTEGER
) WITHOUT ROWID
