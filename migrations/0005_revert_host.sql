-- A temporary change can only be undone on the host where it was made (a
-- GPU's power limit is set through that host's driver): record the host,
-- and let each selfheal undo only its own host's changes.
ALTER TABLE pending_reverts ADD COLUMN host text NOT NULL DEFAULT '';
