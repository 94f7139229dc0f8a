-- sendvault PostgreSQL schema, version 4: the history of applied migrations (see the SQLite
-- migration of the same number). sv_schema stays the version marker that older releases read.
CREATE TABLE sv_schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    sha256     TEXT,
    applied_at BIGINT
)
