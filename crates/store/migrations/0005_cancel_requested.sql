-- A cancel asked of a placed task is written before it is acknowledged, so a restarted master
-- still stops the task (or ends it cancelled) rather than running it again.
ALTER TABLE tasks ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
