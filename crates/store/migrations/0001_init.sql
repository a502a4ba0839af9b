-- CloudAI store schema, version 1.
-- Tasks keep the spec as JSON; the fields that are filtered or sorted on are columns.

CREATE TABLE tasks (
    seq            INTEGER PRIMARY KEY,       -- insertion order: tie-break for equal created_at_ms
    task_id        TEXT    NOT NULL UNIQUE,
    status         TEXT    NOT NULL,
    worker_id      TEXT,
    priority       INTEGER NOT NULL,
    spec           TEXT    NOT NULL,          -- TaskSpec as JSON
    gpu_indices    TEXT    NOT NULL,          -- JSON array of integers
    attempt        INTEGER NOT NULL,
    pending_reason TEXT,
    exit_code      INTEGER,
    error          TEXT,
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    started_at_ms  INTEGER,
    finished_at_ms INTEGER
);
-- Every index ends with the rowid (seq), so these also give creation order.
CREATE INDEX tasks_by_created ON tasks (created_at_ms);
CREATE INDEX tasks_by_status ON tasks (status, created_at_ms);
CREATE INDEX tasks_by_worker ON tasks (worker_id, created_at_ms);
CREATE INDEX tasks_by_priority ON tasks (status, priority DESC, created_at_ms);

CREATE TABLE task_events (
    seq         INTEGER PRIMARY KEY,
    task_id     TEXT    NOT NULL,
    time_ms     INTEGER NOT NULL,
    from_status TEXT,
    to_status   TEXT    NOT NULL,
    reason      TEXT    NOT NULL,
    worker_id   TEXT
);
CREATE INDEX task_events_by_task ON task_events (task_id, seq);

-- Log chunks, numbered per task from 1. Old chunks are deleted past the per-task bound.
CREATE TABLE task_logs (
    task_id TEXT    NOT NULL,
    seq     INTEGER NOT NULL,
    stream  INTEGER NOT NULL,                 -- 1 stdout, 2 stderr
    time_ms INTEGER NOT NULL,
    data    BLOB    NOT NULL,
    PRIMARY KEY (task_id, seq)
) WITHOUT ROWID;

-- Per-task log bookkeeping, so appends never scan the chunks to know the size.
CREATE TABLE task_log_state (
    task_id       TEXT    PRIMARY KEY,
    next_seq      INTEGER NOT NULL,
    kept_bytes    INTEGER NOT NULL,
    dropped_bytes INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE workers (
    worker_id     TEXT    PRIMARY KEY,
    hostname      TEXT    NOT NULL,
    cpu_cores     REAL    NOT NULL,
    memory_mb     INTEGER NOT NULL,
    gpus          INTEGER NOT NULL,
    drivers       TEXT    NOT NULL,           -- JSON array of strings
    labels        TEXT    NOT NULL,           -- JSON object
    version       TEXT    NOT NULL,
    first_seen_ms INTEGER NOT NULL,
    last_seen_ms  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE kv (
    namespace TEXT NOT NULL,
    key       TEXT NOT NULL,
    value     BLOB NOT NULL,
    PRIMARY KEY (namespace, key)
) WITHOUT ROWID;
