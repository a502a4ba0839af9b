//! The embedded store: one SQLite file in WAL mode, one writer thread, a few read connections.

mod auth;
mod logs;
mod read;
mod rows;
mod writer;

pub use logs::LOG_ROW_OVERHEAD;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use cloudai_domain::{Task, TaskEvent, TaskId, TaskStatus, WorkerId};
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use self::rows::TaskRow;
use self::writer::{Msg, WriteOp, WriterConfig};
use crate::{
    AuditRecord, LogChunk, LogPage, LogQuery, Store, StoreConfig, StoreError, StoredToken, TaskFilter,
    TelemetryMinute, migrations,
};

/// The SQLite [`Store`]. Dropping it finishes the queued writes and stops the writer thread
/// (blocking briefly); prefer [`Store::close`] in async code.
pub struct SqliteStore {
    tx: mpsc::Sender<Msg>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    readers: Arc<ReadPool>,
    closed: Arc<AtomicBool>,
    path: PathBuf,
    /// Held while the store is open: one master per database.
    lock: Mutex<Option<DataLock>>,
}

/// An exclusive lock on `<database>.lock`, which holds the owner's pid for the next one to name.
struct DataLock {
    /// The lock lives as long as the open file.
    _file: std::fs::File,
}

impl DataLock {
    fn take(db: &Path) -> Result<Self, StoreError> {
        use std::io::{Read, Seek, Write};
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        let path = PathBuf::from(name);
        let io = |source| StoreError::Io { path: path.clone(), source };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let holder = file.read_to_string(&mut pid).ok().and_then(|_| pid.trim().parse().ok());
                return Err(StoreError::Locked { path: db.to_path_buf(), holder });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(e)),
        }
        file.set_len(0).and_then(|()| file.rewind()).map_err(io)?;
        write!(file, "{}", std::process::id()).and_then(|()| file.flush()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

/// A file that exists but is empty, or holds no schema at all, lost its data (a new file is
/// created by `open`, not found empty).
fn refuse_empty(path: &Path, config: &StoreConfig) -> Result<(), StoreError> {
    if config.init {
        return Ok(());
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.len() == 0 => Err(StoreError::Empty { path: path.to_path_buf() }),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io { path: path.to_path_buf(), source }),
    }
}

/// Parses a `DATABASE_URL` of the SQLite form: `sqlite:///abs/path.db`, `sqlite://rel/path.db`
/// (or `sqlite:path.db`). Options after `?` (sqlx's `mode=rwc`) are ignored: the file is
/// always created when missing.
pub fn sqlite_path_from_url(url: &str) -> Result<PathBuf, StoreError> {
    let unsupported = |reason| StoreError::UnsupportedUrl { url: url.to_string(), reason };
    let Some((scheme, rest)) = url.split_once(':') else {
        return Err(unsupported("expected sqlite://PATH"));
    };
    match scheme.to_ascii_lowercase().as_str() {
        "sqlite" => {}
        "postgres" | "postgresql" => {
            return Err(unsupported("PostgreSQL is not built into this binary yet; use sqlite://PATH"));
        }
        _ => return Err(unsupported("unknown scheme; expected sqlite://PATH")),
    }
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split_once('?').map_or(rest, |(path, _)| path);
    if path.is_empty() {
        return Err(unsupported("no file path after sqlite://"));
    }
    if path == ":memory:" {
        return Err(unsupported("in-memory databases are not supported: the store needs a file"));
    }
    Ok(PathBuf::from(path))
}

fn open_connection(path: &Path, writer: bool, busy_timeout: Duration) -> Result<Connection, StoreError> {
    let flags =
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags)?;
    conn.busy_timeout(busy_timeout)?;
    conn.set_prepared_statement_cache_capacity(64);
    if writer {
        // WAL: readers see the last commit and never block the writer (nor it them).
        let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(mode, path = %path.display(), "sqlite refused WAL mode; writes will be slower");
        }
        // In WAL, NORMAL survives a process crash (SIGKILL) but not power loss: see writer.rs.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
    } else {
        // A read connection must never write, even by mistake.
        conn.pragma_update(None, "query_only", true)?;
    }
    Ok(conn)
}

/// Read connections, each used by one blocking read at a time.
struct ReadPool {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl ReadPool {
    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        // Take a free connection if any, else wait for ours. A poisoned lock only means a read
        // panicked; the connection itself is still usable (its transaction rolled back).
        let guard = (0..n)
            .find_map(|i| self.conns[(start + i) % n].try_lock().ok())
            .unwrap_or_else(|| self.conns[start].lock().unwrap_or_else(PoisonError::into_inner));
        let mut guard = guard;
        f(&mut guard)
    }
}

