//! The task actor: owns the scheduler and every unfinished task. Everything that
//! changes a task goes through here, one request at a time, so there are no races
//! between a report, a cancel and a lost worker.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use cloudai_domain::{
    Interruption, Outcome, RunStatus, Task, TaskCancel, TaskId, TaskLaunch, TaskReport, TaskState,
    TaskStatus, TaskUpdate, WorkerCommand, WorkerId,
};
use cloudai_scheduler::{PendingTask, Scheduler, WorkerResources};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::ending::{Ending, Waiter};
use super::live::LiveTasks;
use super::persist::{PersistOp, Settled};
use super::{CommandHub, TaskCounts};
use super::{LogWatch, ReportOutcome, Request, TaskConfig, TaskError, TaskParts};
use crate::events::{ClusterEvent, EventBus};
use crate::fleet::{FleetSnapshot, Subscription, Update};
use cloudai_domain::time::unix_ms;
use cloudai_domain::{RunningTask, WorkerInfo};

struct Active {
    task: Task,
    /// The worker acknowledged the start command (reported queued or later).
    confirmed: bool,
    /// Restored after a restart: its reservation is made when its worker registers.
    unreserved: bool,
    cancel_requested: bool,
    /// Its place in the queue while pending, kept if a cancel cannot be written.
    seq: u64,
    /// A final transition is being written; the task stays as it is until then.
    ending: Option<Ending>,
    /// Earlier attempts (worker, attempt) given up on, newest last: one of them may still
    /// report its result after a partition.
    earlier: Vec<(WorkerId, u32)>,
    /// Attempts that ended for no fault of the task's (interrupted): not counted as retries.
    free_requeues: u32,
}

/// Earlier attempts remembered per task.
const EARLIER_KEPT: usize = 8;

/// Interrupted attempts a task may have without spending a retry; past it, they count.
const MAX_FREE_REQUEUES: u32 = 20;

/// What a restarted master resumes: the unfinished tasks and those of them whose cancel was
/// asked (and acknowledged) before the restart.
pub(super) struct Unfinished {
    pub tasks: Vec<Task>,
    pub cancelling: HashSet<TaskId>,
}

/// Where the actor's changes go besides its own state.
pub(super) struct Channels {
    pub persist: mpsc::Sender<PersistOp>,
    pub live: LiveTasks,
    pub logs: LogWatch,
    pub pending: super::quota::PendingQuota,
}

pub(super) struct Actor {
    config: TaskConfig,
    pending: super::quota::PendingQuota,
    commands: CommandHub,
    metrics: crate::metrics::Metrics,
    events: EventBus,
    persist: mpsc::Sender<PersistOp>,
    live: LiveTasks,
    logs: LogWatch,
    scheduler: Scheduler,
    tasks: HashMap<TaskId, Active>,
    next_seq: u64,
    /// Placed tasks a re-registered worker did not list: lost at the deadline unless reported.
    unconfirmed: HashMap<TaskId, Instant>,
    /// Stale copies already told to stop, so every heartbeat does not repeat the command.
    stale_told: HashMap<(WorkerId, String), Instant>,
    /// `keep` tasks of lost workers, run elsewhere at the deadline unless their worker returns.
    kept: HashMap<TaskId, Instant>,
    /// The least silence after which the fleet declares a worker lost.
    loss_after: Duration,
    /// Workers that get no new tasks: silent, unhealthy by their own word, or shutting down.
    silent: HashSet<WorkerId>,
    unhealthy: HashSet<WorkerId>,
    draining: HashSet<WorkerId>,
    /// Re-queued tasks kept out of the queue for a moment after a lost worker came back,
    /// so that results finished during the partition arrive before a new attempt starts.
    held: HashSet<TaskId>,
    hold_until: Option<Instant>,
}

/// How long re-queued tasks wait after a lost worker returns (at most the loss time).
const RETURN_SETTLE: Duration = Duration::from_secs(2);

/// How long before a stale copy that is still reported gets its stop command again.
const STALE_RESEND: Duration = Duration::from_secs(10);

/// A lost worker's task whose final state could not be written is tried again after this.
const END_RETRY: Duration = Duration::from_secs(1);

impl Actor {
    pub fn new(config: TaskConfig, parts: &TaskParts, channels: Channels, unfinished: Unfinished) -> Self {
        let fleet = parts.fleet.clone();
        let Channels { persist, live, logs, pending } = channels;
        let mut actor = Self {
            pending,
            scheduler: Scheduler::new(config.policy),
            config,
            commands: parts.commands.clone(),
            metrics: parts.metrics.clone(),
            events: parts.events.clone(),
            persist,
            live,
            logs,
            tasks: HashMap::new(),
            next_seq: 0,
            unconfirmed: HashMap::new(),
            stale_told: HashMap::new(),
            kept: HashMap::new(),
            loss_after: fleet.loss_after(),
            silent: HashSet::new(),
            unhealthy: HashSet::new(),
            draining: HashSet::new(),
            held: HashSet::new(),
            hold_until: None,
        };
        for worker in actor.restore(unfinished) {
            fleet.expect(worker);
        }
        actor
    }

