//! The worker's task runtime: the registry of tasks on this worker and the API
//! the worker agent calls when the master sends commands.
//!
//! Each task is owned by one supervisor (see `supervisor.rs`) with a reporter and
//! a log shipper beside it; the registry only holds what the API needs to reach it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cloudai_domain::{TaskId, TaskStatus};
use cloudai_proto::v1 as pb;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, debug, info, info_span, warn};

use crate::config::RuntimeConfig;
use crate::driver::{Driver, Execution, Launch, Leftover, TaskControl, error_chain};
use crate::link::{MasterLink, RetryPolicy};
use crate::reporter::Reporter;
use crate::supervisor::{StopReason, StopRequest, Supervisor, report};
use crate::unix_ms;

/// Finished (task, attempt) pairs remembered so a repeated StartTask does not run a task twice.
const REMEMBERED_FINISHED: usize = 1024;
/// How long a task's output may stay open after its main process exited.
pub(crate) const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
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
/// stopped with `default_grace` and reported `failed` with "worker shut down"; the
/// master may then run it again elsewhere. Only containers outlive a worker that
/// dies; [`TaskRuntime::adopt_existing`] follows them again after a restart.
#[derive(Clone)]
pub struct TaskRuntime {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub config: RuntimeConfig,
    drivers: HashMap<String, Arc<dyn Driver>>,
    pub link: Arc<dyn MasterLink>,
    tasks: Mutex<HashMap<TaskId, Entry>>,
    finished: Mutex<VecDeque<(TaskId, u32)>>,
    /// Cancelled at worker shutdown: stop every task.
    pub stop_all: CancellationToken,
    /// Cancelled when shutdown stops waiting for deliveries to the master.
    give_up: CancellationToken,
    pub tracker: TaskTracker,
    pub policy: RetryPolicy,
}

/// How a supervisor is reached, and what it waits for.
struct SupervisorChannels {
    stops: mpsc::UnboundedReceiver<StopRequest>,
    done: CancellationToken,
    prev_done: Option<CancellationToken>,
}

struct Entry {
    attempt: u32,
    phase: Phase,
    stop: mpsc::UnboundedSender<StopRequest>,
    /// Cancelled once the supervisor has cleaned up (a next attempt reuses the working folder).
    done: CancellationToken,
}

pub(crate) enum Phase {
    Queued {
        since_ms: i64,
    },
    Running {
        started_ms: i64,
        control: Arc<dyn TaskControl>,
    },
    /// Stopped or exited: no longer reported as running.
    Ending,
}

