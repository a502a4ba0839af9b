//! Tasks: what users submit ([`TaskSpec`]), where a task is ([`TaskState`] with its data,
//! named by [`TaskStatus`]), and the one place where it changes ([`Task::place`] and
//! [`Task::transition`]). [`TaskRecord`] is the flat form the API and the store use.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{TaskId, WorkerId};
use crate::json::StrictJsonError;

/// How a task runs on a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Driver {
    #[default]
    Docker,
    Process,
}

impl Driver {
    pub fn as_str(self) -> &'static str {
        match self {
            Driver::Docker => "docker",
            Driver::Process => "process",
        }
    }
}

impl fmt::Display for Driver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Driver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "docker" => Ok(Driver::Docker),
            "process" => Ok(Driver::Process),
            other => Err(format!("unknown driver {other:?}: expected \"docker\" or \"process\"")),
        }
    }
}

/// Limits on a submission, so one request cannot hold unbounded memory.
pub const MAX_COMMAND_ARGS: usize = 1024;
pub const MAX_ENV_VARS: usize = 512;
pub const MAX_STRING_BYTES: usize = 64 * 1024;
/// All of a task's variables, names and values together.
pub const MAX_ENV_BYTES: usize = 256 * 1024;

/// The master's limits on one submission (settings; `Default` is the constants above).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecLimits {
    pub command_args: usize,
    pub env_vars: usize,
    pub env_bytes: usize,
    /// One argument or one variable's value.
    pub string_bytes: usize,
}

impl Default for SpecLimits {
    fn default() -> Self {
        Self {
            command_args: MAX_COMMAND_ARGS,
            env_vars: MAX_ENV_VARS,
            env_bytes: MAX_ENV_BYTES,
            string_bytes: MAX_STRING_BYTES,
        }
    }
}
pub const MAX_GPUS: u32 = 64;
/// The most CPU cores and memory a task may ask for: what the largest worker may register
/// (the same figures as `cloudai_proto::limits`), so a bigger task is refused, not stored.
pub const MAX_CPU_CORES: f64 = 4096.0;
pub const MAX_MEMORY_MB: u64 = 64 * 1024 * 1024;
pub const MAX_IMAGE_BYTES: usize = 512;
pub const DEFAULT_MAX_RETRIES: u32 = 1;
/// How long a `keep` task may stay out of contact unless it says (`max_disconnect_secs`).
pub const DEFAULT_MAX_DISCONNECT_SECS: u64 = 600;
/// The longest `max_disconnect_secs` (a week).
pub const MAX_DISCONNECT_SECS: u64 = 7 * 24 * 3600;

/// What happens to a task whose worker loses contact with the master.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDisconnect {
    /// The worker stops it before the master could start it elsewhere: never two copies.
    #[default]
    Stop,
    /// It keeps running (work safe to run twice); the master waits up to
    /// `max_disconnect_secs` of silence before running it elsewhere.
    Keep,
}

impl OnDisconnect {
    pub fn as_str(self) -> &'static str {
        match self {
            OnDisconnect::Stop => "stop",
            OnDisconnect::Keep => "keep",
        }
    }

    /// For `skip_serializing_if`: the default is left out.
    pub fn is_stop(&self) -> bool {
        *self == OnDisconnect::Stop
    }
}

/// A validated task submission (the request part of every task).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names in `env` whose values the API never shows (the task still gets them).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub secret_env: BTreeSet<String>,
    /// CPU cores (> 0).
    pub cpu_required: f64,
    /// Memory in MB (> 0).
    pub memory_required: u64,
    /// Whole GPUs.
    #[serde(default)]
    pub gpu_required: u32,
    /// Higher runs first.
    #[serde(default)]
    pub priority: i32,
    #[serde(default)]
    pub driver: Driver,
    /// Re-runs allowed after the task's worker is lost.
    #[serde(default = "default_max_retries")]
    pub max_retries: u32,
    #[serde(default, skip_serializing_if = "OnDisconnect::is_stop")]
    pub on_disconnect: OnDisconnect,
    /// For `keep`: seconds of silence from its worker before the task runs elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_disconnect_secs: Option<u64>,
}

fn default_max_retries() -> u32 {
    DEFAULT_MAX_RETRIES
}

/// A bad submission: names the field and says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: String,
    pub message: String,
}

impl ValidationError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Self { field: field.to_string(), message: message.into() }
    }
}

/// The body as sent: numbers may come as floats (`"gpu_required": 1.0`, as the seeds show).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(default)]
    docker_image: Option<String>,
    #[serde(default)]
    command: Option<Vec<String>>,
    #[serde(default)]
    env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    secret_env: Option<Vec<String>>,
    cpu_required: Option<f64>,
    memory_required: Option<f64>,
    #[serde(default)]
    gpu_required: Option<f64>,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    driver: Option<String>,
    #[serde(default)]
    max_retries: Option<i64>,
    #[serde(default)]
    on_disconnect: Option<String>,
    #[serde(default)]
    max_disconnect_secs: Option<f64>,
}

/// The field a serde path names; the top level (`.`) is the body.
fn field_at(path: &str) -> &str {
    if path == "." { "body" } else { path }
}

fn whole(field: &str, v: f64, min: f64, max: f64) -> Result<f64, ValidationError> {
    if !v.is_finite() || v.fract() != 0.0 {
        return Err(ValidationError::new(field, "must be a whole number"));
    }
    if v < min || v > max {
        return Err(ValidationError::new(field, format!("must be between {min} and {max}")));
    }
    Ok(v)
}

