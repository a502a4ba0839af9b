//! Task output as workers ship it and the master keeps it.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ids::{TaskId, WorkerId};

/// Which output stream a log chunk came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Output of a task as shipped by its worker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogChunk {
    pub task_id: TaskId,
    pub stream: LogStream,
    pub data: Vec<u8>,
    /// Unix milliseconds.
    pub time_ms: i64,
}

/// Chunks a worker ships in one call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogBatch {
    pub worker_id: WorkerId,
    pub chunks: Vec<LogChunk>,
}
