-- sendvault SQLite schema, version 5: each row names the blind-index key its `bidx` was computed
-- under, so the blind-index key can rotate (`sendvault keys rotate index`): during the move,
-- lookups ask for a value under both keys, new rows carry the new one, and the re-indexer moves
-- each row from the old key to the new one. Every vault so far has one blind-index key, id 1
-- (made at first start), so the constant default is what every existing row holds (and adding a
-- column with a constant default rewrites nothing). Tombstones keep the number; it protects
-- nothing (their `bidx` is NULL).
ALTER TABLE contacts ADD COLUMN bidx_key INTEGER NOT NULL DEFAULT 1
