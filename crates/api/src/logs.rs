//! `GET /api/tasks/{id}/logs`: a task's output so far, or (`follow=true`) one NDJSON
//! [`LogChunk`] per line until the task ends.

use cloudai_domain::{TaskId, TaskStatus};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Which output stream a chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

/// A piece of a task's output. In a follow stream, each line is one of these.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LogChunk {
    /// Counts from 1 per task and never repeats.
    pub seq: u64,
    pub stream: LogStream,
    /// The output as text (invalid UTF-8 replaced).
    pub data: String,
    /// Unix milliseconds.
    pub time_ms: i64,
}

impl LogChunk {
    /// A chunk from stored bytes; invalid UTF-8 becomes U+FFFD.
    pub fn new(seq: u64, stream: LogStream, data: &[u8], time_ms: i64) -> Self {
        Self { seq, stream, data: String::from_utf8_lossy(data).into_owned(), time_ms }
    }
}

/// The answer without `follow`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskLogs {
    #[schema(value_type = String)]
    pub task_id: TaskId,
    #[schema(value_type = crate::schema::TaskStatusSchema)]
    pub status: TaskStatus,
    /// Oldest first; with `tail=N`, the chunks holding the last N lines (the first one cut).
    pub logs: Vec<LogChunk>,
    /// Output the master deleted to respect its per-task bound.
    pub dropped_bytes: u64,
    /// Despite its name, the seq of the last chunk read (0: no output yet).
    pub next_seq: u64,
}
