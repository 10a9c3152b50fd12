-- Tidings schema, version 5: a campaign's roll-out state (JSON), NULL until its test starts.
-- {"phase": "testing", "started_at", "deadline"} while the test runs, then {"phase":
-- "rolled_out", "variant", "decided_by", "detail", "decided_at", "row", ...} once decided.
-- It changes only by compare-and-set on the whole value, so the roll-out is decided once.
ALTER TABLE campaigns ADD COLUMN rollout TEXT;
