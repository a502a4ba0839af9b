//! Typed identifiers, so a worker id can never be passed where a task id is expected.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A worker's stable id (`WORKER_ID`, by default the host name).
///
/// Cheap to clone: ids are copied into every event and telemetry record.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(Arc<str>);

/// Longest id accepted from the network; longer ones are rejected, not truncated.
pub const MAX_ID_LEN: usize = 128;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    #[error("id must not be empty")]
    Empty,
    #[error("id is longer than {MAX_ID_LEN} bytes")]
    TooLong,
    #[error("id may contain only letters, digits, '-', '_', '.' and ':' (got {0:?})")]
    BadChar(char),
}

impl WorkerId {
    /// Validates an id coming from a user or the network.
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        if raw.is_empty() {
            return Err(IdError::Empty);
        }
        if raw.len() > MAX_ID_LEN {
            return Err(IdError::TooLong);
        }
        // Bytes first (every heartbeat carries an id); the char only to name a bad one.
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':');
        if !raw.bytes().all(allowed) {
            let bad = raw.chars().find(|c| !u8::try_from(*c).is_ok_and(allowed)).unwrap_or('\0');
            return Err(IdError::BadChar(bad));
        }
        Ok(Self(Arc::from(raw)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A task's id: a UUIDv7, so ids sort by submission time.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskId(Arc<str>);

impl TaskId {
    /// A fresh, time-ordered id.
    pub fn generate() -> Self {
        Self(Arc::from(uuid::Uuid::now_v7().to_string()))
    }

    /// Validates an id coming from a user or the network (same alphabet as worker ids).
    pub fn parse(raw: &str) -> Result<Self, IdError> {
        WorkerId::parse(raw).map(|w| Self(w.0))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_host_names_and_rejects_junk() {
        assert!(WorkerId::parse("worker-1").is_ok());
        assert!(WorkerId::parse("gpu-node.example.com").is_ok());
        assert_eq!(WorkerId::parse(""), Err(IdError::Empty));
        assert_eq!(WorkerId::parse("a b"), Err(IdError::BadChar(' ')));
        assert_eq!(WorkerId::parse("gpu-é"), Err(IdError::BadChar('é')), "named as a char, not a byte");
        assert_eq!(WorkerId::parse("a:b_c.d-9"), Ok(WorkerId(Arc::from("a:b_c.d-9"))));
        assert_eq!(WorkerId::parse(&"x".repeat(200)), Err(IdError::TooLong));
        // Control characters (from a path's %00 or %1B, or a message) never make an id.
        assert_eq!(TaskId::parse("a\0b"), Err(IdError::BadChar('\0')));
        assert_eq!(WorkerId::parse("w\u{1b}[31m"), Err(IdError::BadChar('\u{1b}')));
        let a = TaskId::generate();
        assert_eq!(TaskId::parse(a.as_str()), Ok(a));
    }
}
