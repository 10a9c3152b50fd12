-- Tidings schema, version 9: the change feed. What one gateway process changed of the shared
-- audience, campaigns and settings, for the others to apply in order (each from its own
-- cursor: here the row id, as SQLite commits one writer at a time).
CREATE TABLE changes (
    id      INTEGER PRIMARY KEY,
    at      REAL    NOT NULL,  -- when it was written (the store's clock, unix seconds)
    origin  TEXT    NOT NULL,  -- the node that made the change
    body    BLOB    NOT NULL   -- the change (msgpack)
);
CREATE INDEX changes_by_at ON changes (at);