    /// After a restart: pending tasks queue again; placed ones wait for their worker, whose
    /// ids are returned (the fleet gives them the restart grace to come back), with the
    /// cancels asked of them before the restart still asked.
    fn restore(&mut self, unfinished: Unfinished) -> HashSet<WorkerId> {
        let Unfinished { tasks, cancelling } = unfinished;
        let count = tasks.len();
        let mut workers = HashSet::new();
        for task in tasks {
            // A row placed without a worker was made pending when it was read.
            match task.state() {
                TaskState::Queued { placement } | TaskState::Running { placement, .. } => {
                    workers.insert(placement.worker_id.clone());
                    let id = task.task_id.clone();
                    // Their order of submission, should they go back to the queue.
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.insert(task, true, seq);
                    if cancelling.contains(&id)
                        && let Some(active) = self.tasks.get_mut(&id)
                    {
                        active.cancel_requested = true;
                    }
                }
                TaskState::Pending { .. } => {
                    self.pending.add(task.submitted_by.as_deref());
                    self.enqueue(task);
                }
                // The store hands over unfinished tasks only; an ended one has nothing to resume.
                TaskState::Completed { .. } | TaskState::Failed { .. } | TaskState::Cancelled { .. } => {
                    let status = task.status();
                    warn!(task_id = %task.task_id, %status, "ended task among unfinished ones; ignored");
                }
            }
        }
        if count > 0 {
            info!(tasks = count, workers = workers.len(), "restored unfinished tasks");
        }
        workers
    }

    /// `confirmed`: restored after a restart (reported before it), so also not yet reserved.
    fn insert(&mut self, task: Task, confirmed: bool, seq: u64) {
        let active = Active {
            task,
            confirmed,
            unreserved: confirmed,
            cancel_requested: false,
            seq,
            ending: None,
            earlier: Vec::new(),
            free_requeues: 0,
        };
        self.tasks.insert(active.task.task_id.clone(), active);
    }

