-- API clients: Marketing Cloud and any other caller of the token API. Secrets are stored as
-- scrypt hashes only; scopes and allowed networks are space-separated lists.
CREATE TABLE api_clients (
    client_id      TEXT    PRIMARY KEY,
    secret_hash    TEXT    NOT NULL,
    scopes         TEXT    NOT NULL,
    allow_cidrs    TEXT    NOT NULL DEFAULT '',
    tokenize_rate  REAL    NOT NULL DEFAULT 0,
    created_at     INTEGER NOT NULL,
    rotated_at     INTEGER NOT NULL
) WITHOUT ROWID;
