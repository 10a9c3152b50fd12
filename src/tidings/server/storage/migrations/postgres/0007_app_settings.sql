-- Tidings schema for PostgreSQL, version 7 (mirrors ../0007_app_settings.sql): per-app settings
-- changed through the admin API (PUT /v1/settings). The settings document as given (JSON),
-- applied over the app's configuration file; no row: the file's settings hold.
CREATE TABLE app_settings (
    app          text             PRIMARY KEY,
    spec         text             NOT NULL,
    updated_at   double precision NOT NULL
);
