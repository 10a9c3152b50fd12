-- Tidings schema for PostgreSQL, version 1 (mirrors ../0001_init.sql). Every key starts with
-- the app id: nothing crosses apps. Times are unix seconds (double precision, as SQLite's REAL);
-- JSON is stored as the text the store wrote, exactly as in SQLite (json.dumps / json.loads).

CREATE TABLE devices (
    app          text             NOT NULL,
    device_id    text             NOT NULL,
    user_id      text,
    platform     text             NOT NULL DEFAULT '',
    app_version  text             NOT NULL DEFAULT '',
    locale       text             NOT NULL DEFAULT '',
    tz           text             NOT NULL DEFAULT '',
    sdk_version  text             NOT NULL DEFAULT '',
    first_seen   double precision NOT NULL,
    last_seen    double precision NOT NULL,
    last_seq     bigint           NOT NULL DEFAULT 0,  -- highest seq ever queued for the device
    acked_seq    bigint           NOT NULL DEFAULT 0,  -- highest seq the device acknowledged
    PRIMARY KEY (app, device_id)
) WITH (fillfactor = 80);  -- room for HOT updates: every commit and ack rewrites its devices' rows
CREATE INDEX devices_by_user ON devices (app, user_id);

-- One row per message content; a direct send shares one row among all its recipients.
CREATE TABLE messages (
    app           text             NOT NULL,
    id            text             NOT NULL,
    campaign      text,
    variant       text,
    kind          text             NOT NULL,
    category      text             NOT NULL,
    priority      text             NOT NULL,
    collapse_key  text,
    created_at    double precision NOT NULL,
    expires_at    double precision NOT NULL,
    wire          bytea            NOT NULL,      -- the encoded message map (PROTOCOL.md §6)
    revoked       boolean          NOT NULL DEFAULT false,
    PRIMARY KEY (app, id)
);

-- The per-device queue and the record of who got what (receipts are checked against it).
-- state: 0 pending, 1 acknowledged, 2 dropped (revoked, collapsed or expired before delivery).
CREATE TABLE deliveries (
    app           text     NOT NULL,
    device_id     text     NOT NULL,
    seq           bigint   NOT NULL,
    message_id    text     NOT NULL,
    collapse_key  text,
    state         smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (app, device_id, seq)
);
CREATE INDEX deliveries_by_message ON deliveries (app, message_id);

-- Profiles: a user id, or '~' || device id for an anonymous device.
CREATE TABLE users (
    app               text             NOT NULL,
    user_key          text             NOT NULL,
    attrs             text             NOT NULL DEFAULT '{}',
    consent           text             NOT NULL DEFAULT '{}',
    marketing_opt_out boolean          NOT NULL DEFAULT false,
    first_seen        double precision NOT NULL,
    last_seen         double precision NOT NULL,
    inbox_ver         bigint           NOT NULL DEFAULT 0,
    PRIMARY KEY (app, user_key)
);

CREATE TABLE events (
    app          text             NOT NULL,
    device_id    text             NOT NULL,
    event_id     text             NOT NULL,
    user_key     text             NOT NULL,
    name         text             NOT NULL,
    ts           double precision NOT NULL,
    props        text             NOT NULL,
    received_at  double precision NOT NULL,
    -- props' amount as SQLite's SUM(json_extract(props, '$.amount')) reads it, worked out on
    -- insert: a purchase total never parses JSON, and text PostgreSQL's JSON functions refuse
    -- (a \u0000 in any string) cannot break it. NULL when there is no amount.
    amount       double precision,
    PRIMARY KEY (app, device_id, event_id)
);
CREATE INDEX events_by_user ON events (app, user_key, name, ts);

CREATE TABLE receipts (
    app          text             NOT NULL,
    message_id   text             NOT NULL,
    device_id    text             NOT NULL,
    kind         text             NOT NULL,
    action       text,
    ts           double precision NOT NULL,
    PRIMARY KEY (app, message_id, device_id, kind)
);

CREATE TABLE inbox_state (
    app          text   NOT NULL,
    user_key     text   NOT NULL,
    message_id   text   NOT NULL,
    state        text   NOT NULL,
    ver          bigint NOT NULL,
    PRIMARY KEY (app, user_key, message_id)
);
CREATE INDEX inbox_state_by_ver ON inbox_state (app, user_key, ver);
