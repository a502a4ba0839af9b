//! Tasks on the master: submission, placement, status from workers, cancel, loss and
//! restart recovery. One actor owns the scheduler and the unfinished tasks; the store
//! is the source of truth and is read directly for queries.

mod actor;
mod commands;
mod ending;
mod live;
mod persist;
mod quota;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cloudai_domain::{LogBatch, SpecLimits, Task, TaskId, TaskReport, TaskSpec, WorkerId};
use cloudai_scheduler::Policy;
use cloudai_store::{LogPage, LogQuery, Store, StoreError, TaskCursor, TaskFilter};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::events::EventBus;
use crate::fleet::Fleet;
use crate::shutdown::Stage;
use cloudai_domain::time::unix_ms;

pub use crate::metrics::TaskCounts;
pub use commands::CommandHub;
pub use live::TaskPage;

#[derive(Clone, Debug)]
pub struct TaskConfig {
    /// An inactive worker's tasks are treated as lost after this long.
    pub loss_grace: Duration,
    /// Time between SIGTERM and SIGKILL when a running task is cancelled.
    pub cancel_grace: Duration,
    /// After a master restart, time workers get to check in before their tasks are lost.
    pub restart_grace: Duration,
    pub policy: Policy,
    /// What one submission may hold.
    pub limits: SpecLimits,
    /// How long after a task ended its worker's output is still taken: the last batches may
    /// follow the final report, after retries over a slow or broken link.
    pub late_output: Duration,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            loss_grace: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(10),
            restart_grace: Duration::from_secs(30),
            policy: Policy::BinPack,
            limits: SpecLimits::default(),
            late_output: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {0:?} not found")]
    NotFound(String),
    #[error("task {task_id} is already {status}")]
    Finished { task_id: TaskId, status: cloudai_domain::TaskStatus },
    #[error("after: no task {0:?} to continue from (pass a page's `next`)")]
    UnknownCursor(String),
    /// Output for a task the sending worker does not run (nor just ended).
    #[error("task {task_id} {why}, so worker {worker_id} may not ship its output")]
    NotShippedHere { task_id: TaskId, worker_id: WorkerId, why: String },
    /// A report or output for a task placed on another worker: a worker speaks only for its own.
    #[error("task {task_id} is placed on worker {placed}, not on worker {worker_id}")]
    NotPlacedHere { task_id: TaskId, worker_id: WorkerId, placed: WorkerId },
    #[error(
        "{submitter} already has {limit} pending tasks, the most allowed (MAX_PENDING_PER_SUBMITTER); retry once some have started"
    )]
    TooManyPending { submitter: String, limit: usize },
    #[error("the master is shutting down")]
    ShuttingDown,
    /// Nothing was saved, so nothing changed: the same request succeeds once there is room.
    #[error("the master's disk is full, so the change was not saved; retry once there is room")]
    DiskFull(#[source] Arc<StoreError>),
    /// The detail is logged, not shown: the caller can only retry.
    #[error("the master cannot reach its store; retry")]
    Store(#[source] Arc<StoreError>),
}

impl From<Arc<StoreError>> for TaskError {
    fn from(e: Arc<StoreError>) -> Self {
        if e.is_disk_full() { TaskError::DiskFull(e) } else { TaskError::Store(e) }
    }
}

impl From<StoreError> for TaskError {
    fn from(e: StoreError) -> Self {
        Arc::new(e).into()
    }
}

pub(crate) enum Request {
    Enqueue(Box<Task>),
    Cancel(TaskId, oneshot::Sender<Result<Task, TaskError>>),
    /// Worker reports come with their answer channel; a final one is answered once durable.
    Report(TaskReport, oneshot::Sender<Result<ReportOutcome, TaskError>>),
    Running(WorkerId, Vec<String>),
    StreamOpened(WorkerId),
    PendingReasons(Vec<TaskId>, oneshot::Sender<HashMap<TaskId, String>>),
    Counts(oneshot::Sender<TaskCounts>),
}

/// The actor's answer to a worker's status report.
pub(crate) struct ReportOutcome {
    pub keep_running: bool,
    /// Resolves when the final state is durable, or with why it could not be written
    /// (final states only): the report is acknowledged only on `Ok`.
    pub persisted: Option<oneshot::Receiver<Result<(), TaskError>>>,
}

/// Wakes log followers when output arrives or a task ends.
#[derive(Clone, Default)]
pub struct LogWatch {
    waiters: Arc<Mutex<HashMap<TaskId, Arc<Notify>>>>,
}

impl LogWatch {
    pub fn notifier(&self, task_id: &TaskId) -> Arc<Notify> {
        self.waiters.lock().entry(task_id.clone()).or_default().clone()
    }

    pub fn wake(&self, task_id: &TaskId) {
        let waiter = self.waiters.lock().get(task_id).cloned();
        if let Some(n) = waiter {
            n.notify_waiters();
        }
    }

    /// Forgets a task's notifier once nobody waits on it.
    pub fn release(&self, task_id: &TaskId) {
        let mut waiters = self.waiters.lock();
        if waiters.get(task_id).is_some_and(|n| Arc::strong_count(n) == 1) {
            waiters.remove(task_id);
        }
    }
}

/// What the task service is wired to.
pub struct TaskParts {
    pub store: Arc<dyn Store>,
    pub fleet: Fleet,
    pub events: EventBus,
    pub commands: CommandHub,
    pub metrics: crate::metrics::Metrics,
}

/// Handle to the task service; cheap to clone.
#[derive(Clone)]
pub struct TaskService {
    tx: mpsc::Sender<Request>,
    store: Arc<dyn Store>,
    /// What the actor changed that the store may not have yet: read first.
    live: live::LiveTasks,
    logs: LogWatch,
    limits: SpecLimits,
    late_output: Duration,
    pending: quota::PendingQuota,
}

/// Extra rows a listing asks the store for, at most, to make up for tasks in flight.
const LIST_SLACK: usize = 256;

/// Requests queued for the actor before submitters wait.
const REQUEST_BUFFER: usize = 8192;

impl TaskService {
    /// Loads unfinished tasks from the store and starts the actor.
    pub async fn start(config: TaskConfig, parts: TaskParts, stage: &Stage) -> Result<Self, StoreError> {
        let unfinished = actor::Unfinished {
            tasks: parts.store.unfinished_tasks().await?,
            cancelling: parts.store.cancels_requested().await?.into_iter().collect(),
        };
        let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
        let (persist_tx, persist_rx) = mpsc::channel(REQUEST_BUFFER);
        let logs = LogWatch::default();
        let live = live::LiveTasks::default();
        let late_output = config.late_output;
        let (settled_tx, settled_rx) = mpsc::unbounded_channel();
        stage.spawn(persist::run(parts.store.clone(), persist_rx, live.clone(), settled_tx));
        // Subscribed before the restored tasks' workers can register.
        let events = parts.fleet.subscribe("task actor");
        let limits = config.limits;
        let pending = quota::PendingQuota::default();
        let channels = actor::Channels {
            persist: persist_tx,
            live: live.clone(),
            logs: logs.clone(),
            pending: pending.clone(),
        };
        let actor = actor::Actor::new(config, &parts, channels, unfinished);
        stage.spawn(actor.run(rx, settled_rx, events, stage.token()));
        Ok(Self { tx, store: parts.store, live, logs, limits, late_output, pending })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, TaskError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| TaskError::ShuttingDown)?;
        answer.await.map_err(|_| TaskError::ShuttingDown)
    }

    /// What one submission may hold (the master's settings).
    pub fn spec_limits(&self) -> &SpecLimits {
        &self.limits
    }

    /// Accepts a task from `submitter`, unless it already has `max_pending` pending tasks:
    /// durable when this returns, then queued for placement.
    pub async fn submit(
        &self,
        spec: TaskSpec,
        submitter: &str,
        max_pending: usize,
    ) -> Result<Task, TaskError> {
        if !self.pending.try_reserve(submitter, max_pending) {
            return Err(TaskError::TooManyPending { submitter: submitter.to_string(), limit: max_pending });
        }
        let task = Task::new(TaskId::generate(), spec, unix_ms()).with_submitter(submitter);
        let queued = match self.store.insert_task(&task, &task.created_event()).await {
            Ok(()) => self
                .tx
                .send(Request::Enqueue(Box::new(task.clone())))
                .await
                .map_err(|_| TaskError::ShuttingDown),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = queued {
            self.pending.release(Some(submitter));
            return Err(e);
        }
        Ok(task)
    }

    /// Cancels a task: a pending one at once (answered once durable), a placed one by asking
    /// its worker to stop it (answered once the request is durable, so a restarted master
    /// still stops it rather than running it again). A task that has ended is `Finished` with
    /// its state.
    pub async fn cancel(&self, task_id: TaskId) -> Result<Task, TaskError> {
        match self.ask(|reply| Request::Cancel(task_id.clone(), reply)).await? {
            Ok(task) if task.status().is_placed() => {
                self.store.request_cancel(&task_id).await?;
                Ok(task)
            }
            // Not in flight: ended, or unknown.
            Err(TaskError::NotFound(_)) => {
                let task = self.get(&task_id).await?;
                Err(TaskError::Finished { task_id, status: task.status() })
            }
            answer => answer,
        }
    }

    /// One task as the actor has it, with the reason it waits when pending.
    pub async fn get(&self, task_id: &TaskId) -> Result<Task, TaskError> {
        let task = match self.live.get(task_id) {
            Some(task) => task,
            None => {
                self.store.get_task(task_id).await?.ok_or_else(|| TaskError::NotFound(task_id.to_string()))?
            }
        };
        let mut tasks = self.with_reasons(vec![task]).await?;
        tasks.pop().ok_or_else(|| TaskError::NotFound(task_id.to_string()))
    }

    /// A page of tasks as `filter` says, continuing after the task `after` (a previous
    /// page's `next`). Reads the store, then overlays what the actor changed since.
    pub async fn list(&self, mut filter: TaskFilter, after: Option<&TaskId>) -> Result<TaskPage, TaskError> {
        if let Some(id) = after {
            let cursor = match self.live.read(id, TaskCursor::of) {
                Some(cursor) => cursor,
                None => {
                    let task = self.store.get_task(id).await?;
                    TaskCursor::of(&task.ok_or_else(|| TaskError::UnknownCursor(id.to_string()))?)
                }
            };
            filter.after = Some(cursor);
        }
        // One more row than the page says whether there is a next one; the tasks in flight
        // may drop out of the store's answer, so ask for a few more (a short page is still
        // correct: it ends where the store's rows did).
        let asked = filter.limit.map(|l| l.saturating_add(1).saturating_add(self.live.len().min(LIST_SLACK)));
        let stored = self.store.list_tasks(&TaskFilter { limit: asked, ..filter.clone() }).await?;
        let mut page = self.live.overlay(stored, &filter, asked);
        page.tasks = self.with_reasons(page.tasks).await?;
        Ok(page)
    }

    async fn with_reasons(&self, mut tasks: Vec<Task>) -> Result<Vec<Task>, TaskError> {
        let pending: Vec<TaskId> = tasks
            .iter()
            .filter(|t| t.status() == cloudai_domain::TaskStatus::Pending)
            .map(|t| t.task_id.clone())
            .collect();
        if pending.is_empty() {
            return Ok(tasks);
        }
        let mut reasons = self.ask(|reply| Request::PendingReasons(pending, reply)).await?;
        for t in &mut tasks {
            if let Some(r) = reasons.remove(&t.task_id) {
                t.set_pending_reason(r);
            }
        }
        Ok(tasks)
    }

    pub async fn events(&self, task_id: &TaskId) -> Result<Vec<cloudai_domain::TaskEvent>, TaskError> {
        Ok(self.store.task_events(task_id).await?)
    }

    pub async fn read_logs(&self, task_id: &TaskId, query: LogQuery) -> Result<LogPage, TaskError> {
        Ok(self.store.read_logs(task_id, query).await?)
    }

    pub fn log_watch(&self) -> &LogWatch {
        &self.logs
    }

    pub async fn count_by_status(
        &self,
    ) -> Result<std::collections::BTreeMap<cloudai_domain::TaskStatus, u64>, TaskError> {
        Ok(self.live.overlay_counts(self.store.count_by_status().await?))
    }

    pub async fn counts(&self) -> Result<TaskCounts, TaskError> {
        self.ask(Request::Counts).await
    }

    // ---- from the gRPC service ----

    pub(crate) async fn report(&self, report: TaskReport) -> Result<ReportOutcome, TaskError> {
        self.ask(|reply| Request::Report(report, reply)).await?
    }

    /// From the heartbeat path: never waits; a full queue drops it (the next one comes).
    pub(crate) fn worker_running(&self, worker_id: WorkerId, running: Vec<String>) {
        let _ = self.tx.try_send(Request::Running(worker_id, running));
    }

    pub(crate) async fn stream_opened(&self, worker_id: WorkerId) {
        let _ = self.tx.send(Request::StreamOpened(worker_id)).await;
    }

    /// Stores a worker's batch of output if every chunk is for a task placed on that worker
    /// (or that ended there within [`TaskConfig::late_output`]); otherwise stores none of it.
    pub(crate) async fn append_logs(&self, batch: LogBatch) -> Result<(), TaskError> {
        // A worker's shipper sends one task per batch: checked once per task, not per chunk.
        let mut ids: Vec<TaskId> = Vec::new();
        let mut seen: std::collections::HashSet<&TaskId> = std::collections::HashSet::new();
        for c in &batch.chunks {
            if seen.insert(&c.task_id) {
                self.check_output_source(&c.task_id, &batch.worker_id).await?;
                ids.push(c.task_id.clone());
            }
        }
        self.store.append_logs(batch.chunks).await?;
        for id in &ids {
            self.logs.wake(id);
        }
        Ok(())
    }

    /// Whether `worker_id` may ship output for `task_id`: the task is queued or running there,
    /// or its last run ended there a moment ago (its final output may land after the final
    /// report). From the actor's read model; the store only for a task not changed since
    /// it was loaded or since its end was written.
    async fn check_output_source(&self, task_id: &TaskId, worker_id: &WorkerId) -> Result<(), TaskError> {
        let verdict = |task: &Task| self.output_verdict(task, worker_id);
        match self.live.read(task_id, verdict) {
            Some(verdict) => verdict,
            None => match self.store.get_task(task_id).await? {
                Some(task) => verdict(&task),
                None => Err(TaskError::NotFound(task_id.to_string())),
            },
        }
    }

    fn output_verdict(&self, task: &Task, worker_id: &WorkerId) -> Result<(), TaskError> {
        let refuse = |why: String| TaskError::NotShippedHere {
            task_id: task.task_id.clone(),
            worker_id: worker_id.clone(),
            why,
        };
        let status = task.status();
        match task.worker_id() {
            None => Err(refuse(format!("is {status} and placed on no worker"))),
            Some(placed) if placed != worker_id && !status.is_final() => Err(TaskError::NotPlacedHere {
                task_id: task.task_id.clone(),
                worker_id: worker_id.clone(),
                placed: placed.clone(),
            }),
            Some(placed) if placed != worker_id => {
                Err(refuse(format!("ended ({status}) on worker {placed}")))
            }
            Some(_) if !status.is_final() => Ok(()),
            Some(_) => {
                // An end stamped in the future (clocks apart) counts as just now.
                let ended_ms = unix_ms().saturating_sub(task.finished_at_ms().unwrap_or(i64::MIN));
                let late = self.late_output;
                if ended_ms > i64::try_from(late.as_millis()).unwrap_or(i64::MAX) {
                    Err(refuse(format!(
                        "ended ({status}) more than {} ago",
                        humantime::format_duration(late)
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }
}
