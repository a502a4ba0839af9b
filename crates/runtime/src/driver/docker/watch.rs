//! A started (or adopted) container: its output, its exit, its resource use, and
//! the signals that stop it. Removal happens once it has ended and its output is read.

use std::sync::Arc;

use async_trait::async_trait;
use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerStatsResponse;
use bollard::query_parameters::{
    KillContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder, StatsOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

use crate::driver::{DriverError, Execution, ExitStatus, OUTPUT_DRAIN, OutputChunk, TaskControl, Usage};
use cloudai_domain::LogStream;
use cloudai_domain::time::unix_ms;

/// Chunks waiting for the runtime; the runtime drains them quickly, so this only smooths bursts.
const OUTPUT_CHANNEL: usize = 64;

/// Follows container `id`: output from `logs_since` (unix seconds, 0: the beginning).
pub(super) fn execution(docker: Docker, id: String, logs_since: i32, keep: bool) -> Execution {
    let (tx, output) = mpsc::channel(OUTPUT_CHANNEL);
    let logs_done = CancellationToken::new();
    tokio::spawn(pump_logs(docker.clone(), id.clone(), logs_since, tx, logs_done.clone()));
    let usage = Arc::new(Mutex::new(None));
    let stats_stop = CancellationToken::new();
    tokio::spawn(sample_stats(docker.clone(), id.clone(), usage.clone(), stats_stop.clone()));
    let exit = wait(docker.clone(), id.clone(), keep, logs_done, stats_stop.drop_guard());
    Execution {
        output,
        exit: Box::pin(exit),
        control: Arc::new(ContainerControl { docker, id: id.clone(), usage }),
        handle: id,
    }
}

/// Waits for the container to stop, then for its output, then removes it (unless `keep`).
/// Dropped early (the worker dies), it leaves the container alone for a later adoption.
async fn wait(
    docker: Docker,
    id: String,
    keep: bool,
    logs_done: CancellationToken,
    _stats: DropGuard,
) -> Result<ExitStatus, DriverError> {
    let options = WaitContainerOptionsBuilder::default().condition("not-running").build();
    let waited = docker.wait_container(&id, Some(options)).next().await;
    let mut code = match waited {
        Some(Ok(response)) => response.status_code,
        // bollard turns a non-zero exit into an error.
        Some(Err(DockerError::DockerContainerWaitError { code, .. })) => code,
        Some(Err(source)) => {
            return Err(DriverError::Docker { action: "wait for the container".to_owned(), source });
        }
        None => {
            let error = std::io::Error::other("the engine ended the wait without an exit code");
            return Err(DriverError::Wait(error));
        }
    };
    let mut oom_killed = false;
    match docker.inspect_container(&id, None).await {
        Ok(inspect) => {
            if let Some(state) = inspect.state {
                oom_killed = state.oom_killed.unwrap_or(false);
                code = state.exit_code.unwrap_or(code);
            }
        }
        Err(e) => warn!(container = %id, error = %e, "cannot inspect the ended container"),
    }
    // The log stream ends with the container; let it deliver what it still holds.
    if tokio::time::timeout(OUTPUT_DRAIN, logs_done.cancelled()).await.is_err() {
        debug!(container = %id, "container output still open after it stopped");
    }
    if !keep {
        remove(&docker, &id).await;
    }
    let code = i32::try_from(code).unwrap_or(i32::MAX);
    Ok(if oom_killed { ExitStatus::OutOfMemory(code) } else { ExitStatus::Exited(code) })
}

/// Force-removes a container; one already gone is fine.
pub(super) async fn remove(docker: &Docker, id: &str) {
    let options = RemoveContainerOptionsBuilder::default().force(true).build();
    match docker.remove_container(id, Some(options)).await {
        Ok(()) => debug!(container = %id, "container removed"),
        Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(e) => warn!(container = %id, error = %e, "cannot remove the container"),
    }
}

/// Forwards the container's output until it stops (or the runtime stopped listening).
async fn pump_logs(
    docker: Docker,
    id: String,
    since: i32,
    tx: mpsc::Sender<OutputChunk>,
    done: CancellationToken,
) {
    let _done = done.drop_guard();
    let options = LogsOptionsBuilder::default()
        .follow(true)
        .stdout(true)
        .stderr(true)
        .timestamps(false)
        .since(since)
        .build();
    let mut logs = docker.logs(&id, Some(options));
    while let Some(item) = logs.next().await {
        let (stream, message) = match item {
            Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                (LogStream::Stdout, message)
            }
            Ok(LogOutput::StdErr { message }) => (LogStream::Stderr, message),
            Ok(LogOutput::StdIn { .. }) => continue,
            Err(e) => {
                debug!(container = %id, error = %e, "cannot read container output");
                return;
            }
        };
        let chunk = OutputChunk { stream, data: message.to_vec(), timestamp_ms: unix_ms() };
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

/// Keeps the latest resource use of the container, from one stats stream.
async fn sample_stats(docker: Docker, id: String, usage: Arc<Mutex<Option<Usage>>>, stop: CancellationToken) {
    let options = StatsOptionsBuilder::default().stream(true).build();
    let mut stats = docker.stats(&id, Some(options));
    loop {
        let item = tokio::select! {
            _ = stop.cancelled() => return,
            item = stats.next() => item,
        };
        match item {
            Some(Ok(sample)) => {
                if let Some(sampled) = to_usage(&sample) {
                    *usage.lock() = Some(sampled);
                }
            }
            Some(Err(e)) => {
                debug!(container = %id, error = %e, "container stats ended");
                return;
            }
            None => return,
        }
    }
}

/// CPU percent (100 = one core) as `docker stats` computes it; memory without the page cache.
fn to_usage(sample: &ContainerStatsResponse) -> Option<Usage> {
    let cpu = sample.cpu_stats.as_ref()?;
    let total = cpu.cpu_usage.as_ref()?.total_usage?;
    let pre = sample.precpu_stats.as_ref();
    let pre_total = pre.and_then(|p| p.cpu_usage.as_ref()?.total_usage).unwrap_or(0);
    let system = cpu.system_cpu_usage.unwrap_or(0);
    let pre_system = pre.and_then(|p| p.system_cpu_usage).unwrap_or(0);
    let cpus = cpu.online_cpus.filter(|n| *n > 0).map_or(1.0, f64::from);
    let cpu_percent = if pre_system > 0 && system > pre_system && total >= pre_total {
        (total - pre_total) as f64 / (system - pre_system) as f64 * cpus * 100.0
    } else {
        0.0
    };
    let memory = sample.memory_stats.as_ref();
    let used = memory.and_then(|m| m.usage).unwrap_or(0);
    let cache = memory
        .and_then(|m| m.stats.as_ref())
        .and_then(|s| s.get("inactive_file").or_else(|| s.get("total_inactive_file")).copied())
        .unwrap_or(0);
    Some(Usage { cpu_percent, memory_bytes: used.saturating_sub(cache) })
}

struct ContainerControl {
    docker: Docker,
    id: String,
    usage: Arc<Mutex<Option<Usage>>>,
}

impl ContainerControl {
    async fn signal(&self, signal: &str) -> Result<(), DriverError> {
        let options = KillContainerOptionsBuilder::default().signal(signal).build();
        match self.docker.kill_container(&self.id, Some(options)).await {
            Ok(()) => Ok(()),
            // Gone, or no longer running: nothing to stop.
            Err(DockerError::DockerResponseServerError { status_code: 404 | 409, .. }) => Ok(()),
            Err(source) => {
                Err(DriverError::Docker { action: format!("send {signal} to the container"), source })
            }
        }
    }
}

#[async_trait]
impl TaskControl for ContainerControl {
    /// `docker stop`'s first step: SIGTERM; the runtime kills after the grace period.
    async fn terminate(&self) -> Result<(), DriverError> {
        self.signal("SIGTERM").await
    }

    async fn kill(&self) -> Result<(), DriverError> {
        self.signal("SIGKILL").await
    }

    fn usage(&self) -> Option<Usage> {
        *self.usage.lock()
    }
}
