//! Task drivers: the one place that knows how a task actually runs (a process
//! group, a Docker container).
//!
//! A driver turns a [`Launch`] into an [`Execution`]: a stream of output, a
//! future that resolves with the exit, and a [`TaskControl`] to stop it. The
//! runtime owns everything else (status reports, log shipping, cancellation
//! timing), so a new driver only has to implement these three pieces.

pub mod docker;
pub mod process;
pub mod user;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use cloudai_domain::{LogStream, TaskId};
use tokio::sync::mpsc;

pub use self::docker::{DockerDriver, DockerOptions};
pub use self::process::ProcessDriver;
pub use self::user::{DEFAULT_TASK_USER, TaskUser, TaskUserError};

/// How long a task's output may stay open after its main process exited.
pub(crate) const OUTPUT_DRAIN: std::time::Duration = std::time::Duration::from_secs(2);

/// Everything a driver needs to start one attempt of a task.
#[derive(Clone, Debug)]
pub struct Launch {
    pub task_id: TaskId,
    /// The worker running the task (the docker driver labels its containers with it).
    pub worker_id: String,
    pub attempt: u32,
    /// Container image; empty for the process driver.
    pub image: String,
    /// argv; never interpreted by a shell.
    pub command: Vec<String>,
    /// The task's own variables; drivers add `CLOUDAI_TASK_ID` and the GPUs
    /// (`CUDA_VISIBLE_DEVICES` for processes, `NVIDIA_VISIBLE_DEVICES` for containers).
    pub env: BTreeMap<String, String>,
    pub gpu_indices: Vec<u32>,
    pub cpu_required: f64,
    pub memory_required_mb: u64,
    /// The task's working folder (`<data_dir>/tasks/<task_id>/`), already created.
    pub workdir: PathBuf,
}

impl Launch {
    /// The value of `CUDA_VISIBLE_DEVICES`: assigned GPU indices joined by commas.
    pub fn cuda_visible_devices(&self) -> String {
        self.gpu_indices.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
    }
}

/// Bytes as the task wrote them; not split on lines.
#[derive(Clone, Debug)]
pub struct OutputChunk {
    pub stream: LogStream,
    pub data: Vec<u8>,
    /// Unix milliseconds when the chunk was read.
    pub timestamp_ms: i64,
}

/// How a task's main process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
    /// Killed for going over its memory limit; the exit code it ended with.
    OutOfMemory(i32),
}

/// Resolves once, when the task has ended.
pub type ExitFuture = Pin<Box<dyn Future<Output = Result<ExitStatus, DriverError>> + Send>>;

/// A started task.
pub struct Execution {
    /// Output as produced; closes once every writer of the task's streams is gone.
    pub output: mpsc::Receiver<OutputChunk>,
    pub exit: ExitFuture,
    pub control: Arc<dyn TaskControl>,
    /// Driver-specific handle (process group id, container id). Seam for
    /// adopting tasks after a worker restart: persisted, then passed to [`Driver::adopt`].
    pub handle: String,
}

impl fmt::Debug for Execution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Execution").field("handle", &self.handle).finish_non_exhaustive()
    }
}

/// Resource use of a running task, for heartbeats.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

/// Stops a running task. Signalling a task that has already ended is not an error.
#[async_trait]
pub trait TaskControl: Send + Sync + 'static {
    /// Asks the task to stop (SIGTERM to the process group, `docker stop`'s first step).
    async fn terminate(&self) -> Result<(), DriverError>;
    /// Ends the task at once (SIGKILL to the process group).
    async fn kill(&self) -> Result<(), DriverError>;
    /// Current resource use, when the driver can measure it.
    fn usage(&self) -> Option<Usage> {
        None
    }
}

#[async_trait]
pub trait Driver: Send + Sync + 'static {
    /// Gets what the task needs before it can start (the docker driver pulls a missing
    /// image), telling `progress` what happens, line by line. Errors fail the task.
    async fn prepare(
        &self,
        launch: &Launch,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), DriverError> {
        let _ = (launch, progress);
        Ok(())
    }

    /// Starts the task. Returns once it runs (or failed to start).
    async fn start(&self, launch: &Launch) -> Result<Execution, DriverError>;

    /// Re-attaches to a task that outlived a previous worker process, from the
    /// [`Execution::handle`] it had. A task that has ended since resolves its exit at once.
    async fn adopt(&self, launch: &Launch, handle: &str) -> Result<Execution, DriverError> {
        let _ = (launch, handle);
        Err(DriverError::AdoptUnsupported)
    }

    /// Tasks of `worker_id` that outlived a previous worker process (running or ended
    /// but not cleaned up), to pass to [`Driver::adopt`]. None for drivers whose tasks
    /// cannot outlive the worker.
    async fn leftovers(&self, worker_id: &str) -> Result<Vec<Leftover>, DriverError> {
        let _ = worker_id;
        Ok(Vec::new())
    }
}

/// A task found by [`Driver::leftovers`].
#[derive(Clone, Debug)]
pub struct Leftover {
    pub task_id: TaskId,
    pub attempt: u32,
    /// What [`Execution::handle`] was.
    pub handle: String,
    pub image: String,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the task has an empty command")]
    EmptyCommand,
    #[error("cannot start {program:?}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make the working folder {dir} the task's")]
    Workdir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot wait for the task")]
    Wait(#[source] std::io::Error),
    #[error("cannot signal the task")]
    Signal(#[source] nix::Error),
    #[error("the task has no image")]
    NoImage,
    #[error("the worker restarted before the container started")]
    NeverStarted,
    #[error("this driver cannot adopt running tasks")]
    AdoptUnsupported,
    #[error("cannot reach the Docker engine at {addr}")]
    EngineUnreachable {
        addr: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// `message` is the registry's (or engine's) own explanation.
    #[error("cannot pull image {image:?}: {message}")]
    Pull { image: String, message: String },
    #[error("docker: cannot {action}")]
    Docker {
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// An error with its sources, `outer: inner: innermost`, as reported to the master.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}
