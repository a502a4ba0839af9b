use std::path::PathBuf;
use std::sync::Arc;

use cloudai_domain::TaskId;

/// Why a store operation failed. Messages never repeat their source: print the chain (`{:#}`
/// with anyhow, or walk `source()`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error")]
    Sqlite(#[from] rusqlite::Error),
    /// Taking the write lock or committing failed; every write of the batch gets this
    /// (shared) error and none of them was written.
    #[error("write transaction failed")]
    Transaction(#[source] Arc<rusqlite::Error>),
    #[error("i/o error at {}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A stored row cannot be decoded: the file was edited or damaged.
    #[error("corrupt row in table {table} (id {id}): {reason}")]
    Corrupt { table: &'static str, id: String, reason: String },
    #[error("cannot encode {what} for storage")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("unsupported DATABASE_URL {url:?}: {reason}")]
    UnsupportedUrl { url: String, reason: &'static str },
    #[error("schema migration failed: {0}")]
    Migration(String),
    #[error("task {0} does not exist")]
    NotFound(TaskId),
    #[error("task {0} already exists")]
    AlreadyExists(TaskId),
    #[error("token {0} already exists")]
    TokenExists(String),
    #[error("token {0} does not exist")]
    NoSuchToken(String),
    #[error("the store is closed")]
    Closed,
    /// Another process has the database open: two masters on one data folder would run
    /// tasks twice.
    #[error("{} is in use by another cloudai master{}; stop it or use another data folder", path.display(), holder.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    Locked { path: PathBuf, holder: Option<u32> },
    /// The database file exists but holds nothing: it was truncated or replaced, and
    /// starting on it would silently forget every task.
    #[error("{} exists but is empty (no schema, no tasks): it may have been truncated; restore it, or start with --init to begin with an empty store", path.display())]
    Empty { path: PathBuf },
}

impl StoreError {
    /// The disk (or filesystem) holding the database has no room: SQLite's `SQLITE_FULL`, or
    /// `ENOSPC` from our own I/O. Nothing was written; the same write succeeds once there is room.
    pub fn is_disk_full(&self) -> bool {
        fn sqlite_full(e: &rusqlite::Error) -> bool {
            e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
        }
        match self {
            StoreError::Sqlite(e) => sqlite_full(e),
            StoreError::Transaction(e) => sqlite_full(e),
            StoreError::Io { source, .. } => source.kind() == std::io::ErrorKind::StorageFull,
            _ => false,
        }
    }

    pub(crate) fn corrupt(table: &'static str, id: impl Into<String>, reason: impl ToString) -> Self {
        StoreError::Corrupt { table, id: id.into(), reason: reason.to_string() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_told_apart_from_sqlite_and_from_io() {
        let full =
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL), None);
        assert!(StoreError::Sqlite(full).is_disk_full());
        let enospc = std::io::Error::from_raw_os_error(28);
        assert!(StoreError::Io { path: "cloudai.db".into(), source: enospc }.is_disk_full());
        let busy =
            rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY), None);
        assert!(!StoreError::Transaction(Arc::new(busy)).is_disk_full());
        assert!(!StoreError::Closed.is_disk_full());
    }
}
