-- Tidings schema, version 8: each hello of a device takes the next session epoch, inside the
-- store's transaction. Routes and kicks between gateway nodes carry it, so an older session
-- never takes a newer one's route and is always the one closed.
ALTER TABLE devices ADD COLUMN session_epoch INTEGER NOT NULL DEFAULT 0;
