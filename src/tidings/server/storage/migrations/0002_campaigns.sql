-- Tidings schema, version 2: targeting and campaigns. Every key starts with the app id.

-- Campaign definitions (the JSON form of tidings.server.campaigns.Campaign) and their state.
CREATE TABLE campaigns (
    app          TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    spec         TEXT    NOT NULL,             -- JSON, validated before it is stored
    status       TEXT    NOT NULL,
    sent_total   INTEGER NOT NULL DEFAULT 0,   -- messages sent so far (the budget counts these)
    created_at   REAL    NOT NULL,
    updated_at   REAL    NOT NULL,
    PRIMARY KEY (app, id)
) WITHOUT ROWID;

-- Tag rules as data (tidings.server.targeting.TagRule JSON).
CREATE TABLE tag_rules (
    app          TEXT    NOT NULL,
    name         TEXT    NOT NULL,
    spec         TEXT    NOT NULL,
    PRIMARY KEY (app, name)
) WITHOUT ROWID;

-- Every message sent to a user, by a campaign or directly: caps count these, stats read them.
CREATE TABLE sends (
    app          TEXT    NOT NULL,
    user_key     TEXT    NOT NULL,
    at           REAL    NOT NULL,
    category     TEXT    NOT NULL,
    campaign     TEXT,
    variant      TEXT,
    message_id   TEXT    NOT NULL
);
CREATE INDEX sends_by_user ON sends (app, user_key, at);
CREATE INDEX sends_by_campaign ON sends (app, campaign, variant);
CREATE INDEX sends_by_message ON sends (app, message_id);

-- The decision log: why a user did or did not get a campaign's message, each time it was asked.
CREATE TABLE decisions (
    app          TEXT    NOT NULL,
    campaign     TEXT    NOT NULL,
    user_key     TEXT    NOT NULL,
    at           REAL    NOT NULL,
    reason       TEXT    NOT NULL,
    detail       TEXT    NOT NULL DEFAULT '',
    variant      TEXT,
    message_id   TEXT
);
CREATE INDEX decisions_by_user ON decisions (app, campaign, user_key, at);

-- Durable future work: a delayed trigger, a user's local send time, a scheduled campaign run
-- (user_key NULL). A restart picks these up; nothing waits only in memory.
CREATE TABLE pending_sends (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    app          TEXT    NOT NULL,
    campaign     TEXT    NOT NULL,
    user_key     TEXT,
    due_at       REAL    NOT NULL,
    event        TEXT                          -- the triggering event as JSON, or NULL
);
CREATE INDEX pending_by_due ON pending_sends (due_at);
CREATE INDEX pending_by_campaign ON pending_sends (app, campaign, user_key);

CREATE INDEX events_by_name ON events (app, name, ts);