impl TaskSpec {
    /// Parses and validates a JSON submission body. Strict: a key given twice is refused
    /// (serde_json alone keeps the last one).
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        Self::from_json_within(body, &SpecLimits::default())
    }

    /// [`TaskSpec::from_json`] with the master's configured limits.
    pub fn from_json_within(body: &[u8], limits: &SpecLimits) -> Result<Self, ValidationError> {
        let value = crate::json::parse_strict(body).map_err(|e| match e {
            StrictJsonError::Syntax(_) => ValidationError::new("body", e.to_string()),
            StrictJsonError::Data { path, message } => ValidationError::new(field_at(&path), message),
        })?;
        if !value.is_object() {
            return Err(ValidationError::new("body", "must be a JSON object"));
        }
        let raw: RawSpec = serde_path_to_error::deserialize(value).map_err(|e| {
            let field = field_at(&e.path().to_string()).to_string();
            ValidationError::new(&field, e.into_inner().to_string())
        })?;
        Self::from_raw(raw, limits)
    }

    fn from_raw(raw: RawSpec, limits: &SpecLimits) -> Result<Self, ValidationError> {
        let driver = match raw.driver.as_deref() {
            None => Driver::Docker,
            Some(d) => d.parse().map_err(|e: String| ValidationError::new("driver", e))?,
        };
        let cpu = raw.cpu_required.ok_or_else(|| ValidationError::new("cpu_required", "is required"))?;
        if !cpu.is_finite() || cpu <= 0.0 || cpu > MAX_CPU_CORES {
            return Err(ValidationError::new(
                "cpu_required",
                format!("must be a number of cores greater than 0 and at most {MAX_CPU_CORES}"),
            ));
        }
        let memory =
            raw.memory_required.ok_or_else(|| ValidationError::new("memory_required", "is required"))?;
        // Checked as a float: `memory as u64` would turn 1e308 or 2^64 into u64::MAX.
        if !memory.is_finite() || memory <= 0.0 || memory > MAX_MEMORY_MB as f64 {
            return Err(ValidationError::new(
                "memory_required",
                format!(
                    "must be a number of MB greater than 0 and at most {MAX_MEMORY_MB} ({} TiB)",
                    MAX_MEMORY_MB >> 20
                ),
            ));
        }
        let memory = memory.ceil() as u64;
        let gpus = whole("gpu_required", raw.gpu_required.unwrap_or(0.0), 0.0, f64::from(MAX_GPUS))? as u32;
        let priority = raw.priority.unwrap_or(0);
        let priority = i32::try_from(priority)
            .map_err(|_| ValidationError::new("priority", "must fit in a 32-bit integer"))?;
        let max_retries = raw.max_retries.unwrap_or(i64::from(DEFAULT_MAX_RETRIES));
        let max_retries = whole("max_retries", max_retries as f64, 0.0, 100.0)? as u32;

        let on_disconnect = match raw.on_disconnect.as_deref() {
            None | Some("stop") => OnDisconnect::Stop,
            Some("keep") => OnDisconnect::Keep,
            Some(other) => {
                return Err(ValidationError::new(
                    "on_disconnect",
                    format!("must be \"stop\" or \"keep\", not {other:?}"),
                ));
            }
        };
        let max_disconnect_secs = match (on_disconnect, raw.max_disconnect_secs) {
            (OnDisconnect::Stop, None) => None,
            (OnDisconnect::Stop, Some(_)) => {
                return Err(ValidationError::new(
                    "max_disconnect_secs",
                    "applies only to on_disconnect \"keep\" (a \"stop\" task stops when contact is lost)",
                ));
            }
            (OnDisconnect::Keep, None) => Some(DEFAULT_MAX_DISCONNECT_SECS),
            (OnDisconnect::Keep, Some(secs)) => {
                Some(whole("max_disconnect_secs", secs, 1.0, MAX_DISCONNECT_SECS as f64)? as u64)
            }
        };

        let image = raw.docker_image.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        if let Some(image) = &image {
            if image.len() > MAX_IMAGE_BYTES {
                return Err(ValidationError::new("docker_image", format!("at most {MAX_IMAGE_BYTES} bytes")));
            }
            if let Some(c) = image.chars().find(|c| c.is_whitespace() || c.is_control()) {
                return Err(ValidationError::new(
                    "docker_image",
                    format!("must be an image reference without spaces or control characters (found {c:?})"),
                ));
            }
        }
        let command = raw.command.unwrap_or_default();
        match driver {
            Driver::Docker if image.is_none() => {
                return Err(ValidationError::new("docker_image", "is required for the docker driver"));
            }
            Driver::Process if command.is_empty() => {
                return Err(ValidationError::new("command", "is required for the process driver"));
            }
            _ => {}
        }
        if command.len() > limits.command_args {
            let problem =
                format!("{} arguments: at most {} (MAX_TASK_ARGS)", command.len(), limits.command_args);
            return Err(ValidationError::new("command", problem));
        }
        if let Some(i) = command.iter().position(|a| a.len() > limits.string_bytes || a.contains('\0')) {
            let problem =
                format!("has at most {} bytes (MAX_TASK_STRING_BYTES) and no NUL", limits.string_bytes);
            return Err(ValidationError::new(&format!("command[{i}]"), problem));
        }
        if driver == Driver::Process && command[0].is_empty() {
            return Err(ValidationError::new("command[0]", "must name a program"));
        }
        let env = raw.env.unwrap_or_default();
        if env.len() > limits.env_vars {
            let problem = format!("{} variables: at most {} (MAX_TASK_ENV_VARS)", env.len(), limits.env_vars);
            return Err(ValidationError::new("env", problem));
        }
        let env_bytes: usize = env.iter().map(|(k, v)| k.len() + v.len()).sum();
        if env_bytes > limits.env_bytes {
            let problem = format!(
                "{env_bytes} bytes of names and values: at most {} (MAX_TASK_ENV_BYTES)",
                limits.env_bytes
            );
            return Err(ValidationError::new("env", problem));
        }
        for (k, v) in &env {
            // A name is printed in logs and error messages: no control characters in it.
            // A value may hold newlines (scripts, certificates) but no NUL, as in C strings.
            let field = || format!("env.{}", k.escape_debug());
            if k.is_empty() || k.len() > 1024 {
                return Err(ValidationError::new(&field(), "a variable name has 1 to 1024 bytes"));
            }
            if let Some(c) = k.chars().find(|c| *c == '=' || c.is_control()) {
                return Err(ValidationError::new(
                    &field(),
                    format!("a variable name has no '=' or control character (found {c:?})"),
                ));
            }
            if v.contains('\0') || v.len() > limits.string_bytes {
                return Err(ValidationError::new(
                    &field(),
                    format!(
                        "a value has at most {} bytes (MAX_TASK_STRING_BYTES) and no NUL",
                        limits.string_bytes
                    ),
                ));
            }
        }
        let mut secret_env = BTreeSet::new();
        for (i, name) in raw.secret_env.unwrap_or_default().into_iter().enumerate() {
            if !env.contains_key(&name) {
                let problem = format!("{name:?} is not a variable of env");
                return Err(ValidationError::new(&format!("secret_env[{i}]"), problem));
            }
            secret_env.insert(name);
        }
        Ok(Self {
            docker_image: image,
            command,
            env,
            secret_env,
            cpu_required: cpu,
            memory_required: memory,
            gpu_required: gpus,
            priority,
            driver,
            max_retries,
            on_disconnect,
            max_disconnect_secs,
        })
    }

    /// For `keep` tasks: how long the master waits after their worker went silent.
    pub fn max_disconnect(&self) -> Option<std::time::Duration> {
        match self.on_disconnect {
            OnDisconnect::Stop => None,
            OnDisconnect::Keep => Some(std::time::Duration::from_secs(
                self.max_disconnect_secs.unwrap_or(DEFAULT_MAX_DISCONNECT_SECS),
            )),
        }
    }
}

