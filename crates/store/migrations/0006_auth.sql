-- API tokens: only a SHA-256 of each secret is kept; the id is public (listing, revoking).
CREATE TABLE api_tokens (
    id            TEXT    PRIMARY KEY,
    name          TEXT    NOT NULL,
    role          TEXT    NOT NULL,
    secret_hash   BLOB    NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER
) WITHOUT ROWID;

-- The audit trail: one row per mutating API call, in the order recorded.
CREATE TABLE audit (
    seq    INTEGER PRIMARY KEY,
    at_ms  INTEGER NOT NULL,
    actor  TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    status INTEGER NOT NULL,       -- the HTTP status answered
    detail TEXT
);

-- Who submitted a task (the token's name); NULL for tasks stored before this version.
ALTER TABLE tasks ADD COLUMN submitted_by TEXT;
