-- Tidings schema for PostgreSQL, version 6 (mirrors ../0006_user_inbox.sql): the inbox belongs
-- to the user; what happened after sending.

CREATE TABLE user_inbox (
    app           text             NOT NULL,
    user_key      text             NOT NULL,
    message_id    text             NOT NULL,
    collapse_key  text,
    expires_at    double precision NOT NULL,
    PRIMARY KEY (app, user_key, message_id)
);

ALTER TABLE deliveries ADD COLUMN inbox_only smallint NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN acked_at double precision;

ALTER TABLE inbox_state ADD COLUMN at double precision;