/// Where a task is. `Completed`, `Failed` and `Cancelled` are final.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    Pending,
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Pending,
        TaskStatus::Queued,
        TaskStatus::Running,
        TaskStatus::Completed,
        TaskStatus::Failed,
        TaskStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::Completed => "completed",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_final(self) -> bool {
        matches!(self, TaskStatus::Completed | TaskStatus::Failed | TaskStatus::Cancelled)
    }

    /// Placed on a worker and holding its resources.
    pub fn is_placed(self) -> bool {
        matches!(self, TaskStatus::Queued | TaskStatus::Running)
    }

    /// The legal moves of the state machine.
    pub fn can_become(self, next: TaskStatus) -> bool {
        use TaskStatus::*;
        match (self, next) {
            (Pending, Queued | Cancelled | Failed) => true,
            // Back to pending: the worker was lost and the task will run again.
            (Queued, Running | Completed | Failed | Cancelled | Pending) => true,
            (Running, Completed | Failed | Cancelled | Pending) => true,
            _ => false,
        }
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TaskStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskStatus::ALL.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
            format!(
                "unknown status {s:?}: expected one of pending, queued, running, completed, failed, cancelled"
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {task_id} cannot go from {from} to {to}")]
pub struct TransitionError {
    pub task_id: TaskId,
    pub from: TaskStatus,
    pub to: TaskStatus,
}

/// One recorded status change.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    pub task_id: TaskId,
    /// Unix milliseconds.
    pub time_ms: i64,
    pub from: Option<TaskStatus>,
    pub to: TaskStatus,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
}

/// Where a placed task runs: its worker and the GPUs it holds there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub worker_id: WorkerId,
    pub gpu_indices: Vec<u32>,
}

/// The last run of an ended task: where it was placed and, if it got that far, when it
/// started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastRun {
    pub placement: Placement,
    pub started_at_ms: Option<i64>,
}

/// Where a task is, with what that state has: a placed task always has a worker, a running
/// one a start time, an ended one a finish time, and a failed or cancelled one an error.
#[derive(Clone, Debug, PartialEq)]
pub enum TaskState {
    /// Waiting for room; `reason` says why (filled in for reads, not stored).
    Pending {
        reason: Option<String>,
    },
    /// Placed: the worker has been told to start it.
    Queued {
        placement: Placement,
    },
    Running {
        placement: Placement,
        started_at_ms: i64,
    },
    /// Only a task that was placed can complete.
    Completed {
        run: LastRun,
        finished_at_ms: i64,
        exit_code: Option<i32>,
        error: Option<String>,
    },
    /// `run` is `None` when it failed before being placed.
    Failed {
        run: Option<LastRun>,
        finished_at_ms: i64,
        exit_code: Option<i32>,
        error: String,
    },
    Cancelled {
        run: Option<LastRun>,
        finished_at_ms: i64,
        exit_code: Option<i32>,
        error: String,
    },
}

impl TaskState {
    pub fn status(&self) -> TaskStatus {
        match self {
            TaskState::Pending { .. } => TaskStatus::Pending,
            TaskState::Queued { .. } => TaskStatus::Queued,
            TaskState::Running { .. } => TaskStatus::Running,
            TaskState::Completed { .. } => TaskStatus::Completed,
            TaskState::Failed { .. } => TaskStatus::Failed,
            TaskState::Cancelled { .. } => TaskStatus::Cancelled,
        }
    }

    /// Where the task is placed now, or last was if it has ended.
    pub fn placement(&self) -> Option<&Placement> {
        match self {
            TaskState::Pending { .. } => None,
            TaskState::Queued { placement } | TaskState::Running { placement, .. } => Some(placement),
            TaskState::Completed { run, .. } => Some(&run.placement),
            TaskState::Failed { run, .. } | TaskState::Cancelled { run, .. } => {
                run.as_ref().map(|r| &r.placement)
            }
        }
    }
}