    fn enqueue(&mut self, task: Task) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue(&task, seq);
        self.insert(task, false, seq);
    }

    fn queue(&mut self, task: &Task, seq: u64) {
        let pending = PendingTask {
            task_id: task.task_id.clone(),
            priority: task.spec.priority,
            seq,
            cpu: task.spec.cpu_required,
            memory_mb: task.spec.memory_required,
            gpus: task.spec.gpu_required,
            driver: task.spec.driver,
        };
        if let Err(e) = self.scheduler.enqueue(pending) {
            warn!(task_id = %task.task_id, error = %e, "cannot queue task");
        }
    }

    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<Request>,
        mut settled: mpsc::UnboundedReceiver<Settled>,
        mut events: Subscription,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(self.tick_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                update = events.recv() => match update {
                    Some(Update::Event(e)) => self.on_cluster_event(e).await,
                    Some(Update::Resync(fleet)) => self.resync(fleet).await,
                    None => break,
                },
                Some(s) = settled.recv() => self.settle(s).await,
                request = rx.recv() => match request {
                    Some(r) => self.handle(r).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick().await,
            }
        }
        debug!("task actor stopped");
    }

    fn tick_interval(&self) -> Duration {
        (self.config.loss_grace / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }

    async fn handle(&mut self, request: Request) {
        match request {
            Request::Enqueue(task) => {
                self.enqueue(*task);
                self.schedule().await;
            }
            Request::Cancel(task_id, reply) => self.cancel(task_id, reply).await,
            Request::Report(report, reply) => {
                let outcome = match self.placed_elsewhere(&report) {
                    Some(refused) => Err(refused),
                    None => Ok(self.on_report(report).await),
                };
                let _ = reply.send(outcome);
            }
            Request::Running(worker_id, running) => self.on_running(&worker_id, &running),
            Request::StreamOpened(worker_id) => self.dispatch_unconfirmed(&worker_id),
            Request::PendingReasons(ids, reply) => {
                let reasons = ids
                    .into_iter()
                    .filter_map(|id| self.scheduler.pending_reason(&id).map(|r| (id, r.to_string())))
                    .collect();
                let _ = reply.send(reasons);
            }
            Request::Counts(reply) => {
                let mut counts = TaskCounts { totals: self.scheduler.totals(), ..TaskCounts::default() };
                for a in self.tasks.values() {
                    match a.task.status() {
                        TaskStatus::Pending => counts.pending += 1,
                        TaskStatus::Queued => counts.queued += 1,
                        TaskStatus::Running => counts.running += 1,
                        _ => {}
                    }
                }
                let _ = reply.send(counts);
            }
        }
    }

    /// Records a transition (in memory now, in the store in order, soon).
    async fn persist(&mut self, task: &Task, event: cloudai_domain::TaskEvent) {
        self.live.changed(task, event.from.unwrap_or(task.status()));
        let was_pending = event.from == Some(TaskStatus::Pending);
        match (was_pending, event.to == TaskStatus::Pending) {
            (true, false) => self.pending.release(task.submitted_by.as_deref()),
            (false, true) => self.pending.add(task.submitted_by.as_deref()),
            _ => {}
        }
        let op = PersistOp { task: task.clone(), event, settle: false };
        if self.persist.send(op).await.is_err() {
            warn!(task_id = %task.task_id, "persistence stopped; transition not recorded");
        }
    }

    /// Moves a task to a state that is not final (those go through [`Actor::end`]).
    async fn transition(&mut self, task_id: &TaskId, to: TaskStatus, reason: &str, outcome: Outcome) {
        let Some(active) = self.tasks.get_mut(task_id) else { return };
        let event = match active.task.transition(to, reason, outcome, unix_ms()) {
            Ok(e) => e,
            Err(e) => {
                debug!(error = %e, "ignored transition");
                return;
            }
        };
        let task = active.task.clone();
        self.persist(&task, event).await;
    }

    /// Hands a final transition to the store; the task stays as it is (its reservation
    /// too, but out of the queue) until [`Actor::settle`] hears the write committed.
    async fn end(
        &mut self,
        task_id: &TaskId,
        to: TaskStatus,
        reason: &str,
        outcome: Outcome,
        waiter: Option<Waiter>,
    ) {
        self.end_by(task_id, waiter, |task| task.transition(to, reason, outcome, unix_ms())).await;
    }

    /// [`Actor::end`] with the final transition `make` makes.
    async fn end_by(
        &mut self,
        task_id: &TaskId,
        waiter: Option<Waiter>,
        make: impl FnOnce(&mut Task) -> Result<cloudai_domain::TaskEvent, cloudai_domain::TransitionError>,
    ) {
        let Some(active) = self.tasks.get_mut(task_id) else {
            if let Some(w) = waiter {
                w.ignored(task_id);
            }
            return;
        };
        let mut task = active.task.clone();
        let event = match make(&mut task) {
            Ok(e) => e,
            Err(e) => {
                debug!(error = %e, "ignored transition");
                if let Some(w) = waiter {
                    w.ignored(task_id);
                }
                return;
            }
        };
        // Not placed while its cancel is being written.
        self.scheduler.remove_pending(task_id);
        active.ending = Some(Ending { task: task.clone(), waiters: waiter.into_iter().collect() });
        let op = PersistOp { task, event, settle: true };
        if self.persist.send(op).await.is_err() {
            warn!(task_id = %task_id, "persistence stopped; final transition not recorded");
        }
    }

    /// A final transition's write finished: apply it and answer, or leave the task as it was.
    async fn settle(&mut self, settled: Settled) {
        let task_id = settled.task_id;
        let Some(active) = self.tasks.get_mut(&task_id) else { return };
        let Some(ending) = active.ending.take() else { return };
        match settled.result {
            Ok(()) => {
                if active.task.status() == TaskStatus::Pending {
                    self.pending.release(active.task.submitted_by.as_deref());
                }
                let task = ending.task;
                let to = task.status();
                self.tasks.remove(&task_id);
                self.unconfirmed.remove(&task_id);
                self.kept.remove(&task_id);
                self.scheduler.release(&task_id);
                info!(task_id = %task_id, status = %to, "task ended");
                // Once per task: it has just left the actor, so no later transition reaches here.
                self.events.publish(ClusterEvent::TaskFinished { task_id: task_id.clone(), status: to });
                self.logs.wake(&task_id);
                for w in ending.waiters {
                    w.ended(&task);
                }
                self.schedule().await;
            }
            Err(e) => {
                let retry_loss = match active.task.state() {
                    TaskState::Pending { .. } => {
                        let (task, seq) = (active.task.clone(), active.seq);
                        self.queue(&task, seq);
                        false
                    }
                    _ => {
                        let worker = active.task.worker_id().cloned();
                        worker.is_some_and(|w| !self.worker_active(&w))
                    }
                };
                warn!(task_id = %task_id, disk_full = e.is_disk_full(), "final transition not written; task left as it was");
                for w in ending.waiters {
                    w.failed(&e);
                }
                if retry_loss {
                    // Its worker is gone and will not report again: decide again soon.
                    self.unconfirmed.insert(task_id, Instant::now() + END_RETRY);
                }
            }
        }
    }

    fn worker_active(&self, worker: &WorkerId) -> bool {
        self.scheduler.workers().any(|w| &w.worker_id == worker && w.active)
    }

    /// Places whatever fits and sends the start commands.
    async fn schedule(&mut self) {
        for placement in self.scheduler.schedule() {
            let Some(active) = self.tasks.get_mut(&placement.task_id) else {
                self.scheduler.release(&placement.task_id);
                continue;
            };
            let now = unix_ms();
            // Time since the task (last) became pending.
            let waited = now.saturating_sub(active.task.updated_at_ms).max(0) as u64;
            self.metrics.observe_scheduling(Duration::from_millis(waited));
            let event = match active.task.place(placement.worker_id.clone(), placement.gpu_indices, now) {
                Ok(e) => e,
                Err(e) => {
                    warn!(error = %e, "placement of a task that is not pending");
                    self.scheduler.release(&placement.task_id);
                    continue;
                }
            };
            active.confirmed = false;
            let task = active.task.clone();
            debug!(task_id = %task.task_id, worker_id = %placement.worker_id, "task placed");
            self.persist(&task, event).await;
            self.send_start(&task);
        }
    }

    fn send_start(&self, task: &Task) {
        let Some(worker) = task.worker_id() else { return };
        let command = WorkerCommand::Start(TaskLaunch::from(task));
        if !self.commands.send(worker, command) {
            // Sent again when the worker's command stream (re)opens.
            debug!(task_id = %task.task_id, worker_id = %worker, "worker not connected; start deferred");
        }
    }

    fn send_cancel(&self, worker: &WorkerId, task_id: &str, reason: &str) {
        // Ids a worker listed that do not parse name no task: nothing to stop.
        let Ok(id) = TaskId::parse(task_id) else { return };
        let grace = Some(self.config.cancel_grace).filter(|g| !g.is_zero());
        let command = WorkerCommand::Cancel(TaskCancel { task_id: id, grace, reason: reason.to_string() });
        if !self.commands.send(worker, command) {
            debug!(task_id, worker_id = %worker, "worker not connected; cancel deferred");
        }
    }

    /// Re-sends start commands the worker has not acknowledged, and cancels.
    fn dispatch_unconfirmed(&self, worker: &WorkerId) {
        for a in self.tasks.values() {
            if a.task.worker_id() != Some(worker) || a.ending.is_some() {
                continue;
            }
            if a.cancel_requested {
                self.send_cancel(worker, a.task.task_id.as_str(), "cancelled by user");
            } else if !a.confirmed && a.task.status() == TaskStatus::Queued {
                self.send_start(&a.task);
            }
        }
    }

    async fn cancel(&mut self, task_id: TaskId, reply: oneshot::Sender<Result<Task, TaskError>>) {
        let Some(active) = self.tasks.get_mut(&task_id) else {
            let _ = reply.send(Err(TaskError::NotFound(task_id.to_string())));
            return;
        };
        if let Some(ending) = &mut active.ending {
            ending.waiters.push(Waiter::Cancel(reply));
            return;
        }
        match active.task.status() {
            TaskStatus::Pending => {
                // Answered once the cancel is durable.
                let waiter = Some(Waiter::Cancel(reply));
                self.end(&task_id, TaskStatus::Cancelled, "cancelled by user", Outcome::default(), waiter)
                    .await;
            }
            _ => {
                active.cancel_requested = true;
                let task = active.task.clone();
                if let Some(worker) = task.worker_id() {
                    self.send_cancel(worker, task.task_id.as_str(), "cancelled by user");
                }
                let _ = reply.send(Ok(task));
            }
        }
    }

    /// A report for an unfinished task placed on another worker: refused, since a worker
    /// speaks only for the tasks placed on it (a stale copy here is told to stop either way).
    fn placed_elsewhere(&self, report: &TaskReport) -> Option<TaskError> {
        let active = self.tasks.get(&report.task_id)?;
        let placed = active.task.worker_id()?;
        // An earlier attempt that ran there may still tell how it ended.
        let ran_there = active.earlier.iter().any(|(w, a)| w == &report.worker_id && *a == report.attempt);
        (placed != &report.worker_id && !ran_there).then(|| TaskError::NotPlacedHere {
            task_id: report.task_id.clone(),
            worker_id: report.worker_id.clone(),
            placed: placed.clone(),
        })
    }

    async fn on_report(&mut self, report: TaskReport) -> ReportOutcome {
        let stale = ReportOutcome { keep_running: false, persisted: None };
        let task_id = report.task_id.clone();
        let Some(active) = self.tasks.get_mut(&task_id) else { return stale };
        let ours =
            active.task.worker_id() == Some(&report.worker_id) && active.task.attempt == report.attempt;
        if !ours {
            if report.update.is_final()
                && active.earlier.contains(&(report.worker_id.clone(), report.attempt))
            {
                return self.late_result(&task_id, report).await;
            }
            debug!(task_id = %task_id, worker_id = %report.worker_id, "report from a stale copy");
            return stale;
        }
        active.confirmed = true;
        self.unconfirmed.remove(&task_id);
        if let Some(ending) = &mut active.ending {
            // Its end is being written: a re-sent final report waits for that write.
            let mut outcome = ReportOutcome { keep_running: true, persisted: None };
            if report.update.is_final() {
                let (tx, rx) = oneshot::channel();
                ending.waiters.push(Waiter::Report(tx));
                outcome.persisted = Some(rx);
            }
            return outcome;
        }
        let cancel_requested = active.cancel_requested;
        let (status, outcome) = match report.update {
            TaskUpdate::Status { status, outcome } => (status, outcome),
            TaskUpdate::Interrupted { cause, message } => {
                let reason = format!(
                    "attempt {} interrupted on worker {} ({}): {message}",
                    report.attempt,
                    report.worker_id,
                    cause.as_str()
                );
                if cause == Interruption::WorkerStopping {
                    // Nothing more goes there: it would only be interrupted again.
                    self.draining.insert(report.worker_id.clone());
                    self.refresh(&report.worker_id);
                }
                self.requeue(&task_id, &reason, true).await;
                self.schedule().await;
                return ReportOutcome { keep_running: true, persisted: None };
            }
            TaskUpdate::Progress(message) => {
                // Progress without a status change (an image pull): recorded as an event.
                self.note(&task_id, &message).await;
                return ReportOutcome { keep_running: true, persisted: None };
            }
        };
        let (to, reason) = match status {
            RunStatus::Queued => return ReportOutcome { keep_running: true, persisted: None },
            RunStatus::Running => {
                if active.task.status() == TaskStatus::Queued {
                    self.transition(&task_id, TaskStatus::Running, "started", outcome).await;
                }
                return ReportOutcome { keep_running: true, persisted: None };
            }
            RunStatus::Completed => (TaskStatus::Completed, "exited with code 0".to_string()),
            RunStatus::Failed if cancel_requested => (TaskStatus::Cancelled, "cancelled by user".to_string()),
            RunStatus::Failed => {
                let reason = match (&outcome.error, outcome.exit_code) {
                    (Some(e), _) => e.clone(),
                    (None, Some(code)) => format!("exited with code {code}"),
                    (None, None) => "failed".to_string(),
                };
                (TaskStatus::Failed, reason)
            }
            RunStatus::Cancelled => (TaskStatus::Cancelled, "cancelled by user".to_string()),
        };
        // Acknowledged once durable, so the worker re-sends it if the write fails.
        let (tx, rx) = oneshot::channel();
        self.end(&task_id, to, &reason, outcome, Some(Waiter::Report(tx))).await;
        ReportOutcome { keep_running: true, persisted: Some(rx) }
    }

    /// The final result of an earlier attempt, reported after a partition: kept when no
    /// newer attempt has started (which is then withdrawn), recorded on the task either way.
    async fn late_result(&mut self, task_id: &TaskId, report: TaskReport) -> ReportOutcome {
        let stale = ReportOutcome { keep_running: false, persisted: None };
        let Some(active) = self.tasks.get(task_id) else { return stale };
        let (n, worker) = (report.attempt, report.worker_id.clone());
        let current = active.task.attempt;
        let (status, outcome) = match report.update {
            TaskUpdate::Status { status, outcome } => (status, outcome),
            TaskUpdate::Interrupted { message, .. } => {
                let note =
                    format!("attempt {n} was stopped on worker {worker} while out of contact: {message}");
                self.note(task_id, &note).await;
                return stale;
            }
            TaskUpdate::Progress(_) => return stale,
        };
        let (to, what) = match status {
            RunStatus::Completed => (TaskStatus::Completed, "completed"),
            RunStatus::Failed if active.cancel_requested => (TaskStatus::Cancelled, "was cancelled"),
            RunStatus::Failed => (TaskStatus::Failed, "failed"),
            RunStatus::Cancelled => (TaskStatus::Cancelled, "was cancelled"),
            RunStatus::Queued | RunStatus::Running => return stale,
        };
        let started = active.ending.is_some() || active.task.status() == TaskStatus::Running;
        if started {
            let note = format!(
                "attempt {n} {what} on worker {worker} during the partition; discarded, attempt {current} already running"
            );
            info!(task_id = %task_id, "{note}");
            self.note(task_id, &note).await;
            return stale;
        }
        let reason = format!("attempt {n} {what} on worker {worker} during the partition; kept");
        info!(task_id = %task_id, "{reason}");
        // A newer attempt placed but not started is withdrawn.
        if let Some(placed) = active.task.worker_id().cloned() {
            self.send_cancel(
                &placed,
                task_id.as_str(),
                "the task ended: an earlier attempt's result was kept",
            );
        }
        let (tx, rx) = oneshot::channel();
        let now = unix_ms();
        self.end_by(task_id, Some(Waiter::Report(tx)), |task| {
            task.end_with_earlier_run(worker, to, &reason, outcome, now)
        })
        .await;
        ReportOutcome { keep_running: true, persisted: Some(rx) }
    }

    /// Records `note` on the task without changing its status.
    async fn note(&mut self, task_id: &TaskId, note: &str) {
        let Some(active) = self.tasks.get(task_id) else { return };
        let task = active.task.clone();
        let event = cloudai_domain::TaskEvent {
            task_id: task.task_id.clone(),
            time_ms: unix_ms(),
            from: Some(task.status()),
            to: task.status(),
            reason: note.chars().take(1024).collect(),
            worker_id: task.worker_id().cloned(),
        };
        self.persist(&task, event).await;
    }

    /// Tells the scheduler whether `worker` takes new tasks now.
    fn refresh(&mut self, worker: &WorkerId) {
        let schedulable = !self.silent.contains(worker)
            && !self.unhealthy.contains(worker)
            && !self.draining.contains(worker);
        let _ = self.scheduler.set_active(worker, schedulable);
    }

    fn resources(info: &WorkerInfo, active: bool) -> WorkerResources {
        WorkerResources {
            worker_id: info.worker_id.clone(),
            cpu_cores: info.cpu_cores,
            memory_mb: info.memory_mb,
            gpus: info.gpus.iter().map(|g| g.index).collect(),
            drivers: info.drivers.clone(),
            active,
        }
    }

    async fn on_registered(&mut self, info: &WorkerInfo, running: &[RunningTask], ending: Option<&[String]>) {
        let worker = info.worker_id.clone();
        // A new process of the worker: it runs what it says, and takes tasks again.
        if self.silent.remove(&worker) {
            self.hold_requeued();
        }
        self.draining.remove(&worker);
        let schedulable = !self.unhealthy.contains(&worker);
        if let Err(e) = self.scheduler.upsert_worker(Self::resources(info, schedulable)) {
            warn!(worker_id = %worker, error = %e, "cannot add worker to the scheduler");
            return;
        }
        // Tasks restored after a restart get their reservations back.
        for a in self.tasks.values_mut().filter(|a| a.unreserved && a.task.worker_id() == Some(&worker)) {
            a.unreserved = false;
            let t = &a.task;
            if let Err(e) = self.scheduler.reserve(
                &worker,
                t.task_id.clone(),
                t.spec.cpu_required,
                t.spec.memory_required,
                t.gpu_indices(),
            ) {
                warn!(task_id = %t.task_id, error = %e, "cannot restore reservation");
            }
        }
        let reported: HashSet<&str> = running.iter().map(|r| r.task_id.as_str()).collect();
        let deadline = Instant::now() + self.config.loss_grace;
        let missing: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|a| a.task.worker_id() == Some(&worker) && a.task.status().is_placed())
            .filter(|a| a.confirmed && !reported.contains(a.task.task_id.as_str()))
            .map(|a| a.task.task_id.clone())
            .collect();
        for id in missing {
            self.kept.remove(&id);
            match ending {
                // The worker lists what it holds: a task it neither runs nor is reporting is gone.
                Some(ending) if !ending.iter().any(|e| e == id.as_str()) => {
                    self.lose_task(&id, "task vanished from its worker (restarted?)").await;
                }
                // It may have ended while the master was away: its final report is on its way.
                _ => {
                    self.unconfirmed.entry(id).or_insert(deadline);
                }
            }
        }
        let ids: Vec<String> = running.iter().map(|r| r.task_id.clone()).collect();
        self.on_running(&worker, &ids);
        self.schedule().await;
    }

    /// A worker says what it runs: stop copies the master does not want there.
    fn on_running(&mut self, worker: &WorkerId, running: &[String]) {
        for task_id in running {
            let wanted = TaskId::parse(task_id)
                .ok()
                .and_then(|id| self.tasks.get(&id))
                .is_some_and(|a| a.task.worker_id() == Some(worker));
            if !wanted {
                let key = (worker.clone(), task_id.clone());
                let now = Instant::now();
                if self.stale_told.get(&key).is_some_and(|at| now.duration_since(*at) < STALE_RESEND) {
                    continue;
                }
                self.stale_told.insert(key, now);
                info!(task_id = %task_id, worker_id = %worker, "stopping a stale copy of a task");
                self.send_cancel(worker, task_id, "stale copy: the task runs elsewhere or has ended");
            } else if let Ok(id) = TaskId::parse(task_id) {
                self.unconfirmed.remove(&id);
            }
        }
    }

    async fn on_cluster_event(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::WorkerRegistered { info, running, ending, .. } => {
                self.on_registered(&info, &running, ending.as_deref().map(Vec::as_slice)).await
            }
            ClusterEvent::WorkerInactive { worker_id } => {
                self.silent.insert(worker_id.clone());
                self.refresh(&worker_id);
            }
            ClusterEvent::WorkerActive { worker_id } => {
                if self.silent.remove(&worker_id) {
                    self.hold_requeued();
                }
                self.refresh(&worker_id);
                // Its `keep` tasks are back in contact.
                let back: Vec<TaskId> = self.placed_on(&worker_id);
                for id in back {
                    self.kept.remove(&id);
                }
                self.schedule().await;
            }
            ClusterEvent::WorkerLost { worker_id } => {
                self.silent.insert(worker_id.clone());
                self.refresh(&worker_id);
                self.lose_silent_worker_tasks(&worker_id).await;
                self.schedule().await;
            }
            ClusterEvent::WorkerHealth { worker_id, unhealthy } => {
                if unhealthy.is_some() {
                    self.unhealthy.insert(worker_id.clone());
                } else {
                    self.unhealthy.remove(&worker_id);
                }
                self.refresh(&worker_id);
                self.schedule().await;
            }
            ClusterEvent::WorkerUnregistered { worker_id, .. } => {
                // Left cleanly: its tasks go elsewhere now.
                self.lose_worker_tasks(&worker_id, "worker left the cluster").await;
                self.scheduler.remove_worker(&worker_id);
                for set in [&mut self.silent, &mut self.unhealthy, &mut self.draining] {
                    set.remove(&worker_id);
                }
                self.schedule().await;
            }
            // Task ends are our own.
            ClusterEvent::TaskFinished { .. } => {}
        }
    }

    /// After missed events: every worker as the fleet has it now.
    async fn resync(&mut self, fleet: FleetSnapshot) {
        let present: HashSet<WorkerId> =
            fleet.workers.iter().map(|(info, _)| info.worker_id.clone()).collect();
        let gone: Vec<WorkerId> =
            self.scheduler.workers().map(|w| w.worker_id).filter(|id| !present.contains(id)).collect();
        for worker_id in gone {
            self.lose_worker_tasks(&worker_id, "worker left the cluster").await;
            self.scheduler.remove_worker(&worker_id);
        }
        for (info, state) in &fleet.workers {
            let worker = &info.worker_id;
            if state.is_active() {
                self.silent.remove(worker);
            } else {
                self.silent.insert(worker.clone());
            }
            if let Err(e) = self.scheduler.upsert_worker(Self::resources(info, state.is_active())) {
                warn!(worker_id = %worker, error = %e, "cannot update worker in the scheduler");
            }
            self.refresh(worker);
            if matches!(state, crate::fleet::WorkerState::Lost { .. }) {
                self.lose_silent_worker_tasks(worker).await;
            }
        }
        self.schedule().await;
    }

    /// A silent worker is back: what the workers ran during the partition may still be
    /// reported, so re-queued tasks wait a moment before a new attempt could start.
    fn hold_requeued(&mut self) {
        let requeued: Vec<TaskId> = self
            .tasks
            .values()
            .filter(|a| a.task.status() == TaskStatus::Pending && !a.earlier.is_empty() && a.ending.is_none())
            .map(|a| a.task.task_id.clone())
            .collect();
        if requeued.is_empty() {
            return;
        }
        for id in requeued {
            self.scheduler.remove_pending(&id);
            self.held.insert(id);
        }
        let settle = RETURN_SETTLE.min(self.loss_after);
        self.hold_until = Some(Instant::now() + settle);
        debug!(tasks = self.held.len(), ?settle, "re-queued tasks wait for late results");
    }

    /// Puts the held tasks back in the queue, at their places.
    fn release_held(&mut self) {
        self.hold_until = None;
        for id in std::mem::take(&mut self.held) {
            let Some(a) = self.tasks.get(&id) else { continue };
            if a.task.status() == TaskStatus::Pending && a.ending.is_none() {
                let (task, seq) = (a.task.clone(), a.seq);
                self.queue(&task, seq);
            }
        }
    }

    async fn on_tick(&mut self) {
        let now = Instant::now();
        if self.hold_until.is_some_and(|at| at <= now) {
            self.release_held();
        }
        self.stale_told.retain(|_, at| now.duration_since(*at) < STALE_RESEND);
        let expired: Vec<TaskId> =
            self.unconfirmed.iter().filter(|(_, d)| **d <= now).map(|(t, _)| t.clone()).collect();
        for task_id in expired {
            self.unconfirmed.remove(&task_id);
            self.lose_task(&task_id, "task vanished from its worker").await;
        }
        let overdue: Vec<TaskId> =
            self.kept.iter().filter(|(_, d)| **d <= now).map(|(t, _)| t.clone()).collect();
        for task_id in overdue {
            self.kept.remove(&task_id);
            self.lose_task(&task_id, "worker out of contact past the task's max_disconnect").await;
        }
        self.schedule().await;
    }

    /// The placed tasks of `worker`.
    fn placed_on(&self, worker: &WorkerId) -> Vec<TaskId> {
        self.tasks
            .values()
            .filter(|a| a.task.worker_id() == Some(worker) && a.task.status().is_placed())
            .map(|a| a.task.task_id.clone())
            .collect()
    }

    async fn lose_worker_tasks(&mut self, worker: &WorkerId, reason: &str) {
        for id in self.placed_on(worker) {
            self.lose_task(&id, reason).await;
        }
    }

    /// A worker silent past the loss grace: its tasks run elsewhere, but those that may
    /// keep running out of contact (`on_disconnect: keep`) only at their `max_disconnect`.
    async fn lose_silent_worker_tasks(&mut self, worker: &WorkerId) {
        let now = Instant::now();
        for id in self.placed_on(worker) {
            let wait = self.tasks.get(&id).and_then(|a| a.task.spec.max_disconnect());
            match wait.map(|d| d.saturating_sub(self.loss_after)) {
                Some(more) if !more.is_zero() => {
                    info!(task_id = %id, worker_id = %worker, wait_s = more.as_secs(), "worker lost; its keep task waits for it");
                    self.kept.entry(id).or_insert(now + more);
                }
                _ => self.lose_task(&id, "worker lost").await,
            }
        }
    }

    /// A placed task whose worker is gone: retry while attempts remain.
    async fn lose_task(&mut self, task_id: &TaskId, reason: &str) {
        self.requeue(task_id, reason, false).await;
    }

    /// Puts a placed task back in the queue, at the place it had: `free` when its attempt
    /// ended for no fault of the task's (up to [`MAX_FREE_REQUEUES`] times), else spending one
    /// of its retries, or failing it when none is left.
    async fn requeue(&mut self, task_id: &TaskId, reason: &str, free: bool) {
        let Some(a) = self.tasks.get_mut(task_id) else { return };
        // An ending task's outcome is on its way to the store.
        if !a.task.status().is_placed() || a.ending.is_some() {
            return;
        }
        let free = free && a.free_requeues < MAX_FREE_REQUEUES;
        // Runs so far that count against the retries.
        let runs = a.task.attempt.saturating_sub(a.free_requeues);
        let (cancel, max) = (a.cancel_requested, a.task.spec.max_retries);
        if cancel {
            let why = "cancelled by user (worker lost)";
            self.end(task_id, TaskStatus::Cancelled, why, Outcome::default(), None).await;
        } else if free || runs <= max {
            if let Some(placed) = a.task.worker_id().cloned() {
                if a.earlier.len() == EARLIER_KEPT {
                    a.earlier.remove(0);
                }
                a.earlier.push((placed, a.task.attempt));
            }
            a.confirmed = false;
            a.unreserved = false;
            let why = if free {
                a.free_requeues += 1;
                format!("{reason}; queued again (not counted as a retry)")
            } else {
                format!("{reason}; retrying (run {} of {})", runs + 1, max + 1)
            };
            self.scheduler.release(task_id);
            self.unconfirmed.remove(task_id);
            self.kept.remove(task_id);
            self.transition(task_id, TaskStatus::Pending, &why, Outcome::default()).await;
            if let Some(a) = self.tasks.get(task_id) {
                let (task, seq) = (a.task.clone(), a.seq);
                self.queue(&task, seq);
            }
        } else {
            let outcome = Outcome { exit_code: None, error: Some(reason.to_string()) };
            self.end(task_id, TaskStatus::Failed, reason, outcome, None).await;
        }
    }
}
