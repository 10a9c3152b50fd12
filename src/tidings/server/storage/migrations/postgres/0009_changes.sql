-- Tidings schema for PostgreSQL, version 9 (mirrors ../0009_changes.sql): the change feed.
-- What one gateway node changed of the shared audience, campaigns and settings, for the others
-- to apply in order, each from its own cursor. Ids are not a cursor here (a row with a lower id
-- may commit later); a cursor is a transaction snapshot: the rows read after snapshot S1 up to
-- S2 are those of transactions visible in S2 and not in S1, so none is skipped or read twice.
CREATE TABLE changes (
    id      bigserial        PRIMARY KEY,
    tx      xid8             NOT NULL DEFAULT pg_current_xact_id(),
    at      double precision NOT NULL DEFAULT extract(epoch FROM clock_timestamp()),
    origin  text             NOT NULL,
    body    bytea            NOT NULL
);
CREATE INDEX changes_by_tx ON changes (tx);
CREATE INDEX changes_by_at ON changes (at);
