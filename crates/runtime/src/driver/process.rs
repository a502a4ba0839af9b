//! Runs a task as a plain process in its own process group.
//!
//! The group is the unit of control: stop and kill signal the whole group, and
//! when the main process exits the rest of the group is killed too, so nothing
//! a task started outlives it (and its output pipes close).

use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::Arc;

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tracing::debug;

use super::{Driver, DriverError, Execution, ExitStatus, Launch, OutputChunk, TaskControl};
use cloudai_domain::LogStream;
use cloudai_domain::time::unix_ms;

/// Largest chunk read from a pipe at once.
const READ_BYTES: usize = 32 * 1024;
/// Chunks waiting for the runtime; the runtime drains them quickly, so this only smooths bursts.
const OUTPUT_CHANNEL: usize = 64;

/// The `process` driver: `command` as argv (no shell), stdin null.
#[derive(Clone, Debug, Default)]
pub struct ProcessDriver;

impl ProcessDriver {
    pub fn new() -> Self {
        Self
    }
}

#[async_trait]
impl Driver for ProcessDriver {
    async fn start(&self, launch: &Launch) -> Result<Execution, DriverError> {
        let (program, args) = launch.command.split_first().ok_or(DriverError::EmptyCommand)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(&launch.env)
            .env("CUDA_VISIBLE_DEVICES", launch.cuda_visible_devices())
            .env("CLOUDAI_TASK_ID", launch.task_id.as_str())
            .current_dir(&launch.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let spawn_error = |source| DriverError::Spawn { program: program.clone(), source };
        let mut child = command.spawn().map_err(|e| spawn_error(plain_io_error(e)))?;
        // A freshly spawned, unreaped child always has an id; the group id equals it (process_group(0)).
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| spawn_error(std::io::Error::other("the process has no id")))?;

        let (tx, output) = mpsc::channel(OUTPUT_CHANNEL);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(pump(stdout, LogStream::Stdout, tx.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(pump(stderr, LogStream::Stderr, tx));
        }
        debug!(task_id = %launch.task_id, pgid = pgid.as_raw(), "process started");
        Ok(Execution {
            output,
            exit: Box::pin(wait(child, pgid)),
            control: Arc::new(GroupControl { pgid }),
            handle: pgid.as_raw().to_string(),
        })
    }
}

/// Waits for the group leader, then kills what is left of its group.
async fn wait(mut child: Child, pgid: Pid) -> Result<ExitStatus, DriverError> {
    // If this future is dropped before the leader is reaped, the guard kills the group;
    // the unreaped leader keeps the group id from being reused until then.
    let mut guard = GroupGuard { pgid, armed: true };
    let status = child.wait().await;
    // Nothing may outlive the task's main process: leftovers would hold its pipes open.
    // The leader is reaped, but the id cannot be reused while group members remain.
    signal_group(pgid, Signal::SIGKILL).ok();
    guard.armed = false;
    let status = status.map_err(DriverError::Wait)?;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ok(ExitStatus::Exited(code)),
        (None, Some(signal)) => Ok(ExitStatus::Signaled(signal)),
        (None, None) => {
            Err(DriverError::Wait(std::io::Error::other(format!("unknown exit status {status}"))))
        }
    }
}

struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::SIGKILL).ok();
        }
    }
}

struct GroupControl {
    pgid: Pid,
}

#[async_trait]
impl TaskControl for GroupControl {
    async fn terminate(&self) -> Result<(), DriverError> {
        signal_group(self.pgid, Signal::SIGTERM)
    }

    async fn kill(&self) -> Result<(), DriverError> {
        signal_group(self.pgid, Signal::SIGKILL)
    }
}

/// Signals every process of the group; a group that is already gone is fine.
fn signal_group(pgid: Pid, signal: Signal) -> Result<(), DriverError> {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(DriverError::Signal(e)),
    }
}

/// Forwards one pipe's bytes until end of file (or the runtime stopped listening).
async fn pump(mut pipe: impl AsyncRead + Unpin, stream: LogStream, tx: mpsc::Sender<OutputChunk>) {
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                debug!(stream = stream.as_str(), error = %e, "cannot read task output");
                return;
            }
        };
        let chunk = OutputChunk { stream, data: buf[..n].to_vec(), timestamp_ms: unix_ms() };
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

/// "No such file or directory" rather than "No such file or directory (os error 2)":
/// the message goes to people reading a task's error.
fn plain_io_error(e: std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::new(e.kind(), Errno::from_raw(code).desc()),
        None => e,
    }
}
