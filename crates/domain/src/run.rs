//! One attempt of a task on a worker: the commands the master sends about it, and
//! what the worker reports back.
//!
//! The wire types convert to these at the edge (`cloudai-proto`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::ids::{TaskId, WorkerId};
use crate::task::{Driver, OnDisconnect, Outcome, Task};

/// What a worker needs to start one attempt of a task.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskLaunch {
    pub task_id: TaskId,
    pub attempt: u32,
    pub driver: Driver,
    /// Container image; empty for the process driver.
    pub image: String,
    /// argv; never interpreted by a shell.
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cpu_required: f64,
    pub memory_required_mb: u64,
    pub gpu_indices: Vec<u32>,
    /// Whether the worker stops it when it loses contact with the master.
    pub on_disconnect: OnDisconnect,
}

impl From<&Task> for TaskLaunch {
    /// The task's current attempt, on the GPUs it was placed on.
    fn from(task: &Task) -> Self {
        Self {
            task_id: task.task_id.clone(),
            attempt: task.attempt,
            driver: task.spec.driver,
            image: task.spec.docker_image.clone().unwrap_or_default(),
            command: task.spec.command.clone(),
            env: task.spec.env.clone(),
            cpu_required: task.spec.cpu_required,
            memory_required_mb: task.spec.memory_required,
            gpu_indices: task.gpu_indices().to_vec(),
            on_disconnect: task.spec.on_disconnect,
        }
    }
}

/// Stop a task: terminate it, then kill it after the grace period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskCancel {
    pub task_id: TaskId,
    /// `None`: the worker's default.
    pub grace: Option<Duration>,
    pub reason: String,
}

/// A command from the master to a worker.
#[derive(Clone, Debug, PartialEq)]
pub enum WorkerCommand {
    Start(TaskLaunch),
    Cancel(TaskCancel),
}

/// Where an attempt of a task is, as its worker reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Accepted, being prepared (image pull, container create).
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, RunStatus::Completed | RunStatus::Failed | RunStatus::Cancelled)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a report says.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskUpdate {
    /// The attempt is now `status`; `outcome` says how it ended.
    Status { status: RunStatus, outcome: Outcome },
    /// Worth recording on the task without a status change (a line of an image pull).
    Progress(String),
    /// The attempt was stopped, or never started, for a reason that is not the task's own:
    /// it should run again (elsewhere), without spending one of its retries.
    Interrupted { cause: Interruption, message: String },
}

/// Why an attempt ended without the task being at fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Interruption {
    /// Its worker lost contact with the master and stopped it, so that it never runs twice.
    Fenced,
    /// Its worker could not run it: the working folder, the driver, the image store.
    Environment,
    /// Its worker is shutting down.
    WorkerStopping,
}

impl Interruption {
    pub fn as_str(self) -> &'static str {
        match self {
            Interruption::Fenced => "fenced",
            Interruption::Environment => "environment",
            Interruption::WorkerStopping => "worker stopping",
        }
    }
}

impl TaskUpdate {
    /// The report of a status with nothing more to say (queued, running).
    pub fn status(status: RunStatus) -> Self {
        TaskUpdate::Status { status, outcome: Outcome::default() }
    }

    pub fn is_final(&self) -> bool {
        match self {
            TaskUpdate::Status { status, .. } => status.is_final(),
            TaskUpdate::Progress(_) => false,
            TaskUpdate::Interrupted { .. } => true,
        }
    }
}

impl fmt::Display for TaskUpdate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TaskUpdate::Status { status, .. } => status.fmt(f),
            TaskUpdate::Progress(_) => f.write_str("progress"),
            TaskUpdate::Interrupted { cause, .. } => write!(f, "interrupted ({})", cause.as_str()),
        }
    }
}

/// What a worker says about one attempt of a task.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskReport {
    pub worker_id: WorkerId,
    pub task_id: TaskId,
    pub attempt: u32,
    /// Unix milliseconds at the worker.
    pub timestamp_ms: i64,
    pub update: TaskUpdate,
}
