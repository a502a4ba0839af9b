-- Downsampled telemetry history: one row per worker per closed minute, so a master restart
-- keeps the long tier. `data` is opaque here (the history crate's encoding).
CREATE TABLE telemetry_minutes (
    worker_id TEXT    NOT NULL,
    start_ms  INTEGER NOT NULL,
    data      BLOB    NOT NULL,
    PRIMARY KEY (worker_id, start_ms)
) WITHOUT ROWID;

CREATE INDEX telemetry_minutes_by_start ON telemetry_minutes (start_ms);