/// A task as the API shows it and the store keeps it. Its state changes only through
/// [`Task::place`] and [`Task::transition`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "TaskRecord", try_from = "TaskRecord")]
pub struct Task {
    pub task_id: TaskId,
    pub spec: TaskSpec,
    /// Runs started so far (0 until first placed).
    pub attempt: u32,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// The name of the API token that submitted it (`local` without authentication);
    /// `None` for tasks stored before submitters were recorded.
    pub submitted_by: Option<String>,
    state: TaskState,
}

/// A task as flat fields: its JSON shape and the store's columns. Any combination can be
/// written here; [`Task::try_from`] decides what a bad one means.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: TaskId,
    pub status: TaskStatus,
    #[serde(flatten)]
    pub spec: TaskSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    #[serde(default)]
    pub gpu_indices: Vec<u32>,
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub submitted_by: Option<String>,
}

/// A record no task state can be made of.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("task {task_id}: {message}")]
pub struct RecordError {
    pub task_id: TaskId,
    pub message: String,
}

impl From<Task> for TaskRecord {
    fn from(t: Task) -> Self {
        let mut r = TaskRecord {
            status: t.status(),
            worker_id: None,
            gpu_indices: Vec::new(),
            pending_reason: None,
            exit_code: None,
            error: None,
            started_at_ms: None,
            finished_at_ms: None,
            task_id: t.task_id,
            spec: t.spec,
            attempt: t.attempt,
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
            submitted_by: t.submitted_by,
        };
        let mut placed = |p: Placement| {
            r.worker_id = Some(p.worker_id);
            r.gpu_indices = p.gpu_indices;
        };
        let (run, finished_at_ms, exit_code, error) = match t.state {
            TaskState::Pending { reason } => {
                r.pending_reason = reason;
                return r;
            }
            TaskState::Queued { placement } => {
                placed(placement);
                return r;
            }
            TaskState::Running { placement, started_at_ms } => {
                placed(placement);
                r.started_at_ms = Some(started_at_ms);
                return r;
            }
            TaskState::Completed { run, finished_at_ms, exit_code, error } => {
                (Some(run), finished_at_ms, exit_code, error)
            }
            TaskState::Failed { run, finished_at_ms, exit_code, error }
            | TaskState::Cancelled { run, finished_at_ms, exit_code, error } => {
                (run, finished_at_ms, exit_code, Some(error))
            }
        };
        if let Some(run) = run {
            placed(run.placement);
            r.started_at_ms = run.started_at_ms;
        }
        r.finished_at_ms = Some(finished_at_ms);
        r.exit_code = exit_code;
        r.error = error;
        r
    }
}

impl TryFrom<TaskRecord> for Task {
    type Error = RecordError;

    /// The edge where loose fields become a state. Fields the state has no use for are
    /// dropped; a missing one is filled from what the record says where that is safe, so
    /// an unfinished task is never lost (a placed one without a worker goes back to pending).
    fn try_from(r: TaskRecord) -> Result<Self, RecordError> {
        let placement = r.worker_id.map(|worker_id| Placement { worker_id, gpu_indices: r.gpu_indices });
        let run = placement.map(|placement| LastRun { placement, started_at_ms: r.started_at_ms });
        // Older or damaged rows: the last change of an ended task is when it ended.
        let finished_at_ms = r.finished_at_ms.unwrap_or(r.updated_at_ms);
        let status = r.status;
        let lost =
            || TaskState::Pending { reason: Some(format!("{status} without a worker: placement lost")) };
        let state = match status {
            TaskStatus::Pending => TaskState::Pending { reason: r.pending_reason },
            TaskStatus::Queued => run.map_or_else(lost, |run| TaskState::Queued { placement: run.placement }),
            TaskStatus::Running => run.map_or_else(lost, |run| TaskState::Running {
                placement: run.placement,
                started_at_ms: run.started_at_ms.unwrap_or(r.updated_at_ms),
            }),
            TaskStatus::Completed => {
                let Some(run) = run else {
                    return Err(RecordError {
                        task_id: r.task_id,
                        message: "completed without a worker".into(),
                    });
                };
                TaskState::Completed { run, finished_at_ms, exit_code: r.exit_code, error: r.error }
            }
            TaskStatus::Failed => TaskState::Failed {
                run,
                finished_at_ms,
                exit_code: r.exit_code,
                error: r.error.unwrap_or_else(|| "failed".into()),
            },
            TaskStatus::Cancelled => TaskState::Cancelled {
                run,
                finished_at_ms,
                exit_code: r.exit_code,
                error: r.error.unwrap_or_else(|| "cancelled".into()),
            },
        };
        Ok(Task {
            task_id: r.task_id,
            spec: r.spec,
            attempt: r.attempt,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
            submitted_by: r.submitted_by,
            state,
        })
    }
}

/// What happened, as reported with a transition.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub exit_code: Option<i32>,
    pub error: Option<String>,
}

impl Task {
    /// A newly accepted task.
    pub fn new(task_id: TaskId, spec: TaskSpec, now_ms: i64) -> Self {
        Self {
            task_id,
            spec,
            attempt: 0,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            submitted_by: None,
            state: TaskState::Pending { reason: None },
        }
    }

    /// Records who submitted it.
    pub fn with_submitter(mut self, name: impl Into<String>) -> Self {
        self.submitted_by = Some(name.into());
        self
    }

    pub fn state(&self) -> &TaskState {
        &self.state
    }

    pub fn status(&self) -> TaskStatus {
        self.state.status()
    }

