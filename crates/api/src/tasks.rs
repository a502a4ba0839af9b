//! `/api/tasks…`: the submission body, tasks, their events and the per-status summary.

use std::collections::BTreeMap;

use cloudai_domain::{Driver, OnDisconnect, TaskId, TaskStatus, WorkerId};
use serde::{Deserialize, Deserializer, Serialize};
use utoipa::ToSchema;

/// `POST /api/tasks` body. Left-out fields take the server's defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"driver": "process", "command": ["sh", "-c", "echo hi"], "cpu_required": 0.5, "memory_required": 64}))]
pub struct SubmitTask {
    /// Required for the docker driver.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    /// Argv (no shell); required for the process driver. `null` is the same as left out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Option<Vec<String>>)]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schema(value_type = Option<BTreeMap<String, String>>)]
    pub env: BTreeMap<String, String>,
    /// Names in `env` whose values no answer shows (the task still gets them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Option<Vec<String>>)]
    pub secret_env: Vec<String>,
    /// CPU cores, > 0 and at most 4096.
    #[schema(exclusive_minimum = 0.0, maximum = 4096.0)]
    pub cpu_required: f64,
    /// Memory, MB, > 0 and at most 64 TiB (a fraction is rounded up); also at most what the
    /// largest registered worker has.
    #[schema(value_type = f64, exclusive_minimum = 0.0, maximum = 67108864.0)]
    pub memory_required: u64,
    /// Whole GPUs, at most 64; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 64)]
    pub gpu_required: Option<u32>,
    /// Higher runs first; default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Default `docker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::DriverSchema>)]
    pub driver: Option<Driver>,
    /// Re-runs allowed after the task's worker is lost, at most 100; default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(maximum = 100)]
    pub max_retries: Option<u32>,
    /// `stop` (default): the worker stops the task when it loses contact with the master, so
    /// it never runs twice at once; `keep`: work safe to run twice keeps running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::schema::OnDisconnectSchema>)]
    pub on_disconnect: Option<OnDisconnect>,
    /// For `keep`: seconds of silence from its worker before the task runs elsewhere
    /// (1 to 604800; default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 604800)]
    pub max_disconnect_secs: Option<u64>,
}

impl SubmitTask {
    /// A task the process driver runs as `command` (argv, no shell).
    pub fn process(command: Vec<String>, cpu_required: f64, memory_required: u64) -> Self {
        Self::new(None, command, cpu_required, memory_required, Driver::Process)
    }

    /// A task the docker driver runs from `image` (with its default command).
    pub fn docker(image: impl Into<String>, cpu_required: f64, memory_required: u64) -> Self {
        Self::new(Some(image.into()), Vec::new(), cpu_required, memory_required, Driver::Docker)
    }

    fn new(image: Option<String>, command: Vec<String>, cpu: f64, memory: u64, driver: Driver) -> Self {
        Self {
            docker_image: image,
            command,
            env: BTreeMap::new(),
            secret_env: Vec::new(),
            cpu_required: cpu,
            memory_required: memory,
            gpu_required: None,
            priority: None,
            driver: Some(driver),
            max_retries: None,
            on_disconnect: None,
            max_disconnect_secs: None,
        }
    }
}

/// The request part of a task, as validated (every default filled in).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskSpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub docker_image: Option<String>,
    /// Left out of brief listings (`?brief=true`).
    #[serde(default)]
    pub command: Vec<String>,
    /// Left out of brief listings (`?brief=true`). The values of `secret_env` read
    /// [`SECRET_VALUE`].
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_env: Vec<String>,
    pub cpu_required: f64,
    pub memory_required: u64,
    pub gpu_required: u32,
    pub priority: i32,
    #[schema(value_type = crate::schema::DriverSchema)]
    pub driver: Driver,
    pub max_retries: u32,
    /// Left out when `stop`, the default.
    #[serde(default, skip_serializing_if = "OnDisconnect::is_stop")]
    #[schema(value_type = Option<crate::schema::OnDisconnectSchema>)]
    pub on_disconnect: OnDisconnect,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disconnect_secs: Option<u64>,
}

/// What every answer shows in place of a secret env value.
pub const SECRET_VALUE: &str = "<secret>";

impl From<cloudai_domain::TaskSpec> for TaskSpec {
    fn from(s: cloudai_domain::TaskSpec) -> Self {
        let mut env = s.env;
        for name in &s.secret_env {
            if let Some(value) = env.get_mut(name) {
                *value = SECRET_VALUE.to_string();
            }
        }
        Self {
            docker_image: s.docker_image,
            command: s.command,
            env,
            secret_env: s.secret_env.into_iter().collect(),
            cpu_required: s.cpu_required,
            memory_required: s.memory_required,
            gpu_required: s.gpu_required,
            priority: s.priority,
            driver: s.driver,
            max_retries: s.max_retries,
            on_disconnect: s.on_disconnect,
            max_disconnect_secs: s.max_disconnect_secs,
        }
    }
}

