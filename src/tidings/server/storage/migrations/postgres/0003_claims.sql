-- Tidings schema for PostgreSQL, version 3 (mirrors ../0003_claims.sql): due work is claimed
-- before it runs. A scheduler claims due rows for a lease (SELECT ... FOR UPDATE SKIP LOCKED);
-- another may take them only after the lease ends, and a commit that finishes claimed work is
-- refused once the claim has passed to someone else.
ALTER TABLE pending_sends ADD COLUMN claimed_by text;
ALTER TABLE pending_sends ADD COLUMN claim_until double precision NOT NULL DEFAULT 0;