impl TaskRuntime {
    pub fn new(mut config: RuntimeConfig, link: Arc<dyn MasterLink>, shutdown: CancellationToken) -> Self {
        let drivers = std::mem::take(&mut config.drivers).into_iter().collect();
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: config.max_retry_backoff,
            call_timeout: config.call_timeout,
        };
        let inner = Inner {
            config,
            drivers,
            link,
            tasks: Mutex::default(),
            finished: Mutex::default(),
            stop_all: shutdown.child_token(),
            give_up: CancellationToken::new(),
            tracker: TaskTracker::new(),
            policy,
        };
        Self { inner: Arc::new(inner) }
    }

    /// Starts a task in the background. A repeated command for the same attempt is ignored;
    /// a newer attempt replaces an older one still running here.
    pub fn start(&self, cmd: pb::StartTask) {
        let inner = &self.inner;
        let task_id = match parse_task_id(&cmd.task_id) {
            Ok(id) => id,
            Err(error) => return self.reject(&cmd, error),
        };
        let span = info_span!("task", task_id = %task_id, attempt = cmd.attempt);
        let _entered = span.enter();
        if inner.stop_all.is_cancelled() {
            return self.reject(&cmd, "the worker is shutting down".to_owned());
        }
        let Some(driver) = inner.drivers.get(&cmd.driver).cloned() else {
            let mut enabled: Vec<_> = inner.drivers.keys().map(String::as_str).collect();
            enabled.sort_unstable();
            let error = format!(
                "driver {:?} is not enabled on this worker (enabled: {})",
                cmd.driver,
                enabled.join(", ")
            );
            return self.reject(&cmd, error);
        };

        let (stop_tx, stops) = mpsc::unbounded_channel();
        let done = CancellationToken::new();
        let prev_done = {
            let mut tasks = inner.tasks.lock();
            let prev_done = match tasks.get(&task_id) {
                Some(entry) if entry.attempt >= cmd.attempt => {
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
            if prev_done.is_none() && inner.finished_recently(&task_id, cmd.attempt) {
                debug!("start for a task that already finished here; ignored");
                return;
            }
            let phase = Phase::Queued { since_ms: unix_ms() };
            tasks.insert(
                task_id.clone(),
                Entry { attempt: cmd.attempt, phase, stop: stop_tx, done: done.clone() },
            );
            prev_done
        };

        let launch = Launch {
            task_id: task_id.clone(),
            worker_id: inner.config.worker_id.clone(),
            attempt: cmd.attempt,
            image: cmd.image,
            command: cmd.command,
            env: cmd.env.into_iter().collect::<BTreeMap<_, _>>(),
            gpu_indices: cmd.gpu_indices,
            cpu_required: cmd.cpu_required,
            memory_required_mb: cmd.memory_required_mb,
            workdir: inner.config.data_dir.join("tasks").join(task_id.as_str()),
        };
        let queued =
            report(&inner.config.worker_id, &task_id, cmd.attempt, TaskStatus::Queued, None, String::new());
        info!(driver = %cmd.driver, "task queued");
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
        let mut drivers: Vec<_> = inner.drivers.iter().map(|(n, d)| (n.clone(), d.clone())).collect();
        drivers.sort_by(|a, b| a.0.cmp(&b.0));
        let mut adopted = 0;
        for (name, driver) in drivers {
            let leftovers = match driver.leftovers(&inner.config.worker_id).await {
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
            worker_id: inner.config.worker_id.clone(),
            attempt,
            image,
            command: Vec::new(),
            env: BTreeMap::new(),
            gpu_indices: Vec::new(),
            cpu_required: 0.0,
            memory_required_mb: 0,
            workdir: inner.config.data_dir.join("tasks").join(task_id.as_str()),
        };
        let execution = match driver.adopt(&launch, &handle).instrument(span.clone()).await {
            Ok(execution) => execution,
            Err(e) => {
                self.fail_unregistered(task_id.as_str(), attempt, error_chain(&e));
                return false;
            }
        };
        let (stop_tx, stops) = mpsc::unbounded_channel();
        let done = CancellationToken::new();
        {
            let mut tasks = inner.tasks.lock();
            if tasks.contains_key(&task_id) {
                return false; // a StartTask won the race; it runs the task
            }
            let phase = Phase::Running { started_ms: unix_ms(), control: execution.control.clone() };
            tasks.insert(task_id.clone(), Entry { attempt, phase, stop: stop_tx, done: done.clone() });
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
        first_report: Option<pb::TaskStatusReport>,
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
            policy: inner.policy,
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
    /// period (0: `default_grace`). Unknown tasks are ignored.
    pub fn cancel(&self, cmd: pb::CancelTask) {
        let grace = match cmd.grace_period_ms {
            0 => self.inner.config.default_grace,
            ms => Duration::from_millis(ms),
        };
        let Ok(task_id) = TaskId::parse(&cmd.task_id) else { return };
        let tasks = self.inner.tasks.lock();
        let Some(entry) = tasks.get(&task_id) else {
            debug!(task_id = %task_id, "cancel for a task not on this worker; ignored");
            return;
        };
        info!(task_id = %task_id, reason = %cmd.reason, ?grace, "cancelling task");
        entry.stop.send(StopRequest { reason: StopReason::Cancel(cmd.reason), grace }).ok();
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
    pub fn running_tasks(&self) -> Vec<pb::RunningTask> {
        let tasks = self.inner.tasks.lock();
        let mut running: Vec<_> = tasks
            .iter()
            .filter_map(|(task_id, entry)| {
                let (status, started_ms, usage) = match &entry.phase {
                    Phase::Queued { since_ms } => ("queued", *since_ms, None),
                    Phase::Running { started_ms, control } => ("running", *started_ms, control.usage()),
                    Phase::Ending => return None,
                };
                let usage = usage.unwrap_or_default();
                Some(pb::RunningTask {
                    task_id: task_id.as_str().to_owned(),
                    status: status.to_owned(),
                    cpu_percent: usage.cpu_percent,
                    memory_bytes: usage.memory_bytes,
                    started_at: started_ms / 1000,
                })
            })
            .collect();
        running.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        running
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

    /// Reports a task that will not run here as failed, without registering it.
    fn reject(&self, cmd: &pb::StartTask, error: String) {
        self.fail_unregistered(&cmd.task_id, cmd.attempt, error);
    }

    fn fail_unregistered(&self, task_id: &str, attempt: u32, error: String) {
        let inner = &self.inner;
        warn!(task_id = %task_id, error = %error, "cannot run task");
        let (reports, queue) = mpsc::unbounded_channel();
        let failed = pb::TaskStatusReport {
            worker_id: inner.config.worker_id.clone(),
            task_id: task_id.to_owned(),
            attempt,
            status: TaskStatus::Failed.as_str().to_owned(),
            exit_code: None,
            error,
            timestamp_ms: unix_ms(),
            message: String::new(),
        };
        reports.send(failed).ok();
        let reporter = Reporter {
            reports: queue,
            link: inner.link.clone(),
            policy: inner.policy,
            give_up: inner.give_up.child_token(),
            on_stale: Box::new(|| {}),
        };
        inner.tracker.spawn(reporter.run().instrument(info_span!("task", task_id = %task_id)));
    }
}

impl Inner {
    fn finished_recently(&self, task_id: &TaskId, attempt: u32) -> bool {
        self.finished.lock().iter().any(|(id, a)| id == task_id && *a >= attempt)
    }

    /// Moves a task to `phase`, unless it is already ending.
    pub(crate) fn set_phase(&self, task_id: &TaskId, attempt: u32, phase: Phase) {
        let mut tasks = self.tasks.lock();
        if let Some(entry) = tasks.get_mut(task_id)
            && entry.attempt == attempt
            && !matches!(entry.phase, Phase::Ending)
        {
            entry.phase = phase;
        }
    }

    /// The supervisor of this attempt is done: forget the task, remember the attempt.
    pub(crate) fn finish(&self, task_id: &TaskId, attempt: u32) {
        let mut tasks = self.tasks.lock();
        if tasks.get(task_id).is_some_and(|e| e.attempt == attempt) {
            tasks.remove(task_id);
        }
        drop(tasks);
        let mut finished = self.finished.lock();
        if finished.len() == REMEMBERED_FINISHED {
            finished.pop_front();
        }
        finished.push_back((task_id.clone(), attempt));
    }
}

/// Stops a stale task (of `attempt`, or whichever attempt is here).
fn mark_stale(inner: &Weak<Inner>, task_id: &TaskId, attempt: Option<u32>) {
    let Some(inner) = inner.upgrade() else { return };
    let mut tasks = inner.tasks.lock();
    let Some(entry) = tasks.get_mut(task_id) else { return };
    if attempt.is_some_and(|a| a != entry.attempt) {
        return;
    }
    info!(task_id = %task_id, attempt = entry.attempt, "stopping stale task");
    entry.phase = Phase::Ending;
    entry.stop.send(StopRequest { reason: StopReason::Stale, grace: Duration::ZERO }).ok();
}

/// A task id that is also safe as a folder name.
fn parse_task_id(raw: &str) -> Result<TaskId, String> {
    if raw == "." || raw == ".." {
        return Err(format!("invalid task id {raw:?}"));
    }
    TaskId::parse(raw).map_err(|e| format!("invalid task id {raw:?}: {e}"))
}
