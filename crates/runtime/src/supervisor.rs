//! One task's supervisor: starts it, moves its output into the log buffer, applies
//! stop requests (terminate, then kill after the grace period), and reports the end
//! only after the task's output has been shipped.

use std::path::Path;
use std::sync::Arc;

use cloudai_domain::time::unix_ms;
use cloudai_domain::{Interruption, LogStream, Outcome, RunStatus, TaskReport, TaskUpdate};
use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info, warn};

use crate::driver::{
    Driver, DriverError, Execution, ExitStatus, Launch, OUTPUT_DRAIN, OutputChunk, error_chain,
};
use crate::registry::{Inner, Phase};
use crate::shipper::{LogBuffer, Shipper};
use crate::stop::{StopReason, StopRequest, strongest};

pub(crate) struct Supervisor {
    pub inner: Arc<Inner>,
    pub launch: Launch,
    pub driver: Arc<dyn Driver>,
    /// A task left by a previous worker process, already re-attached: it is not started.
    pub adopted: Option<Execution>,
    pub reports: mpsc::UnboundedSender<TaskReport>,
    pub reporter: JoinHandle<()>,
    pub stops: mpsc::UnboundedReceiver<StopRequest>,
    /// Cancelled to drop the task's pending reports and output (stale task).
    pub discard: CancellationToken,
    /// The previous attempt of this task on this worker, still cleaning up.
    pub prev_done: Option<CancellationToken>,
    pub done: CancellationToken,
    /// Output of the task's preparation (an image pull), logged before its own output.
    pub prelude: Vec<String>,
}

impl Supervisor {
    pub(crate) async fn run(mut self) {
        if let Some(prev) = self.prev_done.take() {
            prev.cancelled().await;
        }
        match self.execute().await {
            Some(last) => {
                self.reports.send(last).ok();
            }
            None => self.discard.cancel(),
        }
        let Supervisor { inner, launch, reports, reporter, done, .. } = self;
        // The reporter ends once everything queued is delivered (or given up on).
        drop(reports);
        if let Err(e) = reporter.await {
            warn!(error = %e, "task reporter failed");
        }
        inner.set_phase(&launch.task_id, launch.attempt, Phase::Ending);
        if !inner.config.keep_workdirs {
            remove_workdir(&launch.workdir).await;
        }
        inner.finish(&launch.task_id, launch.attempt);
        done.cancel();
    }

    /// Runs the task to its end; returns its final report, or `None` when none is wanted.
    async fn execute(&mut self) -> Option<TaskReport> {
        let execution = match self.adopted.take() {
            Some(execution) => execution,
            None => match self.start().await {
                Ok(execution) => {
                    if self.launch.attempt > 1 {
                        // Every attempt's output lands in the one task log: mark where this begins.
                        let note = format!(
                            "attempt {} on worker {}",
                            self.launch.attempt, self.inner.config.worker_id
                        );
                        self.prelude.insert(0, note);
                    }
                    execution
                }
                Err(last) => return last,
            },
        };
        let running = Phase::Running { started_ms: unix_ms(), control: execution.control.clone() };
        self.inner.set_phase(&self.launch.task_id, self.launch.attempt, running);
        self.reports.send(self.report(TaskUpdate::status(RunStatus::Running))).ok();
        info!(handle = %execution.handle, "task running");

        let config = &self.inner.config;
        let buffer = Arc::new(LogBuffer::new(config.log_buffer_bytes));
        let shipper = Shipper {
            buffer: buffer.clone(),
            link: self.inner.link.clone(),
            worker_id: config.worker_id.clone(),
            task_id: self.launch.task_id.clone(),
            batch_interval: config.log_batch_interval,
            batch_bytes: config.log_batch_bytes,
            policy: self.inner.policy.clone(),
            give_up: self.discard.clone(),
        };
        let shipper = self.inner.tracker.spawn(shipper.run().instrument(Span::current()));
        if !self.prelude.is_empty() {
            let mut data = String::new();
            for line in self.prelude.drain(..) {
                data.push_str("[cloudai] ");
                data.push_str(&line);
                data.push('\n');
            }
            buffer.push(OutputChunk {
                stream: LogStream::Stderr,
                data: data.into_bytes(),
                timestamp_ms: unix_ms(),
            });
        }

        let (exit, stop) = self.watch(execution, &buffer).await;
        // Ended: no longer listed in heartbeats, though its final report may still be on its way.
        self.inner.set_phase(&self.launch.task_id, self.launch.attempt, Phase::Ending);
        let last = self.final_report(exit.map(Some), stop);
        buffer.close();
        if last.is_none() {
            self.discard.cancel();
        }
        // All of the task's output reaches the master before its final status.
        if let Err(e) = shipper.await {
            warn!(error = %e, "task log shipper failed");
        }
        last
    }

