//! Tasks on the master: submission, placement, status from workers, cancel, loss and
//! restart recovery. One actor owns the scheduler and the unfinished tasks; the store
//! is the source of truth and is read directly for queries.

mod actor;
mod persist;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cloudai_domain::{Task, TaskId, TaskReport, TaskSpec, WorkerId};
use cloudai_proto::v1 as pb;
use cloudai_scheduler::Policy;
use cloudai_store::{LogPage, LogQuery, Store, StoreError, TaskFilter};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::events::EventBus;
use crate::rpc::CommandHub;
use crate::telemetry::TelemetryManager;
use cloudai_domain::WorkerInfo;
use cloudai_domain::time::unix_ms;

pub use actor::TaskCounts;

#[derive(Clone, Debug)]
pub struct TaskConfig {
    /// An inactive worker's tasks are treated as lost after this long.
    pub loss_grace: Duration,
    /// Time between SIGTERM and SIGKILL when a running task is cancelled.
    pub cancel_grace: Duration,
    /// After a master restart, time workers get to check in before their tasks are lost.
    pub restart_grace: Duration,
    pub policy: Policy,
}

impl Default for TaskConfig {
    fn default() -> Self {
        Self {
            loss_grace: Duration::from_secs(30),
            cancel_grace: Duration::from_secs(10),
            restart_grace: Duration::from_secs(30),
            policy: Policy::BinPack,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    #[error("task {0} not found")]
    NotFound(String),
    #[error("task {task_id} is already {status}")]
    Finished { task_id: TaskId, status: cloudai_domain::TaskStatus },
    #[error("the task service is shutting down")]
    ShuttingDown,
    #[error("store error")]
    Store(#[from] StoreError),
}

pub(crate) enum Request {
    Enqueue(Task),
    Cancel(TaskId, oneshot::Sender<Result<Task, TaskError>>),
    Report(TaskReport, oneshot::Sender<ReportOutcome>),
    Registered(WorkerInfo, Vec<pb::RunningTask>),
    Running(WorkerId, Vec<String>),
    StreamOpened(WorkerId),
    PendingReasons(Vec<TaskId>, oneshot::Sender<HashMap<TaskId, String>>),
    Counts(oneshot::Sender<TaskCounts>),
}

/// The actor's answer to a worker's status report.
pub(crate) struct ReportOutcome {
    pub keep_running: bool,
    /// Resolves when the transition is durable (final states only).
    pub persisted: Option<oneshot::Receiver<()>>,
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
    pub telemetry: TelemetryManager,
    pub events: EventBus,
    pub commands: CommandHub,
    pub metrics: crate::metrics::Metrics,
}

/// Handle to the task service; cheap to clone.
#[derive(Clone)]
pub struct TaskService {
    tx: mpsc::Sender<Request>,
    store: Arc<dyn Store>,
    logs: LogWatch,
}

/// Requests queued for the actor before submitters wait.
const REQUEST_BUFFER: usize = 8192;

impl TaskService {
    /// Loads unfinished tasks from the store and starts the actor.
    pub async fn start(
        config: TaskConfig,
        parts: TaskParts,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let unfinished = parts.store.unfinished_tasks().await?;
        let (tx, rx) = mpsc::channel(REQUEST_BUFFER);
        let (persist_tx, persist_rx) = mpsc::channel(REQUEST_BUFFER);
        let logs = LogWatch::default();
        tracker.spawn(persist::run(parts.store.clone(), persist_rx));
        let actor = actor::Actor::new(config, &parts, persist_tx, logs.clone(), unfinished);
        tracker.spawn(actor.run(rx, parts.events.subscribe(), shutdown));
        Ok(Self { tx, store: parts.store, logs })
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Request) -> Result<T, TaskError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(make(reply)).await.map_err(|_| TaskError::ShuttingDown)?;
        answer.await.map_err(|_| TaskError::ShuttingDown)
    }

    /// Accepts a task: durable when this returns, then queued for placement.
    pub async fn submit(&self, spec: TaskSpec) -> Result<Task, TaskError> {
        let task = Task::new(TaskId::generate(), spec, unix_ms());
        self.store.insert_task(&task, &task.created_event()).await?;
        self.tx.send(Request::Enqueue(task.clone())).await.map_err(|_| TaskError::ShuttingDown)?;
        Ok(task)
    }

    pub async fn cancel(&self, task_id: TaskId) -> Result<Task, TaskError> {
        self.ask(|reply| Request::Cancel(task_id, reply)).await?
    }

    /// One task, with the reason it waits when pending.
    pub async fn get(&self, task_id: &TaskId) -> Result<Task, TaskError> {
        let task =
            self.store.get_task(task_id).await?.ok_or_else(|| TaskError::NotFound(task_id.to_string()))?;
        let mut tasks = self.with_reasons(vec![task]).await?;
        tasks.pop().ok_or_else(|| TaskError::NotFound(task_id.to_string()))
    }

    pub async fn list(&self, filter: &TaskFilter) -> Result<Vec<Task>, TaskError> {
        let tasks = self.store.list_tasks(filter).await?;
        self.with_reasons(tasks).await
    }

    async fn with_reasons(&self, mut tasks: Vec<Task>) -> Result<Vec<Task>, TaskError> {
        let pending: Vec<TaskId> = tasks
            .iter()
            .filter(|t| t.status == cloudai_domain::TaskStatus::Pending)
            .map(|t| t.task_id.clone())
            .collect();
        if pending.is_empty() {
            return Ok(tasks);
        }
        let mut reasons = self.ask(|reply| Request::PendingReasons(pending, reply)).await?;
        for t in &mut tasks {
            if let Some(r) = reasons.remove(&t.task_id) {
                t.pending_reason = Some(r);
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
        Ok(self.store.count_by_status().await?)
    }

    pub async fn counts(&self) -> Result<TaskCounts, TaskError> {
        self.ask(Request::Counts).await
    }

    // ---- from the gRPC service ----

    pub(crate) async fn report(&self, report: TaskReport) -> Result<ReportOutcome, TaskError> {
        self.ask(|reply| Request::Report(report, reply)).await
    }

    pub(crate) async fn worker_registered(&self, info: WorkerInfo, running: Vec<pb::RunningTask>) {
        // Remember the worker in the store (workers seen), off the registration's path.
        let now = unix_ms();
        let record = cloudai_store::WorkerRecord {
            worker_id: info.worker_id.clone(),
            hostname: info.hostname.clone(),
            cpu_cores: info.cpu_cores,
            memory_mb: info.memory_mb,
            gpus: info.gpus.len() as u32,
            drivers: info.drivers.clone(),
            labels: info.labels.clone(),
            version: info.version.clone(),
            first_seen_ms: now,
            last_seen_ms: now,
        };
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(e) = store.upsert_worker(&record).await {
                tracing::warn!(worker_id = %record.worker_id, error = %format!("{e:#}"), "cannot record worker");
            }
        });
        let _ = self.tx.send(Request::Registered(info, running)).await;
    }

    /// Every worker that ever registered, as last seen (from the store).
    pub async fn workers_seen(&self) -> Result<Vec<cloudai_store::WorkerRecord>, TaskError> {
        Ok(self.store.list_workers().await?)
    }

    /// From the heartbeat path: never waits; a full queue drops it (the next one comes).
    pub(crate) fn worker_running(&self, worker_id: WorkerId, running: Vec<String>) {
        let _ = self.tx.try_send(Request::Running(worker_id, running));
    }

    pub(crate) async fn stream_opened(&self, worker_id: WorkerId) {
        let _ = self.tx.send(Request::StreamOpened(worker_id)).await;
    }

    pub(crate) async fn append_logs(&self, chunks: Vec<cloudai_store::LogChunk>) -> Result<(), TaskError> {
        let ids: Vec<TaskId> = chunks.iter().map(|c| c.task_id.clone()).collect();
        self.store.append_logs(chunks).await?;
        for id in &ids {
            self.logs.wake(id);
        }
        Ok(())
    }

    /// Tasks placed on (or once run by) a worker.
    pub async fn worker_tasks(&self, worker_id: &WorkerId) -> Result<Vec<Task>, TaskError> {
        let filter = TaskFilter { worker_id: Some(worker_id.clone()), ..TaskFilter::default() };
        Ok(self.store.list_tasks(&filter).await?)
    }
}
