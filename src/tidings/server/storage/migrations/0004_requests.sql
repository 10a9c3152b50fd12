-- Tidings schema, version 4: admin requests made once (the Idempotency-Key header).
-- A key is taken before the work starts (answer NULL, held until lease_until) and answered
-- after it; a retry with the same key gets the stored answer instead of doing it again.
CREATE TABLE requests (
    app          TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,             -- what was asked: route and body, hashed
    status       INTEGER,                      -- the answer's HTTP status; NULL while running
    answer       TEXT,                         -- the answer's JSON body
    created_at   REAL    NOT NULL,
    lease_until  REAL    NOT NULL,
    PRIMARY KEY (app, key)
) WITHOUT ROWID;
CREATE INDEX requests_by_age ON requests (created_at);
