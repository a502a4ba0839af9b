//! Runtime configuration. Every interval is configuration so tests can shrink it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloudai_domain::WorkerId;

use crate::driver::Driver;

/// Build with [`RuntimeConfig::new`] (production defaults) and adjust fields.
#[derive(Clone)]
pub struct RuntimeConfig {
    pub worker_id: WorkerId,
    /// Tasks run in `<data_dir>/tasks/<task_id>/`.
    pub data_dir: PathBuf,
    /// Enabled drivers, each under the name tasks ask for.
    pub drivers: Vec<(cloudai_domain::Driver, Arc<dyn Driver>)>,
    /// Time between SIGTERM and SIGKILL when a cancel says 0, and at worker shutdown.
    pub default_grace: Duration,
    /// A log batch is sent this long after its first chunk at the latest…
    pub log_batch_interval: Duration,
    /// …or as soon as it holds this many bytes.
    pub log_batch_bytes: usize,
    /// Output kept per task while the master is unreachable; past it the oldest is dropped.
    pub log_buffer_bytes: usize,
    /// Keep task working folders after the task ends (debugging).
    pub keep_workdirs: bool,
    /// Longest wait between delivery attempts to the master.
    pub max_retry_backoff: Duration,
    /// Deadline of one call to the master.
    pub call_timeout: Duration,
    /// At shutdown, time given to reports and logs to reach the master after tasks stopped.
    pub shutdown_flush_timeout: Duration,
}

impl RuntimeConfig {
    /// Production defaults.
    pub fn new(worker_id: WorkerId, data_dir: impl Into<PathBuf>) -> Self {
        Self {
            worker_id,
            data_dir: data_dir.into(),
            drivers: Vec::new(),
            default_grace: Duration::from_secs(10),
            log_batch_interval: Duration::from_millis(100),
            log_batch_bytes: 256 * 1024,
            log_buffer_bytes: 16 * 1024 * 1024,
            keep_workdirs: false,
            max_retry_backoff: Duration::from_secs(5),
            call_timeout: Duration::from_secs(15),
            shutdown_flush_timeout: Duration::from_secs(5),
        }
    }

    /// Where task working folders are made: `<data_dir>/tasks`.
    pub fn tasks_dir(&self) -> PathBuf {
        self.data_dir.join("tasks")
    }

    /// Enables `driver` for the tasks that ask for `name`.
    pub fn with_driver(mut self, name: cloudai_domain::Driver, driver: Arc<dyn Driver>) -> Self {
        self.drivers.push((name, driver));
        self
    }
}

impl fmt::Debug for RuntimeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RuntimeConfig")
            .field("worker_id", &self.worker_id)
            .field("data_dir", &self.data_dir)
            .field("drivers", &self.drivers.iter().map(|(name, _)| name).collect::<Vec<_>>())
            .field("default_grace", &self.default_grace)
            .field("log_batch_interval", &self.log_batch_interval)
            .field("log_batch_bytes", &self.log_batch_bytes)
            .field("log_buffer_bytes", &self.log_buffer_bytes)
            .field("keep_workdirs", &self.keep_workdirs)
            .field("max_retry_backoff", &self.max_retry_backoff)
            .field("call_timeout", &self.call_timeout)
            .field("shutdown_flush_timeout", &self.shutdown_flush_timeout)
            .finish()
    }
}
