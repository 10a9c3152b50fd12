-- Tidings schema for PostgreSQL, version 5 (mirrors ../0005_rollout.sql): a campaign's roll-out
-- state as JSON text, NULL until its test starts; changed only by compare-and-set on the whole
-- value, so the roll-out is decided once.
ALTER TABLE campaigns ADD COLUMN rollout text;
