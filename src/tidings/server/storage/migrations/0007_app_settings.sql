-- Tidings schema, version 7: per-app settings changed through the admin API (PUT /v1/settings).
-- The settings document as given (JSON), applied over the app's configuration file; no row:
-- the file's settings hold.
CREATE TABLE app_settings (
    app          TEXT    PRIMARY KEY,
    spec         TEXT    NOT NULL,
    updated_at   REAL    NOT NULL
) WITHOUT ROWID;
