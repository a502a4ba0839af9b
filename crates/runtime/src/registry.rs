//! The registry of tasks on this worker, shared by the runtime's API (which adds tasks
//! and reaches them) and their supervisors (which move them through their phases and
//! take them out when done).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Weak};
use std::time::Duration;

use cloudai_domain::time::unix_ms;
use cloudai_domain::{TaskId, TaskReport, TaskUpdate};
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::RuntimeConfig;
use crate::driver::{Driver, TaskControl};
use crate::link::{MasterLink, RetryPolicy};
use crate::stop::{StopReason, StopRequest};

/// Finished (task, attempt) pairs remembered so a repeated start does not run a task twice.
const REMEMBERED_FINISHED: usize = 1024;

pub(crate) struct Inner {
    pub config: RuntimeConfig,
    pub drivers: HashMap<cloudai_domain::Driver, Arc<dyn Driver>>,
    pub link: Arc<dyn MasterLink>,
    pub tasks: Mutex<HashMap<TaskId, Entry>>,
    finished: Mutex<VecDeque<(TaskId, u32)>>,
    /// Cancelled at worker shutdown: stop every task.
    pub stop_all: CancellationToken,
    /// Cancelled when shutdown stops waiting for deliveries to the master.
    pub give_up: CancellationToken,
    pub tracker: TaskTracker,
    pub policy: RetryPolicy,
    /// When recent attempts failed for the worker's own reasons (working folder, driver).
    environment_failures: Mutex<VecDeque<(std::time::Instant, String)>>,
}

/// This many environment failures within [`ENVIRONMENT_WINDOW`] make the worker unhealthy…
pub(crate) const ENVIRONMENT_FAILURES: usize = 3;
/// …until the window holds fewer again.
pub(crate) const ENVIRONMENT_WINDOW: Duration = Duration::from_secs(60);

/// One task here: its attempt, phase, and how its supervisor is reached.
pub(crate) struct Entry {
    pub attempt: u32,
    /// `on_disconnect: keep`: not stopped when the worker loses contact with the master.
    pub keep_on_disconnect: bool,
    pub phase: Phase,
    pub stop: mpsc::UnboundedSender<StopRequest>,
    /// Cancelled once the supervisor has cleaned up (a next attempt reuses the working folder).
    pub done: CancellationToken,
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

impl Inner {
    pub fn new(mut config: RuntimeConfig, link: Arc<dyn MasterLink>, shutdown: CancellationToken) -> Self {
        let drivers = std::mem::take(&mut config.drivers).into_iter().collect();
        let policy = RetryPolicy {
            initial_backoff: Duration::from_millis(100),
            max_backoff: config.max_retry_backoff,
            call_timeout: config.call_timeout,
            wake: Arc::new(tokio::sync::Notify::new()),
        };
        Self {
            config,
            drivers,
            link,
            tasks: Mutex::default(),
            finished: Mutex::default(),
            stop_all: shutdown.child_token(),
            give_up: CancellationToken::new(),
            tracker: TaskTracker::new(),
            policy,
            environment_failures: Mutex::default(),
        }
    }

    /// An attempt could not run for a reason of this worker's, not the task's.
    pub fn environment_failed(&self, error: &str) {
        let mut failures = self.environment_failures.lock();
        if failures.len() == ENVIRONMENT_FAILURES {
            failures.pop_front();
        }
        failures.push_back((std::time::Instant::now(), error.to_owned()));
    }

    /// Why the recent environment failures make this worker unfit for tasks, if they do.
    pub fn environment_trouble(&self) -> Option<String> {
        let failures = self.environment_failures.lock();
        let recent = failures.iter().filter(|(at, _)| at.elapsed() < ENVIRONMENT_WINDOW).count();
        (recent >= ENVIRONMENT_FAILURES).then(|| {
            let last = failures.back().map_or("", |(_, e)| e.as_str());
            format!(
                "{recent} tasks could not run here within {}s; the last: {last}",
                ENVIRONMENT_WINDOW.as_secs()
            )
        })
    }

    /// A report from this worker about `attempt` of `task_id`, stamped now.
    pub fn report(&self, task_id: &TaskId, attempt: u32, update: TaskUpdate) -> TaskReport {
        TaskReport {
            worker_id: self.config.worker_id.clone(),
            task_id: task_id.clone(),
            attempt,
            timestamp_ms: unix_ms(),
            update,
        }
    }

    pub fn finished_recently(&self, task_id: &TaskId, attempt: u32) -> bool {
        self.finished.lock().iter().any(|(id, a)| id == task_id && *a >= attempt)
    }

    /// Moves a task to `phase`, unless it is already ending.
    pub fn set_phase(&self, task_id: &TaskId, attempt: u32, phase: Phase) {
        let mut tasks = self.tasks.lock();
        if let Some(entry) = tasks.get_mut(task_id)
            && entry.attempt == attempt
            && !matches!(entry.phase, Phase::Ending)
        {
            entry.phase = phase;
        }
    }

    /// The supervisor of this attempt is done: forget the task, remember the attempt.
    pub fn finish(&self, task_id: &TaskId, attempt: u32) {
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
pub(crate) fn mark_stale(inner: &Weak<Inner>, task_id: &TaskId, attempt: Option<u32>) {
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