/// A task: its id and status, the request, where it runs and how it ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    #[schema(value_type = String)]
    pub task_id: TaskId,
    #[schema(value_type = crate::schema::TaskStatusSchema)]
    pub status: TaskStatus,
    #[serde(flatten)]
    pub spec: TaskSpec,
    /// Once placed.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub worker_id: Option<WorkerId>,
    /// The GPUs the task holds on its worker (empty when none, or not placed).
    pub gpu_indices: Vec<u32>,
    /// Runs started so far (0 until first placed).
    pub attempt: u32,
    /// Why a pending task is waiting.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub pending_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i32)]
    pub exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub error: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64)]
    pub started_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64)]
    pub finished_at_ms: Option<i64>,
    /// The name of the token that submitted it (`local` on a master without authentication);
    /// absent for tasks older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub submitted_by: Option<String>,
}

impl From<cloudai_domain::Task> for Task {
    fn from(t: cloudai_domain::Task) -> Self {
        // The flat record has the fields this answer shows.
        let t = cloudai_domain::TaskRecord::from(t);
        Self {
            task_id: t.task_id,
            status: t.status,
            spec: t.spec.into(),
            worker_id: t.worker_id,
            gpu_indices: t.gpu_indices,
            attempt: t.attempt,
            pending_reason: t.pending_reason,
            exit_code: t.exit_code,
            error: t.error,
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
            started_at_ms: t.started_at_ms,
            finished_at_ms: t.finished_at_ms,
            submitted_by: t.submitted_by,
        }
    }
}

impl Task {
    /// Replaces every env value not already secret with [`crate::HIDDEN_VALUE`]: the answer
    /// for a caller that is neither the submitter nor an operator.
    pub fn hide_env(&mut self) {
        for (name, value) in &mut self.spec.env {
            if !self.spec.secret_env.contains(name) {
                *value = crate::HIDDEN_VALUE.to_string();
            }
        }
    }
}

/// Page sizes of every listing (`?limit=`).
pub const DEFAULT_PAGE: usize = 100;
pub const MAX_PAGE: usize = 1000;

/// `GET /api/tasks`: one page of tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
    /// Pass as `?after=` for the next page; `null` on the last one.
    #[serde(deserialize_with = "required_nullable")]
    #[schema(value_type = Option<String>, required = true)]
    pub next: Option<TaskId>,
}

/// Which page of tasks to list: the query of `GET /api/tasks` (and of a worker's tasks).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskListQuery {
    pub status: Option<TaskStatus>,
    /// A previous page's `next`.
    pub after: Option<TaskId>,
    pub limit: Option<usize>,
    pub newest_first: bool,
    /// Leave out `env` and `command`.
    pub brief: bool,
}

impl TaskListQuery {
    /// The query string.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        if let Some(status) = self.status {
            q.push(("status", status.to_string()));
        }
        if let Some(after) = &self.after {
            q.push(("after", after.to_string()));
        }
        if let Some(limit) = self.limit {
            q.push(("limit", limit.to_string()));
        }
        if self.newest_first {
            q.push(("order", "newest".to_string()));
        }
        if self.brief {
            q.push(("brief", "true".to_string()));
        }
        q
    }
}

/// One recorded status change (`GET /api/tasks/{id}/events`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskEvent {
    #[schema(value_type = String)]
    pub task_id: TaskId,
    /// Unix milliseconds.
    pub time_ms: i64,
    /// `null` for the first event (submitted).
    #[serde(deserialize_with = "required_nullable")]
    #[schema(value_type = Option<crate::schema::TaskStatusSchema>, required = true)]
    pub from: Option<TaskStatus>,
    #[schema(value_type = crate::schema::TaskStatusSchema)]
    pub to: TaskStatus,
    pub reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub worker_id: Option<WorkerId>,
}

/// An `Option` the server always sends (as `null` when empty): missing is an error.
fn required_nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    Option::deserialize(d)
}

impl From<cloudai_domain::TaskEvent> for TaskEvent {
    fn from(e: cloudai_domain::TaskEvent) -> Self {
        Self {
            task_id: e.task_id,
            time_ms: e.time_ms,
            from: e.from,
            to: e.to,
            reason: e.reason,
            worker_id: e.worker_id,
        }
    }
}

/// `GET /api/tasks/summary`: tasks per status, zeros included.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TaskSummary {
    pub pending: u64,
    pub queued: u64,
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
    pub cancelled: u64,
}

impl TaskSummary {
    pub fn get(&self, status: TaskStatus) -> u64 {
        match status {
            TaskStatus::Pending => self.pending,
            TaskStatus::Queued => self.queued,
            TaskStatus::Running => self.running,
            TaskStatus::Completed => self.completed,
            TaskStatus::Failed => self.failed,
            TaskStatus::Cancelled => self.cancelled,
        }
    }

    fn slot(&mut self, status: TaskStatus) -> &mut u64 {
        match status {
            TaskStatus::Pending => &mut self.pending,
            TaskStatus::Queued => &mut self.queued,
            TaskStatus::Running => &mut self.running,
            TaskStatus::Completed => &mut self.completed,
            TaskStatus::Failed => &mut self.failed,
            TaskStatus::Cancelled => &mut self.cancelled,
        }
    }
}

impl From<BTreeMap<TaskStatus, u64>> for TaskSummary {
    fn from(counts: BTreeMap<TaskStatus, u64>) -> Self {
        let mut summary = TaskSummary::default();
        for (status, n) in counts {
            *summary.slot(status) += n;
        }
        summary
    }
}
