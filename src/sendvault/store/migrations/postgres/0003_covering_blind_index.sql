-- sendvault PostgreSQL schema, version 3: the blind index carries the token (an index-only scan
-- answers a lookup by value), as the SQLite migration of the same number does for SQLite.
CREATE UNIQUE INDEX sv_contacts_bidx_token ON sv_contacts (bidx) INCLUDE (token);
ALTER TABLE sv_contacts DROP CONSTRAINT sv_contacts_bidx_key
