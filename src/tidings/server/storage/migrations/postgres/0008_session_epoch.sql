-- Tidings schema for PostgreSQL, version 8 (mirrors ../0008_session_epoch.sql): each hello of
-- a device takes the next session epoch, inside the store's transaction. Routes and kicks
-- between gateway nodes carry it, so an older session never takes a newer one's route and is
-- always the one closed.
ALTER TABLE devices ADD COLUMN session_epoch bigint NOT NULL DEFAULT 0;
