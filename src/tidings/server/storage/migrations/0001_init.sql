-- Tidings schema, version 1. Every key starts with the app id: nothing crosses apps.

CREATE TABLE devices (
    app          TEXT    NOT NULL,
    device_id    TEXT    NOT NULL,
    user_id      TEXT,
    platform     TEXT    NOT NULL DEFAULT '',
    app_version  TEXT    NOT NULL DEFAULT '',
    locale       TEXT    NOT NULL DEFAULT '',
    tz           TEXT    NOT NULL DEFAULT '',
    sdk_version  TEXT    NOT NULL DEFAULT '',
    first_seen   REAL    NOT NULL,
    last_seen    REAL    NOT NULL,
    last_seq     INTEGER NOT NULL DEFAULT 0,   -- highest seq ever queued for the device
    acked_seq    INTEGER NOT NULL DEFAULT 0,   -- highest seq the device acknowledged
    PRIMARY KEY (app, device_id)
) WITHOUT ROWID;
CREATE INDEX devices_by_user ON devices (app, user_id);

-- One row per message content; a direct send shares one row among all its recipients.
CREATE TABLE messages (
    app           TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    campaign      TEXT,
    variant       TEXT,
    kind          TEXT    NOT NULL,
    category      TEXT    NOT NULL,
    priority      TEXT    NOT NULL,
    collapse_key  TEXT,
    created_at    REAL    NOT NULL,
    expires_at    REAL    NOT NULL,
    wire          BLOB    NOT NULL,            -- the encoded message map (PROTOCOL.md §6)
    revoked       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app, id)
) WITHOUT ROWID;

-- The per-device queue and the record of who got what (receipts are checked against it).
-- state: 0 pending, 1 acknowledged, 2 dropped (revoked, collapsed or expired before delivery).
CREATE TABLE deliveries (
    app           TEXT    NOT NULL,
    device_id     TEXT    NOT NULL,
    seq           INTEGER NOT NULL,
    message_id    TEXT    NOT NULL,
    collapse_key  TEXT,
    state         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app, device_id, seq)
) WITHOUT ROWID;
CREATE INDEX deliveries_by_message ON deliveries (app, message_id);

-- Profiles: a user id, or '~' || device id for an anonymous device.
CREATE TABLE users (
    app          TEXT    NOT NULL,
    user_key     TEXT    NOT NULL,
    attrs        TEXT    NOT NULL DEFAULT '{}',
    consent      TEXT    NOT NULL DEFAULT '{}',
    marketing_opt_out INTEGER NOT NULL DEFAULT 0,
    first_seen   REAL    NOT NULL,
    last_seen    REAL    NOT NULL,
    inbox_ver    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app, user_key)
) WITHOUT ROWID;

CREATE TABLE events (
    app          TEXT    NOT NULL,
    device_id    TEXT    NOT NULL,
    event_id     TEXT    NOT NULL,
    user_key     TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    ts           REAL    NOT NULL,
    props        TEXT    NOT NULL,
    received_at  REAL    NOT NULL,
    PRIMARY KEY (app, device_id, event_id)
) WITHOUT ROWID;
CREATE INDEX events_by_user ON events (app, user_key, name, ts);

CREATE TABLE receipts (
    app          TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    device_id    TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    action       TEXT,
    ts           REAL    NOT NULL,
    PRIMARY KEY (app, message_id, device_id, kind)
) WITHOUT ROWID;

CREATE TABLE inbox_state (
    app          TEXT    NOT NULL,
    user_key     TEXT    NOT NULL,
    message_id   TEXT    NOT NULL,
    state        TEXT    NOT NULL,
    ver          INTEGER NOT NULL,
    PRIMARY KEY (app, user_key, message_id)
) WITHOUT ROWID;
CREATE INDEX inbox_state_by_ver ON inbox_state (app, user_key, ver);