    /// The worker it is placed on, or last ran on if it has ended.
    pub fn worker_id(&self) -> Option<&WorkerId> {
        self.state.placement().map(|p| &p.worker_id)
    }

    /// The GPUs it holds (or held) on that worker.
    pub fn gpu_indices(&self) -> &[u32] {
        self.state.placement().map_or(&[], |p| &p.gpu_indices)
    }

    pub fn pending_reason(&self) -> Option<&str> {
        match &self.state {
            TaskState::Pending { reason } => reason.as_deref(),
            _ => None,
        }
    }

    /// Says why a pending task waits; a task in any other state has no such reason.
    pub fn set_pending_reason(&mut self, why: String) {
        if let TaskState::Pending { reason } = &mut self.state {
            *reason = Some(why);
        }
    }

    pub fn exit_code(&self) -> Option<i32> {
        match &self.state {
            TaskState::Completed { exit_code, .. }
            | TaskState::Failed { exit_code, .. }
            | TaskState::Cancelled { exit_code, .. } => *exit_code,
            _ => None,
        }
    }

    pub fn error(&self) -> Option<&str> {
        match &self.state {
            TaskState::Completed { error, .. } => error.as_deref(),
            TaskState::Failed { error, .. } | TaskState::Cancelled { error, .. } => Some(error),
            _ => None,
        }
    }

    pub fn started_at_ms(&self) -> Option<i64> {
        match &self.state {
            TaskState::Running { started_at_ms, .. } => Some(*started_at_ms),
            TaskState::Completed { run, .. } => run.started_at_ms,
            TaskState::Failed { run, .. } | TaskState::Cancelled { run, .. } => {
                run.as_ref().and_then(|r| r.started_at_ms)
            }
            _ => None,
        }
    }

    pub fn finished_at_ms(&self) -> Option<i64> {
        match &self.state {
            TaskState::Completed { finished_at_ms, .. }
            | TaskState::Failed { finished_at_ms, .. }
            | TaskState::Cancelled { finished_at_ms, .. } => Some(*finished_at_ms),
            _ => None,
        }
    }

    /// The flat record (JSON shape, store columns).
    pub fn to_record(&self) -> TaskRecord {
        self.clone().into()
    }

    /// The task's first event.
    pub fn created_event(&self) -> TaskEvent {
        TaskEvent {
            task_id: self.task_id.clone(),
            time_ms: self.created_at_ms,
            from: None,
            to: TaskStatus::Pending,
            reason: "submitted".into(),
            worker_id: None,
        }
    }

    /// Places a pending task on a worker (→ `queued`): the only way into `queued`, as only
    /// a placement says where.
    pub fn place(
        &mut self,
        worker_id: WorkerId,
        gpu_indices: Vec<u32>,
        now_ms: i64,
    ) -> Result<TaskEvent, TransitionError> {
        let from = self.status();
        if from != TaskStatus::Pending {
            return Err(TransitionError { task_id: self.task_id.clone(), from, to: TaskStatus::Queued });
        }
        self.attempt += 1;
        let next = TaskState::Queued { placement: Placement { worker_id, gpu_indices } };
        Ok(self.enter(next, "placed on worker", now_ms))
    }

    /// The one place where status changes (besides [`Task::place`]): checks the move,
    /// builds the next state from the current one, and returns the event to record.
    /// Moves to `queued` go through `place`.
    pub fn transition(
        &mut self,
        to: TaskStatus,
        reason: &str,
        outcome: Outcome,
        now_ms: i64,
    ) -> Result<TaskEvent, TransitionError> {
        match self.next_state(to, reason, outcome, now_ms) {
            Some(next) => Ok(self.enter(next, reason, now_ms)),
            None => Err(TransitionError { task_id: self.task_id.clone(), from: self.status(), to }),
        }
    }

    /// The state after moving to `to`, if that move is legal ([`TaskStatus::can_become`]).
    fn next_state(&self, to: TaskStatus, reason: &str, outcome: Outcome, now_ms: i64) -> Option<TaskState> {
        let run = match &self.state {
            TaskState::Pending { .. } => None,
            TaskState::Queued { placement } => {
                Some(LastRun { placement: placement.clone(), started_at_ms: None })
            }
            TaskState::Running { placement, started_at_ms } => {
                Some(LastRun { placement: placement.clone(), started_at_ms: Some(*started_at_ms) })
            }
            // Final: nothing follows.
            TaskState::Completed { .. } | TaskState::Failed { .. } | TaskState::Cancelled { .. } => {
                return None;
            }
        };
        let Outcome { exit_code, error } = outcome;
        let finished_at_ms = now_ms;
        Some(match to {
            TaskStatus::Queued => return None,
            TaskStatus::Running => match &self.state {
                TaskState::Queued { placement } => {
                    TaskState::Running { placement: placement.clone(), started_at_ms: now_ms }
                }
                _ => return None,
            },
            // Back in the queue (only from a placement, which is now void).
            TaskStatus::Pending => {
                run?;
                TaskState::Pending { reason: None }
            }
            TaskStatus::Completed => TaskState::Completed { run: run?, finished_at_ms, exit_code, error },
            TaskStatus::Failed => TaskState::Failed {
                run,
                finished_at_ms,
                exit_code,
                error: error.unwrap_or_else(|| reason.to_string()),
            },
            TaskStatus::Cancelled => TaskState::Cancelled {
                run,
                finished_at_ms,
                exit_code,
                error: error.unwrap_or_else(|| reason.to_string()),
            },
        })
    }

