-- API clients (see the SQLite migration of the same number).
CREATE TABLE sv_api_clients (
    client_id      TEXT             PRIMARY KEY,
    secret_hash    TEXT             NOT NULL,
    scopes         TEXT             NOT NULL,
    allow_cidrs    TEXT             NOT NULL DEFAULT '',
    tokenize_rate  DOUBLE PRECISION NOT NULL DEFAULT 0,
    created_at     BIGINT           NOT NULL,
    rotated_at     BIGINT           NOT NULL
);
