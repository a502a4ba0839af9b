//! CloudAI persistence: the [`Store`] trait (the master's source of truth for tasks, their
//! events and logs, and the workers' minute history) and [`SqliteStore`], the embedded
//! implementation.
//!
//! Writes go through one writer thread that group-commits whatever is queued, so many
//! concurrent callers share one transaction; reads use their own connections and never wait
//! behind the writer.

#![forbid(unsafe_code)]

mod error;
mod migrations;
mod sqlite;

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use cloudai_domain::{Task, TaskEvent, TaskId, TaskStatus, WorkerId};

/// Task output is a domain concept: workers ship it, the store keeps it.
pub use cloudai_domain::{LogChunk, LogStream};
pub use error::StoreError;
pub use migrations::SCHEMA_VERSION;
pub use sqlite::{LOG_ROW_OVERHEAD, SqliteStore, sqlite_path_from_url};

/// Tuning of a store. `Default` gives production values.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Log bytes kept per task, each stored row charged [`LOG_ROW_OVERHEAD`] on top of its
    /// data, so that the database holds about this much per task whatever the chunking;
    /// the oldest rows are deleted past it.
    pub max_log_bytes_per_task: u64,
    /// Most write operations committed in one transaction.
    pub max_batch_ops: usize,
    /// Write operations that may wait for the writer before callers are held back.
    pub write_queue: usize,
    /// Read connections (each used by one blocking read at a time).
    pub read_connections: usize,
    /// How long to wait for a lock held by another process (e.g. a `sqlite3` shell).
    pub busy_timeout: Duration,
    /// Accept an existing but empty database file (`--init`); otherwise it is refused, since
    /// it most likely lost its data. A missing file is always created.
    pub init: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_log_bytes_per_task: 8 * 1024 * 1024,
            max_batch_ops: 512,
            write_queue: 4096,
            read_connections: 2,
            busy_timeout: Duration::from_secs(5),
            init: false,
        }
    }
}

/// Which tasks [`Store::list_tasks`] returns, in which order. Empty means all, oldest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub worker_id: Option<WorkerId>,
    /// Only tasks listed after this one (in the listing's order): a page's continuation.
    pub after: Option<TaskCursor>,
    /// At most this many.
    pub limit: Option<usize>,
    /// Newest first instead of oldest first.
    pub newest_first: bool,
}

/// A task's place in a listing: creation time, then id (ids are unique, so the order is
/// total and a page boundary never splits tasks created in the same millisecond).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TaskCursor {
    pub created_at_ms: i64,
    pub task_id: TaskId,
}

impl TaskCursor {
    pub fn of(task: &Task) -> Self {
        Self { created_at_ms: task.created_at_ms, task_id: task.task_id.clone() }
    }
}

/// A kept log chunk. `seq` counts from 1 per task and never repeats.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredChunk {
    pub seq: u64,
    pub stream: LogStream,
    pub data: Vec<u8>,
    pub time_ms: i64,
}

/// What part of a task's log [`Store::read_logs`] returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogQuery {
    /// Only chunks with a greater seq (a follower passes the previous page's `next_seq`).
    pub after_seq: Option<u64>,
    /// Only the last N bytes (of the chunks after `after_seq`); the first chunk is cut to fit.
    pub tail_bytes: Option<u64>,
    /// Only the last N lines (of the chunks after `after_seq`), read from the newest chunk
    /// backwards; a last line without its newline counts. With `tail_bytes`, whichever is
    /// shorter.
    pub tail_lines: Option<u64>,
    /// At most this many bytes, except that one chunk is always returned when there is one,
    /// so a follower always makes progress.
    pub limit_bytes: Option<u64>,
}

/// A page of a task's log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LogPage {
    pub chunks: Vec<StoredChunk>,
    /// Bytes of this task's output deleted to respect the per-task bound, since it started.
    pub dropped_bytes: u64,
    /// Pass as [`LogQuery::after_seq`] to get only newer output: the seq of the last chunk
    /// returned; when nothing was returned, the greater of the `after_seq` asked for and the
    /// log's last seq (0 for a task without output).
    pub next_seq: u64,
}

/// One worker's telemetry over one closed minute, encoded by the history tier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryMinute {
    pub worker_id: WorkerId,
    /// Unix milliseconds, the start of the minute.
    pub start_ms: i64,
    pub data: Vec<u8>,
}