    /// Ends the task with the result of an earlier attempt that ran on `worker_id`, reported
    /// late (after a partition): only while no newer attempt has started (pending, or placed
    /// but not running), and only to a final status.
    pub fn end_with_earlier_run(
        &mut self,
        worker_id: WorkerId,
        to: TaskStatus,
        reason: &str,
        outcome: Outcome,
        now_ms: i64,
    ) -> Result<TaskEvent, TransitionError> {
        let refused = TransitionError { task_id: self.task_id.clone(), from: self.status(), to };
        if !matches!(self.state, TaskState::Pending { .. } | TaskState::Queued { .. }) || !to.is_final() {
            return Err(refused);
        }
        let run =
            LastRun { placement: Placement { worker_id, gpu_indices: Vec::new() }, started_at_ms: None };
        let Outcome { exit_code, error } = outcome;
        let finished_at_ms = now_ms;
        let next = match to {
            TaskStatus::Completed => TaskState::Completed { run, finished_at_ms, exit_code, error },
            TaskStatus::Failed => TaskState::Failed {
                run: Some(run),
                finished_at_ms,
                exit_code,
                error: error.unwrap_or_else(|| reason.to_string()),
            },
            TaskStatus::Cancelled => TaskState::Cancelled {
                run: Some(run),
                finished_at_ms,
                exit_code,
                error: error.unwrap_or_else(|| reason.to_string()),
            },
            _ => return Err(refused),
        };
        Ok(self.enter(next, reason, now_ms))
    }

