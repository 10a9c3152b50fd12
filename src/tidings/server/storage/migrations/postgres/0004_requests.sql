-- Tidings schema for PostgreSQL, version 4 (mirrors ../0004_requests.sql): admin requests made
-- once (the Idempotency-Key header). A key is taken before the work starts (answer NULL, held
-- until lease_until) and answered after it; a retry with the same key gets the stored answer
-- instead of doing it again.
CREATE TABLE requests (
    app          text             NOT NULL,
    key          text             NOT NULL,
    fingerprint  text             NOT NULL,     -- what was asked: route and body, hashed
    status       integer,                       -- the answer's HTTP status; NULL while running
    answer       text,                          -- the answer's JSON body
    created_at   double precision NOT NULL,
    lease_until  double precision NOT NULL,
    PRIMARY KEY (app, key)
);
CREATE INDEX requests_by_age ON requests (created_at);