impl SqliteStore {
    /// Opens (creating the file and its folder if needed) and migrates the database, then
    /// starts the writer thread. Blocking: call at start-up or in `spawn_blocking`.
    pub fn open(path: &Path, config: StoreConfig) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|source| StoreError::Io { path: parent.to_path_buf(), source })?;
        }
        let lock = DataLock::take(path)?;
        refuse_empty(path, &config)?;
        let mut conn = open_connection(path, true, config.busy_timeout)?;
        migrations::migrate(&mut conn)?;
        let conns = (0..config.read_connections.max(1))
            .map(|_| open_connection(path, false, config.busy_timeout).map(Mutex::new))
            .collect::<Result<Vec<_>, _>>()?;
        let (tx, rx) = mpsc::channel(config.write_queue.max(1));
        let writer_config = WriterConfig {
            max_batch_ops: config.max_batch_ops,
            max_log_bytes_per_task: config.max_log_bytes_per_task,
        };
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer::run(conn, rx, writer_config))
            .map_err(|source| StoreError::Io { path: path.to_path_buf(), source })?;
        tracing::info!(path = %path.display(), "store opened");
        Ok(Self {
            tx,
            writer: Mutex::new(Some(handle)),
            readers: Arc::new(ReadPool { conns, next: AtomicUsize::new(0) }),
            closed: Arc::new(AtomicBool::new(false)),
            path: path.to_path_buf(),
            lock: Mutex::new(Some(lock)),
        })
    }

    /// Opens the database named by a `DATABASE_URL` (see [`sqlite_path_from_url`]).
    pub fn open_url(url: &str, config: StoreConfig) -> Result<Self, StoreError> {
        Self::open(&sqlite_path_from_url(url)?, config)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write and waits for its commit. If the caller stops waiting, the write may
    /// still be committed.
    async fn write(&self, op: WriteOp) -> Result<(), StoreError> {
        let (reply, committed) = oneshot::channel();
        self.tx.send(Msg::Op(op, reply)).await.map_err(|_| StoreError::Closed)?;
        committed.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(StoreError::Closed);
        }
        let pool = Arc::clone(&self.readers);
        match tokio::task::spawn_blocking(move || pool.with(f)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        // Dropping the only sender lets the writer drain the queue and stop.
        let (unused, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.tx, unused));
        let handle = self.writer.get_mut().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_task(&self, task: &Task, event: &TaskEvent) -> Result<(), StoreError> {
        self.write(WriteOp::InsertTask(Box::new(TaskRow::encode(task)?), event.clone())).await
    }

    async fn update_task(&self, task: &Task, event: &TaskEvent) -> Result<(), StoreError> {
        self.write(WriteOp::UpdateTask(Box::new(TaskRow::encode(task)?), event.clone())).await
    }

    async fn get_task(&self, task_id: &TaskId) -> Result<Option<Task>, StoreError> {
        let task_id = task_id.clone();
        self.read(move |c| read::get_task(c, &task_id)).await
    }

    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
        let filter = filter.clone();
        self.read(move |c| read::list_tasks(c, &filter)).await
    }

    async fn unfinished_tasks(&self) -> Result<Vec<Task>, StoreError> {
        self.read(|c| read::unfinished_tasks(c)).await
    }

    async fn task_events(&self, task_id: &TaskId) -> Result<Vec<TaskEvent>, StoreError> {
        let task_id = task_id.clone();
        self.read(move |c| read::task_events(c, &task_id)).await
    }

    async fn count_by_status(&self) -> Result<BTreeMap<TaskStatus, u64>, StoreError> {
        self.read(|c| read::count_by_status(c)).await
    }

    async fn append_logs(&self, chunks: Vec<LogChunk>) -> Result<(), StoreError> {
        if chunks.iter().all(|c| c.data.is_empty()) {
            return Ok(());
        }
        self.write(WriteOp::AppendLogs(chunks)).await
    }

    async fn read_logs(&self, task_id: &TaskId, query: LogQuery) -> Result<LogPage, StoreError> {
        let task_id = task_id.clone();
        self.read(move |c| logs::read(c, &task_id, query)).await
    }

    async fn append_telemetry_minutes(&self, minutes: Vec<TelemetryMinute>) -> Result<(), StoreError> {
        if minutes.is_empty() {
            return Ok(());
        }
        self.write(WriteOp::AppendMinutes(minutes)).await
    }

    async fn telemetry_minutes(
        &self,
        worker_id: &WorkerId,
        since_ms: i64,
    ) -> Result<Vec<TelemetryMinute>, StoreError> {
        let worker_id = worker_id.clone();
        self.read(move |c| read::telemetry_minutes(c, &worker_id, since_ms)).await
    }

    async fn prune_telemetry_minutes(&self, before_ms: i64) -> Result<(), StoreError> {
        self.write(WriteOp::PruneMinutes { before_ms }).await
    }

    async fn request_cancel(&self, task_id: &TaskId) -> Result<(), StoreError> {
        self.write(WriteOp::RequestCancel(task_id.clone())).await
    }

    async fn cancels_requested(&self) -> Result<Vec<TaskId>, StoreError> {
        self.read(|c| read::cancels_requested(c)).await
    }

    async fn forget_worker_minutes(&self, worker_id: &WorkerId) -> Result<(), StoreError> {
        self.write(WriteOp::ForgetWorkerMinutes(worker_id.clone())).await
    }

    async fn insert_token(&self, token: &StoredToken) -> Result<(), StoreError> {
        self.write(WriteOp::InsertToken(token.clone())).await
    }

    async fn revoke_token(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        self.write(WriteOp::RevokeToken { id: id.to_string(), at_ms }).await
    }

    async fn list_tokens(&self) -> Result<Vec<StoredToken>, StoreError> {
        self.read(|c| auth::list_tokens(c)).await
    }

    async fn append_audit(&self, records: Vec<AuditRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        self.write(WriteOp::AppendAudit(records)).await
    }

    async fn list_audit(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |c| auth::list_audit(c, before, limit)).await
    }

    async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let (done, stopped) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).await.is_ok() {
            // Answered after the queued writes are committed and the connection is closed.
            let _ = stopped.await;
        }
        let handle = self.writer.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(handle) = handle {
            match tokio::task::spawn_blocking(move || handle.join()).await {
                Ok(Ok(())) => {}
                _ => tracing::error!("store writer thread panicked"),
            }
        }
        // Only now may another master open it.
        drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner).take());
        tracing::info!(path = %self.path.display(), "store closed");
    }
}