    fn enter(&mut self, next: TaskState, reason: &str, now_ms: i64) -> TaskEvent {
        let from = self.status();
        self.state = next;
        self.updated_at_ms = now_ms;
        TaskEvent {
            task_id: self.task_id.clone(),
            time_ms: now_ms,
            from: Some(from),
            to: self.status(),
            reason: reason.to_string(),
            worker_id: self.worker_id().cloned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(body: &str) -> Result<TaskSpec, ValidationError> {
        TaskSpec::from_json(body.as_bytes())
    }

    #[test]
    fn seeds_body_is_accepted() {
        let s = spec(r#"{"docker_image":"python:3.9","cpu_required":2.0,"memory_required":1024,"gpu_required":0.0,"priority":5}"#)
            .expect("valid");
        assert_eq!(s.driver, Driver::Docker);
        assert_eq!(s.gpu_required, 0);
        assert_eq!(s.priority, 5);
        assert_eq!(s.max_retries, 1);
    }

    #[test]
    fn bad_fields_are_named() {
        let field = |b: &str| spec(b).expect_err("invalid").field;
        assert_eq!(field(r#"{"docker_image":"x","memory_required":1}"#), "cpu_required");
        assert_eq!(field(r#"{"docker_image":"x","cpu_required":0,"memory_required":1}"#), "cpu_required");
        assert_eq!(field(r#"{"docker_image":"x","cpu_required":"two","memory_required":1}"#), "cpu_required");
        assert_eq!(field(r#"{"docker_image":"x","cpu_required":1,"memory_required":-5}"#), "memory_required");
        assert_eq!(
            field(r#"{"docker_image":"x","cpu_required":1,"memory_required":1,"gpu_required":1.5}"#),
            "gpu_required"
        );
        assert_eq!(field(r#"{"cpu_required":1,"memory_required":1}"#), "docker_image");
        assert_eq!(field(r#"{"driver":"process","cpu_required":1,"memory_required":1}"#), "command");
        assert_eq!(field(r#"{"driver":"k8s","cpu_required":1,"memory_required":1}"#), "driver");
        assert_eq!(field("[1,2]"), "body");
        assert_eq!(field("{"), "body");
    }

    #[test]
    fn strict_bodies_refuse_duplicates_huge_numbers_and_control_characters() {
        let err = |b: &str| spec(b).expect_err("invalid").to_string();
        let base = r#""docker_image":"x","cpu_required":1"#;
        let e = err(&format!(r#"{{{base},"memory_required":1,"memory_required":2}}"#));
        assert_eq!(e, r#"body: duplicate key "memory_required""#);
        let e = err(&format!(r#"{{{base},"memory_required":1,"env":{{"A":"1","A":"2"}}}}"#));
        assert_eq!(e, r#"env: duplicate key "A""#);
        for memory in ["18446744073709551616", "1e308", "67108865"] {
            let e = err(&format!(r#"{{{base},"memory_required":{memory}}}"#));
            assert!(e.starts_with("memory_required:") && e.contains("at most 67108864"), "{memory}: {e}");
        }
        let most =
            spec(&format!(r#"{{{base},"memory_required":{MAX_MEMORY_MB}}}"#)).expect("the bound is in");
        assert_eq!(most.memory_required, MAX_MEMORY_MB);
        let e = err(r#"{"docker_image":"x","cpu_required":4097,"memory_required":1}"#);
        assert!(e.starts_with("cpu_required:") && e.contains("at most 4096"), "{e}");
        let e = err(r#"{"docker_image":"python\u0000:3","cpu_required":1,"memory_required":1}"#);
        assert!(e.starts_with("docker_image:") && e.contains("control"), "{e}");
        let e = err(r#"{"docker_image":"python\u001b[31m","cpu_required":1,"memory_required":1}"#);
        assert!(e.starts_with("docker_image:"), "{e}");
        let e = err(&format!(r#"{{{base},"memory_required":1,"env":{{"A\u0007B":"1"}}}}"#));
        assert!(e.starts_with(r"env.A\u{7}B:") && e.contains("control"), "{e}");
        let e = err(&format!(r#"{{{base},"memory_required":1,"env":{{"A":"x\u0000"}}}}"#));
        assert!(e.starts_with("env.A:") && e.contains("NUL"), "{e}");
        // A newline in a value is legitimate (a script, a certificate).
        assert!(spec(&format!(r#"{{{base},"memory_required":1,"env":{{"A":"l1\nl2"}}}}"#)).is_ok());
    }

    #[test]
    fn state_machine() {
        let s = spec(r#"{"driver":"process","command":["true"],"cpu_required":1,"memory_required":1}"#)
            .expect("valid");
        let mut t = Task::new(TaskId::generate(), s, 1);
        let w = WorkerId::parse("w1").expect("id");
        t.place(w.clone(), vec![0], 2).expect("pending → queued");
        assert_eq!(t.attempt, 1);
        t.transition(TaskStatus::Running, "started", Outcome::default(), 3).expect("queued → running");
        t.transition(TaskStatus::Pending, "worker lost", Outcome::default(), 4).expect("running → pending");
        assert_eq!(t.worker_id(), None);
        t.place(w, vec![], 5).expect("placed again");
        assert_eq!(t.attempt, 2);
        let done = Outcome { exit_code: Some(3), error: None };
        t.transition(TaskStatus::Failed, "exited with code 3", done, 6).expect("→ failed");
        assert_eq!(t.exit_code(), Some(3));
        assert_eq!(t.error(), Some("exited with code 3"));
        let err = t.transition(TaskStatus::Running, "late", Outcome::default(), 7).expect_err("final");
        assert_eq!(err.from, TaskStatus::Failed);
    }

    fn worker() -> WorkerId {
        WorkerId::parse("w1").expect("id")
    }

    fn process_task() -> Task {
        let s = spec(r#"{"driver":"process","command":["true"],"cpu_required":1,"memory_required":1}"#)
            .expect("valid");
        Task::new(TaskId::parse("t1").expect("id"), s, 1)
    }

    /// A task moved through `path` (`Queued` means placed on w1 with GPU 2), one ms apart.
    fn moved(path: &[TaskStatus], outcome: Outcome) -> Task {
        let mut t = process_task();
        for (i, &to) in path.iter().enumerate() {
            let at = 2 + i as i64;
            match to {
                TaskStatus::Queued => t.place(worker(), vec![2], at).map(|_| ()),
                _ => t.transition(to, "why", outcome.clone(), at).map(|_| ()),
            }
            .expect("legal move");
        }
        t
    }

    fn placed() -> Placement {
        Placement { worker_id: worker(), gpu_indices: vec![2] }
    }

    #[test]
    fn every_legal_move_yields_its_state_data() {
        use TaskStatus::*;
        let none = Outcome::default();
        let code = Outcome { exit_code: Some(0), error: None };
        let failed = Outcome { exit_code: Some(3), error: Some("boom".into()) };
        let cases: Vec<(Vec<TaskStatus>, Outcome, TaskState)> = vec![
            (vec![Queued], none.clone(), TaskState::Queued { placement: placed() }),
            (
                vec![Queued, Running],
                none.clone(),
                TaskState::Running { placement: placed(), started_at_ms: 3 },
            ),
            (vec![Queued, Pending], none.clone(), TaskState::Pending { reason: None }),
            (vec![Queued, Running, Pending], none.clone(), TaskState::Pending { reason: None }),
            (
                vec![Queued, Completed],
                code.clone(),
                TaskState::Completed {
                    run: LastRun { placement: placed(), started_at_ms: None },
                    finished_at_ms: 3,
                    exit_code: Some(0),
                    error: None,
                },
            ),
            (
                vec![Queued, Running, Completed],
                code,
                TaskState::Completed {
                    run: LastRun { placement: placed(), started_at_ms: Some(3) },
                    finished_at_ms: 4,
                    exit_code: Some(0),
                    error: None,
                },
            ),
            (
                vec![Queued, Running, Failed],
                failed.clone(),
                TaskState::Failed {
                    run: Some(LastRun { placement: placed(), started_at_ms: Some(3) }),
                    finished_at_ms: 4,
                    exit_code: Some(3),
                    error: "boom".into(),
                },
            ),
            // Without an error of its own, a failure's error is its reason.
            (
                vec![Failed],
                none.clone(),
                TaskState::Failed { run: None, finished_at_ms: 2, exit_code: None, error: "why".into() },
            ),
            (
                vec![Cancelled],
                none.clone(),
                TaskState::Cancelled { run: None, finished_at_ms: 2, exit_code: None, error: "why".into() },
            ),
            (
                vec![Queued, Running, Cancelled],
                failed,
                TaskState::Cancelled {
                    run: Some(LastRun { placement: placed(), started_at_ms: Some(3) }),
                    finished_at_ms: 4,
                    exit_code: Some(3),
                    error: "boom".into(),
                },
            ),
            (
                vec![Queued, Cancelled],
                none,
                TaskState::Cancelled {
                    run: Some(LastRun { placement: placed(), started_at_ms: None }),
                    finished_at_ms: 3,
                    exit_code: None,
                    error: "why".into(),
                },
            ),
        ];
        for (path, outcome, want) in cases {
            let t = moved(&path, outcome);
            assert_eq!(t.state(), &want, "after {path:?}");
            assert_eq!(t.updated_at_ms, 1 + path.len() as i64, "after {path:?}");
        }
        let retried = moved(&[Queued, Pending, Queued], Outcome::default());
        assert_eq!(retried.attempt, 2);
    }

    #[test]
    fn events_name_the_worker_while_placed_and_after() {
        let mut t = process_task();
        assert_eq!(t.place(worker(), vec![], 2).expect("placed").worker_id, Some(worker()));
        let ended = t.transition(TaskStatus::Completed, "exited with code 0", Outcome::default(), 3);
        assert_eq!(ended.expect("completed").worker_id, Some(worker()));
        let mut t = moved(&[TaskStatus::Queued], Outcome::default());
        let back = t.transition(TaskStatus::Pending, "worker lost", Outcome::default(), 3).expect("back");
        assert_eq!(
            (back.from, back.to, back.worker_id),
            (Some(TaskStatus::Queued), TaskStatus::Pending, None)
        );
    }

    #[test]
    fn moves_agree_with_can_become() {
        use TaskStatus::*;
        // A task in each state, reached by legal moves.
        let reach: [(TaskStatus, &[TaskStatus]); 6] = [
            (Pending, &[]),
            (Queued, &[Queued]),
            (Running, &[Queued, Running]),
            (Completed, &[Queued, Completed]),
            (Failed, &[Failed]),
            (Cancelled, &[Cancelled]),
        ];
        for (from, path) in reach {
            for to in TaskStatus::ALL {
                let mut t = moved(path, Outcome::default());
                let before = t.clone();
                let result = if to == Queued {
                    t.place(worker(), vec![], 100).map(|_| ())
                } else {
                    t.transition(to, "why", Outcome::default(), 100).map(|_| ())
                };
                assert_eq!(result.is_ok(), from.can_become(to), "{from} → {to}");
                match result {
                    Ok(()) => assert_eq!(t.status(), to),
                    Err(e) => {
                        assert_eq!((e.from, e.to), (from, to));
                        assert_eq!(t, before, "a refused move changes nothing");
                    }
                }
            }
        }
        // Only a placement queues a task.
        let mut t = process_task();
        assert!(t.transition(Queued, "no worker", Outcome::default(), 2).is_err());
    }

    #[test]
    fn pending_reason_is_only_for_pending_tasks() {
        let mut t = process_task();
        t.set_pending_reason("no worker has room".into());
        assert_eq!(t.pending_reason(), Some("no worker has room"));
        t.place(worker(), vec![], 2).expect("placed");
        assert_eq!(t.pending_reason(), None);
        t.set_pending_reason("late".into());
        assert_eq!(t.pending_reason(), None);
    }

    #[test]
    fn json_is_the_flat_shape() {
        let queued = moved(&[TaskStatus::Queued], Outcome::default());
        let want = r#"{"task_id":"t1","status":"queued","command":["true"],"env":{},"cpu_required":1.0,"memory_required":1,"gpu_required":0,"priority":0,"driver":"process","max_retries":1,"worker_id":"w1","gpu_indices":[2],"attempt":1,"created_at_ms":1,"updated_at_ms":2}"#;
        assert_eq!(serde_json::to_string(&queued).expect("json"), want);
        assert_eq!(serde_json::from_str::<Task>(want).expect("parses"), queued);

        let outcome = Outcome { exit_code: Some(3), error: None };
        let failed = moved(&[TaskStatus::Queued, TaskStatus::Running, TaskStatus::Failed], outcome);
        let want = r#"{"task_id":"t1","status":"failed","command":["true"],"env":{},"cpu_required":1.0,"memory_required":1,"gpu_required":0,"priority":0,"driver":"process","max_retries":1,"worker_id":"w1","gpu_indices":[2],"attempt":1,"exit_code":3,"error":"why","created_at_ms":1,"updated_at_ms":4,"started_at_ms":3,"finished_at_ms":4}"#;
        assert_eq!(serde_json::to_string(&failed).expect("json"), want);
        assert_eq!(serde_json::from_str::<Task>(want).expect("parses"), failed);

        let mut pending = process_task();
        pending.set_pending_reason("no room".into());
        let json = serde_json::to_string(&pending).expect("json");
        assert!(
            json.contains(r#""status":"pending""#)
                && json.contains(r#""gpu_indices":[],"attempt":0,"pending_reason":"no room""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Task>(&json).expect("parses"), pending);
    }

    #[test]
    fn a_placed_record_without_a_worker_goes_back_to_pending() {
        for status in [TaskStatus::Queued, TaskStatus::Running] {
            let mut record =
                moved(&[TaskStatus::Queued, TaskStatus::Running], Outcome::default()).to_record();
            record.status = status;
            record.worker_id = None;
            let t = Task::try_from(record.clone()).expect("kept, not an error");
            assert_eq!(t.status(), TaskStatus::Pending);
            assert_eq!(
                t.pending_reason(),
                Some(format!("{status} without a worker: placement lost").as_str())
            );
            assert_eq!(
                (t.task_id.as_str(), t.attempt, &t.spec),
                ("t1", 1, &record.spec),
                "nothing else is lost"
            );
            assert_eq!((t.worker_id(), t.gpu_indices(), t.started_at_ms()), (None, &[][..], None));
            // JSON takes the same road.
            let json = serde_json::to_string(&record).expect("json");
            assert_eq!(serde_json::from_str::<Task>(&json).expect("parses"), t);
        }
    }

    #[test]
    fn records_fill_what_a_state_needs_and_drop_what_it_has_no_use_for() {
        let base = moved(&[TaskStatus::Queued, TaskStatus::Running], Outcome::default()).to_record();
        let running = TaskRecord { started_at_ms: None, ..base.clone() };
        assert_eq!(Task::try_from(running).expect("running").started_at_ms(), Some(base.updated_at_ms));
        let failed = TaskRecord { status: TaskStatus::Failed, ..base.clone() };
        let failed = Task::try_from(failed).expect("failed");
        assert_eq!((failed.error(), failed.finished_at_ms()), (Some("failed"), Some(base.updated_at_ms)));
        let pending = TaskRecord { status: TaskStatus::Pending, exit_code: Some(1), ..base.clone() };
        let pending = Task::try_from(pending).expect("pending");
        assert_eq!((pending.worker_id(), pending.exit_code(), pending.started_at_ms()), (None, None, None));
        let completed = TaskRecord { status: TaskStatus::Completed, worker_id: None, ..base };
        assert_eq!(
            Task::try_from(completed).expect_err("never placed").message,
            "completed without a worker"
        );
    }
}