    /// Starts the task; `Err` holds the final report when it does not start.
    async fn start(&mut self) -> Result<Execution, Option<TaskReport>> {
        if let Err(e) = prepare_workdir(&self.launch.workdir).await {
            let error = format!("cannot create working folder {}: {e}", self.launch.workdir.display());
            warn!(error = %error, "task cannot start here: the worker's fault, not the task's");
            return Err(Some(self.interrupted(Interruption::Environment, error)));
        }
        if let Some(reason) = self.stop_before_start() {
            info!(?reason, "task stopped before it started");
            return Err(self.final_report(Ok(None), Some(reason)));
        }
        // Preparation (an image pull) is recorded on the task: its first and last lines
        // as events, every line in the task's output (shipped once the task runs).
        let mut lines: Vec<String> = Vec::new();
        let prepared = {
            let reports = self.reports.clone();
            let (inner, task_id, attempt) =
                (self.inner.clone(), self.launch.task_id.clone(), self.launch.attempt);
            let mut progress = |line: String| {
                if lines.is_empty() || line.starts_with("pulled image") {
                    reports.send(inner.report(&task_id, attempt, TaskUpdate::Progress(line.clone()))).ok();
                }
                if lines.len() < MAX_PREPARE_LINES {
                    lines.push(line);
                }
            };
            // A stop during a long pull ends the task now: dropping the pull abandons it.
            let stop_all = self.inner.stop_all.clone();
            tokio::select! {
                prepared = self.driver.prepare(&self.launch, &mut progress) => Ok(prepared),
                Some(request) = self.stops.recv() => Err(request.reason),
                _ = stop_all.cancelled() => Err(StopReason::Shutdown),
            }
        };
        let prepared = match prepared {
            Ok(prepared) => prepared,
            Err(reason) => {
                info!(?reason, "task stopped while being prepared");
                let stop = match self.stop_before_start() {
                    Some(later) => strongest(Some(reason), later),
                    None => reason,
                };
                return Err(self.final_report(Ok(None), Some(stop)));
            }
        };
        if let Err(e) = prepared {
            let error = error_chain(&e);
            if is_environment(&e) {
                warn!(error = %error, "task cannot be prepared here: the worker's fault, not the task's");
                return Err(Some(self.interrupted(Interruption::Environment, error)));
            }
            warn!(error = %error, "task failed to prepare");
            return Err(Some(self.failed(error)));
        }
        self.prelude = lines;
        if let Some(reason) = self.stop_before_start() {
            info!(?reason, "task stopped before it started");
            return Err(self.final_report(Ok(None), Some(reason)));
        }
        self.driver.start(&self.launch).await.map_err(|e| {
            let error = error_chain(&e);
            if is_environment(&e) {
                warn!(error = %error, "task cannot start here: the worker's fault, not the task's");
                Some(self.interrupted(Interruption::Environment, error))
            } else {
                warn!(error = %error, "task failed to start");
                Some(self.failed(error))
            }
        })
    }

    /// A stop that came while the task was queued: it then never starts.
    fn stop_before_start(&mut self) -> Option<StopReason> {
        let mut stop: Option<StopReason> = None;
        if self.inner.stop_all.is_cancelled() {
            stop = Some(StopReason::Shutdown);
        }
        while let Ok(request) = self.stops.try_recv() {
            stop = Some(strongest(stop, request.reason));
        }
        stop
    }

    /// Follows the running task until it has exited and its output is closed.
    async fn watch(
        &mut self,
        execution: Execution,
        buffer: &LogBuffer,
    ) -> (Result<ExitStatus, DriverError>, Option<StopReason>) {
        let Execution { mut output, mut exit, control, .. } = execution;
        let mut stop: Option<StopReason> = None;
        let mut kill_at: Option<Instant> = None;
        let mut output_open = true;
        let mut stops_open = true;
        let mut shutdown_seen = false;
        let default_grace = self.inner.config.default_grace;
        let stop_all = self.inner.stop_all.clone();

        let result = loop {
            let request = tokio::select! {
                result = &mut exit => break result,
                chunk = output.recv(), if output_open => {
                    match chunk {
                        Some(chunk) => buffer.push(chunk),
                        None => output_open = false,
                    }
                    continue;
                }
                request = self.stops.recv(), if stops_open => match request {
                    Some(request) => request,
                    None => {
                        stops_open = false;
                        continue;
                    }
                },
                _ = stop_all.cancelled(), if !shutdown_seen => {
                    shutdown_seen = true;
                    StopRequest { reason: StopReason::Shutdown, grace: default_grace }
                }
                _ = sleep_until(kill_at) => {
                    kill_at = None;
                    info!("grace period over; killing the task");
                    if let Err(e) = control.kill().await {
                        warn!(error = %error_chain(&e), "cannot kill the task");
                    }
                    continue;
                }
            };
            let first = stop.is_none();
            if let StopReason::Fenced(why) = &request.reason {
                // Said in the task's own log, where its user looks first.
                let line = format!("[cloudai] stopped by worker {}: {why}\n", self.inner.config.worker_id);
                buffer.push(OutputChunk {
                    stream: LogStream::Stderr,
                    data: line.into_bytes(),
                    timestamp_ms: unix_ms(),
                });
            }
            stop = Some(strongest(stop, request.reason));
            let at = Instant::now() + request.grace;
            kill_at = Some(kill_at.map_or(at, |k| k.min(at)));
            if first {
                info!(reason = ?stop, grace = ?request.grace, "stopping task");
                if let Err(e) = control.terminate().await {
                    warn!(error = %error_chain(&e), "cannot stop the task");
                }
            }
        };

        // The driver has already dealt with what the task left behind; only processes
        // that escaped it could still hold the output open.
        let drain_until = Instant::now() + OUTPUT_DRAIN;
        while output_open {
            tokio::select! {
                chunk = output.recv() => match chunk {
                    Some(chunk) => buffer.push(chunk),
                    None => output_open = false,
                },
                _ = tokio::time::sleep_until(drain_until) => {
                    warn!("task output still open after the task exited; not waiting for the rest");
                    break;
                }
            }
        }
        (result, stop)
    }

