//! The worker's task runtime: the API the worker agent calls when the master sends
//! commands. Each task is owned by one supervisor (see `supervisor.rs`) with a reporter
//! and a log shipper beside it; the registry (`registry.rs`) holds what reaches them.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cloudai_domain::time::unix_ms;
use cloudai_domain::{
    Interruption, OnDisconnect, Outcome, RunStatus, RunningStatus, RunningTask, TaskCancel, TaskId,
    TaskLaunch, TaskReport, TaskUpdate,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::config::RuntimeConfig;
use crate::driver::{Driver, Execution, Launch, Leftover, OUTPUT_DRAIN, error_chain};
use crate::link::MasterLink;
use crate::registry::{Entry, Inner, Phase, mark_stale};
use crate::reporter::Reporter;
use crate::stop::{StopReason, StopRequest};
use crate::supervisor::Supervisor;

/// After giving up on deliveries at shutdown, time left for supervisors to clean up.
const CLEANUP_WAIT: Duration = Duration::from_secs(2);

/// Runs the tasks the master places on this worker. Cheap to clone.
///
/// `start`, `cancel` and `stop_task` return at once and must be called inside a
/// tokio runtime.
///
/// Worker shutdown (the token given to [`TaskRuntime::new`] is cancelled, or
/// [`TaskRuntime::shutdown`]): tasks cannot be left running, since process-driver
/// tasks are our children (killed when we exit). So every task (containers too) is
/// stopped with `default_grace` and reported interrupted ("worker shut down"); the
/// master then runs it again elsewhere. Only containers outlive a worker that
/// dies; [`TaskRuntime::adopt_existing`] follows them again after a restart.
#[derive(Clone)]
pub struct TaskRuntime {
    inner: Arc<Inner>,
}

/// How a supervisor is reached, and what it waits for.
struct SupervisorChannels {
    stops: mpsc::UnboundedReceiver<StopRequest>,
    done: CancellationToken,
    prev_done: Option<CancellationToken>,
}

impl TaskRuntime {
    pub fn new(config: RuntimeConfig, link: Arc<dyn MasterLink>, shutdown: CancellationToken) -> Self {
        Self { inner: Arc::new(Inner::new(config, link, shutdown)) }
    }

    /// Starts a task in the background. A repeated start for the same attempt is ignored;
    /// a newer attempt replaces an older one still running here.
    pub fn start(&self, task: TaskLaunch) {
        let inner = &self.inner;
        let task_id = task.task_id.clone();
        let span = info_span!("task", task_id = %task_id, attempt = task.attempt);
        let _entered = span.enter();
        if matches!(task_id.as_str(), "." | "..") {
            // A valid id, but not as the name of its working folder.
            return self.refuse(
                task_id.clone(),
                task.attempt,
                format!("invalid task id {:?}", task_id.as_str()),
            );
        }
        if inner.stop_all.is_cancelled() {
            let update = TaskUpdate::Interrupted {
                cause: Interruption::WorkerStopping,
                message: "the worker is shutting down".to_owned(),
            };
            return self.send_alone(task_id, task.attempt, update);
        }
        let Some(driver) = inner.drivers.get(&task.driver).cloned() else {
            let mut enabled: Vec<_> = inner.drivers.keys().map(|d| d.as_str()).collect();
            enabled.sort_unstable();
            let error = format!(
                "driver {:?} is not enabled on this worker (enabled: {})",
                task.driver.as_str(),
                enabled.join(", ")
            );
            return self.refuse(task_id, task.attempt, error);
        };

        let (stop_tx, stops) = mpsc::unbounded_channel();
        let done = CancellationToken::new();
        let prev_done = {
            let mut tasks = inner.tasks.lock();
            let prev_done = match tasks.get(&task_id) {
                Some(entry) if entry.attempt >= task.attempt => {
                    debug!(running_attempt = entry.attempt, "start for a task already here; ignored");
                    return;
                }
                Some(entry) => {
                    info!(old_attempt = entry.attempt, "a newer attempt replaces the one running here");
                    entry.stop.send(StopRequest { reason: StopReason::Stale, grace: Duration::ZERO }).ok();
                    Some(entry.done.clone())
                }
                None => None,
            };
            if prev_done.is_none() && inner.finished_recently(&task_id, task.attempt) {
                debug!("start for a task that already finished here; ignored");
                return;
            }
            let phase = Phase::Queued { since_ms: unix_ms() };
            tasks.insert(
                task_id.clone(),
                Entry {
                    attempt: task.attempt,
                    keep_on_disconnect: task.on_disconnect == OnDisconnect::Keep,
                    phase,
                    stop: stop_tx,
                    done: done.clone(),
                },
            );
            prev_done
        };

        let queued = inner.report(&task_id, task.attempt, TaskUpdate::status(RunStatus::Queued));
        info!(driver = %task.driver, "task queued");
        let launch = Launch {
            workdir: inner.config.tasks_dir().join(task_id.as_str()),
            task_id,
            worker_id: inner.config.worker_id.to_string(),
            attempt: task.attempt,
            image: task.image,
            command: task.command,
            env: task.env,
            gpu_indices: task.gpu_indices,
            cpu_required: task.cpu_required,
            memory_required_mb: task.memory_required_mb,
        };
        self.supervise(
            launch,
            driver,
            Some(queued),
            None,
            SupervisorChannels { stops, done, prev_done },
            &span,
        );
    }

    /// Takes over the tasks a previous process of this worker left behind (containers
    /// outlive it). Call before registering, so the registration lists them. Each is then
    /// followed and reported like any other (a `running` report, whose ack may say the
    /// master no longer wants it; then its end); one that ended meanwhile reports its end.
    /// Returns how many tasks were adopted.
    pub async fn adopt_existing(&self) -> usize {
        let inner = &self.inner;
        let mut drivers: Vec<_> = inner.drivers.iter().map(|(n, d)| (*n, d.clone())).collect();
        drivers.sort_by_key(|(name, _)| name.as_str());
        let mut adopted = 0;
        for (name, driver) in drivers {
            let leftovers = match driver.leftovers(inner.config.worker_id.as_str()).await {
                Ok(leftovers) => leftovers,
                Err(e) => {
                    warn!(driver = %name, error = %error_chain(&e), "cannot list tasks left by a previous worker process");
                    continue;
                }
            };
            for leftover in leftovers {
                adopted += usize::from(self.adopt_one(&driver, leftover).await);
            }
        }
        if adopted > 0 {
            info!(tasks = adopted, "adopted tasks left by a previous worker process");
        }
        adopted
    }

    async fn adopt_one(&self, driver: &Arc<dyn Driver>, leftover: Leftover) -> bool {
        let inner = &self.inner;
        let Leftover { task_id, attempt, handle, image } = leftover;
        let span = info_span!("task", task_id = %task_id, attempt);
        if inner.tasks.lock().contains_key(&task_id) {
            return false;
        }
        let launch = Launch {
            task_id: task_id.clone(),
            worker_id: inner.config.worker_id.to_string(),
            attempt,
            image,
            command: Vec::new(),
            env: BTreeMap::new(),
            gpu_indices: Vec::new(),
            cpu_required: 0.0,
            memory_required_mb: 0,
            workdir: inner.config.tasks_dir().join(task_id.as_str()),
        };
        let execution = match driver.adopt(&launch, &handle).instrument(span.clone()).await {
            Ok(execution) => execution,
            Err(e) => {
                self.refuse(task_id, attempt, error_chain(&e));
                return false;
            }
        };
        let (stop_tx, stops) = mpsc::unbounded_channel();
        let done = CancellationToken::new();
        {
            let mut tasks = inner.tasks.lock();
            if tasks.contains_key(&task_id) {
                return false; // a start won the race; it runs the task
            }
            let phase = Phase::Running { started_ms: unix_ms(), control: execution.control.clone() };
            // What the task asked is not known here: stopped on disconnect, the safe side.
            let entry =
                Entry { attempt, keep_on_disconnect: false, phase, stop: stop_tx, done: done.clone() };
            tasks.insert(task_id.clone(), entry);
        }
        let channels = SupervisorChannels { stops, done, prev_done: None };
        self.supervise(launch, driver.clone(), None, Some(execution), channels, &span);
        true
    }

    /// Spawns the reporter and the supervisor of a registered task.
    fn supervise(
        &self,
        launch: Launch,
        driver: Arc<dyn Driver>,
        first_report: Option<TaskReport>,
        adopted: Option<Execution>,
        channels: SupervisorChannels,
        span: &Span,
    ) {
        let inner = &self.inner;
        let (reports, queue) = mpsc::unbounded_channel();
        if let Some(first) = first_report {
            reports.send(first).ok();
        }
        let discard = inner.give_up.child_token();
        let weak = Arc::downgrade(inner);
        let stale_id = launch.task_id.clone();
        let attempt = launch.attempt;
        let reporter = Reporter {
            reports: queue,
            link: inner.link.clone(),
            policy: inner.policy.clone(),
            give_up: discard.clone(),
            on_stale: Box::new(move || mark_stale(&weak, &stale_id, Some(attempt))),
        };
        let reporter = inner.tracker.spawn(reporter.run().instrument(span.clone()));
        let supervisor = Supervisor {
            inner: inner.clone(),
            launch,
            driver,
            adopted,
            reports,
            reporter,
            stops: channels.stops,
            discard,
            prev_done: channels.prev_done,
            done: channels.done,
            prelude: Vec::new(),
        };
        inner.tracker.spawn(supervisor.run().instrument(span.clone()));
    }

    /// Stops a task: SIGTERM (or the driver's equivalent), then a kill after the grace
    /// period (`None`: `default_grace`). Unknown tasks are ignored.
    pub fn cancel(&self, cancel: TaskCancel) {
        let grace = cancel.grace.unwrap_or(self.inner.config.default_grace);
        let tasks = self.inner.tasks.lock();
        let Some(entry) = tasks.get(&cancel.task_id) else {
            debug!(task_id = %cancel.task_id, "cancel for a task not on this worker; ignored");
            return;
        };
        if matches!(entry.phase, Phase::Ending) {
            debug!(task_id = %cancel.task_id, reason = %cancel.reason, "cancel for a task that has already ended here; nothing to stop");
            return;
        }
        info!(task_id = %cancel.task_id, reason = %cancel.reason, ?grace, "cancelling task");
        entry.stop.send(StopRequest { reason: StopReason::Cancel(cancel.reason), grace }).ok();
    }

    /// Kills a task the master no longer wants here (stale): no final status is
    /// reported and its pending reports and output are dropped.
    pub fn stop_task(&self, task_id: &str) {
        let Ok(task_id) = TaskId::parse(task_id) else { return };
        mark_stale(&Arc::downgrade(&self.inner), &task_id, None);
    }

    /// Tasks queued or running here, for heartbeats and re-registration. `started_at` is when
    /// the task started running (for a queued task: when it was accepted). A task whose process
    /// has ended is not listed, even while its final report is still being delivered.
    pub fn running_tasks(&self) -> Vec<RunningTask> {
        let tasks = self.inner.tasks.lock();
        let mut running: Vec<_> = tasks
            .iter()
            .filter_map(|(task_id, entry)| {
                let (status, started_ms, usage) = match &entry.phase {
                    Phase::Queued { since_ms } => (RunningStatus::Queued, *since_ms, None),
                    Phase::Running { started_ms, control } => {
                        (RunningStatus::Running, *started_ms, control.usage())
                    }
                    Phase::Ending => return None,
                };
                let usage = usage.unwrap_or_default();
                Some(RunningTask {
                    task_id: task_id.as_str().to_owned(),
                    status,
                    cpu_percent: usage.cpu_percent,
                    memory_bytes: usage.memory_bytes,
                    started_at: started_ms / 1000,
                })
            })
            .collect();
        running.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        running
    }

    /// The master answers again: reports and output waiting out a retry backoff go now.
    pub fn master_reachable(&self) {
        self.inner.policy.wake.notify_waiters();
    }

    /// Tasks that ended here but whose final report is still on its way to the master.
    pub fn ending_tasks(&self) -> Vec<String> {
        let tasks = self.inner.tasks.lock();
        let mut ending: Vec<String> = tasks
            .iter()
            .filter(|(_, entry)| matches!(entry.phase, Phase::Ending))
            .map(|(task_id, _)| task_id.as_str().to_owned())
            .collect();
        ending.sort_unstable();
        ending
    }

    /// The worker lost contact with the master: stops every task that must not run while
    /// the master may start it elsewhere (`on_disconnect: stop`), giving each `grace`
    /// between SIGTERM and SIGKILL. `why` goes into their logs and final reports. Returns
    /// how many it stopped.
    pub fn fence(&self, grace: Duration, why: &str) -> usize {
        let tasks = self.inner.tasks.lock();
        let mut stopped = 0;
        for (task_id, entry) in tasks.iter() {
            if entry.keep_on_disconnect || matches!(entry.phase, Phase::Ending) {
                continue;
            }
            warn!(task_id = %task_id, reason = why, "stopping task: out of contact with the master");
            let reason = StopReason::Fenced(why.to_owned());
            if entry.stop.send(StopRequest { reason, grace }).is_ok() {
                stopped += 1;
            }
        }
        stopped
    }

    /// Why this worker cannot run tasks now, if it cannot: its working folders cannot be
    /// written, or recent attempts failed for the worker's own reasons.
    pub async fn health(&self) -> Option<String> {
        let dir = self.inner.config.tasks_dir();
        if let Err(e) = probe_writable(&dir).await {
            return Some(format!("cannot write to its task folder {}: {e}", dir.display()));
        }
        self.inner.environment_trouble()
    }

    /// Stops every task (see the type's docs) and waits, under one deadline, for their
    /// final reports and output to reach the master; past it, gives up on them.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.stop_all.cancel();
        inner.tracker.close();
        let deadline = inner.config.default_grace + OUTPUT_DRAIN + inner.config.shutdown_flush_timeout;
        if tokio::time::timeout(deadline, inner.tracker.wait()).await.is_ok() {
            info!("task runtime stopped");
            return;
        }
        let pending = inner.tasks.lock().len();
        warn!(tasks = pending, "master unreachable at shutdown: task reports and output not delivered");
        inner.give_up.cancel();
        if tokio::time::timeout(CLEANUP_WAIT, inner.tracker.wait()).await.is_err() {
            warn!("task supervisors did not finish cleaning up");
        }
    }

    /// Reports a task that will not run here as failed, without registering it (a start
    /// this worker cannot carry out, or a command it could not read).
    pub fn refuse(&self, task_id: TaskId, attempt: u32, error: String) {
        warn!(task_id = %task_id, error = %error, "cannot run task");
        let outcome = Outcome { exit_code: None, error: Some(error) };
        self.send_alone(task_id, attempt, TaskUpdate::Status { status: RunStatus::Failed, outcome });
    }

    /// Delivers the one report of an attempt that never ran here.
    fn send_alone(&self, task_id: TaskId, attempt: u32, update: TaskUpdate) {
        let inner = &self.inner;
        let span = info_span!("task", task_id = %task_id);
        let (reports, queue) = mpsc::unbounded_channel();
        reports.send(inner.report(&task_id, attempt, update)).ok();
        let reporter = Reporter {
            reports: queue,
            link: inner.link.clone(),
            policy: inner.policy.clone(),
            give_up: inner.give_up.child_token(),
            on_stale: Box::new(|| {}),
        };
        inner.tracker.spawn(reporter.run().instrument(span));
    }
}

/// Creates and removes a file in `dir` (made if missing): can tasks get working folders here?
pub async fn probe_writable(dir: &std::path::Path) -> std::io::Result<()> {
    tokio::fs::create_dir_all(dir).await?;
    let probe = dir.join(".cloudai-probe");
    tokio::fs::write(&probe, b"").await?;
    tokio::fs::remove_file(&probe).await
}