/// An API token as stored: never the secret, only its SHA-256.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredToken {
    /// Public part of the token (listing, revoking).
    pub id: String,
    pub name: String,
    /// `admin`, `operator`, `submitter` or `reader` (the API decides what they mean).
    pub role: String,
    pub secret_hash: Vec<u8>,
    pub created_at_ms: i64,
    pub revoked_at_ms: Option<i64>,
}

/// One audited API call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRecord {
    /// Assigned by the store (ignored when appending): newer records have greater ones.
    pub seq: i64,
    pub at_ms: i64,
    /// Who made the call (a token's name).
    pub actor: String,
    /// What was asked, e.g. `task.submit`.
    pub action: String,
    /// What it was asked of (a task id, a token id).
    pub target: String,
    /// The HTTP status answered.
    pub status: u16,
    pub detail: Option<String>,
}

/// The master's persistent state. Every write is committed when its future resolves.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Records a new task with its first event. [`StoreError::AlreadyExists`] if the id is taken.
    async fn insert_task(&self, task: &Task, event: &TaskEvent) -> Result<(), StoreError>;
    /// Replaces the task's row and appends the transition event, atomically.
    /// [`StoreError::NotFound`] if the task was never inserted.
    async fn update_task(&self, task: &Task, event: &TaskEvent) -> Result<(), StoreError>;
    async fn get_task(&self, task_id: &TaskId) -> Result<Option<Task>, StoreError>;
    /// Tasks in [`TaskCursor`] order (or its reverse), as `filter` says.
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError>;
    /// Pending, queued and running tasks in creation order (what a restarted master resumes).
    async fn unfinished_tasks(&self) -> Result<Vec<Task>, StoreError>;
    /// Records that a placed task is to be stopped (its row's state is not changed).
    /// [`StoreError::NotFound`] if there is no such task.
    async fn request_cancel(&self, task_id: &TaskId) -> Result<(), StoreError>;
    /// Unfinished tasks whose cancel was requested.
    async fn cancels_requested(&self) -> Result<Vec<TaskId>, StoreError>;
    /// The task's events in the order they were recorded.
    async fn task_events(&self, task_id: &TaskId) -> Result<Vec<TaskEvent>, StoreError>;
    /// Number of tasks in each status; every status is present, zero included.
    async fn count_by_status(&self) -> Result<BTreeMap<TaskStatus, u64>, StoreError>;

    /// Appends chunks in the order given; empty chunks are skipped.
    async fn append_logs(&self, chunks: Vec<LogChunk>) -> Result<(), StoreError>;
    async fn read_logs(&self, task_id: &TaskId, query: LogQuery) -> Result<LogPage, StoreError>;

    /// Inserts minutes, replacing any already stored for the same worker and start.
    async fn append_telemetry_minutes(&self, minutes: Vec<TelemetryMinute>) -> Result<(), StoreError>;
    /// One worker's minutes starting at or after `since_ms`, oldest first.
    async fn telemetry_minutes(
        &self,
        worker_id: &WorkerId,
        since_ms: i64,
    ) -> Result<Vec<TelemetryMinute>, StoreError>;
    /// Deletes minutes starting before `before_ms`.
    async fn prune_telemetry_minutes(&self, before_ms: i64) -> Result<(), StoreError>;
    /// Deletes every minute of a worker the master forgot.
    async fn forget_worker_minutes(&self, worker_id: &WorkerId) -> Result<(), StoreError>;

    /// Records a new token. [`StoreError::TokenExists`] if the id is taken.
    async fn insert_token(&self, token: &StoredToken) -> Result<(), StoreError>;
    /// Marks a token revoked (the first time counts). [`StoreError::NoSuchToken`] if unknown.
    async fn revoke_token(&self, id: &str, at_ms: i64) -> Result<(), StoreError>;
    /// Every token, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<StoredToken>, StoreError>;
    /// Appends audit records in the order given.
    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<(), StoreError>;
    /// At most `limit` records, newest first, with a `seq` below `before` when given.
    async fn list_audit(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;

    /// Flushes queued writes and stops accepting new ones; later calls fail with
    /// [`StoreError::Closed`]. Calling it twice is harmless.
    async fn close(&self);
}