    /// What to tell the master about the end; `exit` is `Ok(None)` when the task never ran.
    fn final_report(
        &self,
        exit: Result<Option<ExitStatus>, DriverError>,
        stop: Option<StopReason>,
    ) -> Option<TaskReport> {
        let exit = match exit {
            Ok(exit) => exit,
            Err(e) if stop != Some(StopReason::Stale) => {
                let error = error_chain(&e);
                warn!(error = %error, "lost track of the task");
                return Some(self.failed(error));
            }
            Err(_) => None,
        };
        let code = exit.map(|exit| match exit {
            ExitStatus::Exited(code) => code,
            ExitStatus::Signaled(signal) => 128 + signal,
            ExitStatus::OutOfMemory(code) => code,
        });
        let (status, error) = match (stop, exit) {
            (Some(StopReason::Stale), _) => {
                info!(exit_code = ?code, "stale task stopped");
                return None;
            }
            (Some(StopReason::Cancel(reason)), _) => (RunStatus::Cancelled, reason),
            (Some(StopReason::Shutdown), _) => {
                info!(exit_code = ?code, "task stopped: the worker shuts down");
                return Some(self.interrupted(Interruption::WorkerStopping, "worker shut down".to_owned()));
            }
            (Some(StopReason::Fenced(why)), _) => {
                info!(exit_code = ?code, "task stopped: out of contact with the master");
                return Some(self.interrupted(Interruption::Fenced, why));
            }
            (None, Some(ExitStatus::Exited(0))) => (RunStatus::Completed, String::new()),
            (None, Some(ExitStatus::Exited(code))) => (RunStatus::Failed, format!("exited with code {code}")),
            (None, Some(ExitStatus::OutOfMemory(_))) => {
                let error = match self.launch.memory_required_mb {
                    0 => "killed: out of memory".to_owned(),
                    limit => format!("killed: out of memory (limit {limit} MB)"),
                };
                (RunStatus::Failed, error)
            }
            (None, Some(ExitStatus::Signaled(signal))) => {
                (RunStatus::Failed, format!("killed by signal {}", signal_name(signal)))
            }
            (None, None) => (RunStatus::Failed, "the task never ran".to_owned()),
        };
        info!(status = %status, exit_code = ?code, error = %error, "task ended");
        let outcome = Outcome { exit_code: code, error: (!error.is_empty()).then_some(error) };
        Some(self.report(TaskUpdate::Status { status, outcome }))
    }

    fn report(&self, update: TaskUpdate) -> TaskReport {
        self.inner.report(&self.launch.task_id, self.launch.attempt, update)
    }

    fn interrupted(&self, cause: Interruption, message: String) -> TaskReport {
        if cause == Interruption::Environment {
            self.inner.environment_failed(&message);
        }
        self.report(TaskUpdate::Interrupted { cause, message })
    }

    fn failed(&self, error: String) -> TaskReport {
        let outcome = Outcome { exit_code: None, error: Some(error) };
        self.report(TaskUpdate::Status { status: RunStatus::Failed, outcome })
    }
}

/// A driver error that says the worker cannot run tasks, whatever the task.
fn is_environment(e: &DriverError) -> bool {
    matches!(e, DriverError::EngineUnreachable { .. } | DriverError::Workdir { .. })
}

/// Lines of preparation output kept for the task's log.
const MAX_PREPARE_LINES: usize = 200;

fn signal_name(signal: i32) -> String {
    Signal::try_from(signal).map_or_else(|_| signal.to_string(), |s| s.as_str().to_owned())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A fresh attempt starts in an empty folder, whatever an earlier worker left there.
async fn prepare_workdir(dir: &Path) -> std::io::Result<()> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    tokio::fs::create_dir_all(dir).await
}

async fn remove_workdir(dir: &Path) {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => debug!(dir = %dir.display(), "working folder removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!(dir = %dir.display(), error = %e, "cannot remove the task's working folder"),
    }
}
