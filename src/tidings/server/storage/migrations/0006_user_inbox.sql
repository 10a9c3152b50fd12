-- Tidings schema, version 6: the inbox belongs to the user; what happened after sending.

-- Every inbox message (kind inbox or both) of a user, kept until it expires, whether or not
-- the user had a device when it was sent: a device that does not hold one (new, reinstalled)
-- is given it at its hello (a delivery with inbox_only = 1). A newer message with the same
-- collapse key replaces the older one here too.
CREATE TABLE user_inbox (
    app           TEXT    NOT NULL,
    user_key      TEXT    NOT NULL,
    message_id    TEXT    NOT NULL,
    collapse_key  TEXT,
    expires_at    REAL    NOT NULL,
    PRIMARY KEY (app, user_key, message_id)
) WITHOUT ROWID;

-- inbox_only: a delivery that brings an older inbox message to a device that did not hold it;
-- it goes on the wire with kind "inbox" (never a banner). acked_at: when the device
-- acknowledged it (the "delivered" outcome of the decision log).
ALTER TABLE deliveries ADD COLUMN inbox_only INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN acked_at REAL;

-- When the user last changed the message's inbox state (read, unread, deleted).
ALTER TABLE inbox_state ADD COLUMN at REAL;
