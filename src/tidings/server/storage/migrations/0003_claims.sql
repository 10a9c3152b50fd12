-- Tidings schema, version 3: due work is claimed before it runs.
-- A scheduler claims due rows for a lease; another may take them only after the lease ends,
-- and a commit that finishes claimed work is refused once the claim has passed to someone else.
ALTER TABLE pending_sends ADD COLUMN claimed_by TEXT;
ALTER TABLE pending_sends ADD COLUMN claim_until REAL NOT NULL DEFAULT 0;
