-- sendvault PostgreSQL schema, version 5: the blind-index key of each row (see the SQLite
-- migration of the same number). A constant default is stored once in the catalogue
-- (PostgreSQL 11 and later): no row is rewritten.
ALTER TABLE sv_contacts ADD COLUMN bidx_key INTEGER NOT NULL DEFAULT 1
