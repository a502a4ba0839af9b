//! Tasks: what users submit ([`TaskSpec`]), where a task is ([`TaskStatus`]), and the
//! one place where status changes are decided ([`Task::transition`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{TaskId, WorkerId};

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
pub const MAX_GPUS: u32 = 64;
pub const DEFAULT_MAX_RETRIES: u32 = 1;

/// A validated task submission (the request part of every task).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_image: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
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
    /// Parses and validates a JSON submission body.
    pub fn from_json(body: &[u8]) -> Result<Self, ValidationError> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ValidationError::new("body", format!("not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(ValidationError::new("body", "must be a JSON object"));
        }
        let raw: RawSpec = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_string() } else { path };
            ValidationError::new(&field, e.into_inner().to_string())
        })?;
        Self::from_raw(raw)
    }

    fn from_raw(raw: RawSpec) -> Result<Self, ValidationError> {
        let driver = match raw.driver.as_deref() {
            None => Driver::Docker,
            Some(d) => d.parse().map_err(|e: String| ValidationError::new("driver", e))?,
        };
        let cpu = raw.cpu_required.ok_or_else(|| ValidationError::new("cpu_required", "is required"))?;
        if !cpu.is_finite() || cpu <= 0.0 || cpu > 4096.0 {
            return Err(ValidationError::new("cpu_required", "must be a number of cores greater than 0"));
        }
        let memory =
            raw.memory_required.ok_or_else(|| ValidationError::new("memory_required", "is required"))?;
        if !memory.is_finite() || memory <= 0.0 {
            return Err(ValidationError::new("memory_required", "must be a number of MB greater than 0"));
        }
        let memory = memory.ceil() as u64;
        let gpus = whole("gpu_required", raw.gpu_required.unwrap_or(0.0), 0.0, f64::from(MAX_GPUS))? as u32;
        let priority = raw.priority.unwrap_or(0);
        let priority = i32::try_from(priority)
            .map_err(|_| ValidationError::new("priority", "must fit in a 32-bit integer"))?;
        let max_retries = raw.max_retries.unwrap_or(i64::from(DEFAULT_MAX_RETRIES));
        let max_retries = whole("max_retries", max_retries as f64, 0.0, 100.0)? as u32;

        let image = raw.docker_image.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        if let Some(image) = &image
            && (image.len() > 512 || image.chars().any(char::is_whitespace))
        {
            return Err(ValidationError::new("docker_image", "must be an image reference without spaces"));
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
        if command.len() > MAX_COMMAND_ARGS {
            return Err(ValidationError::new("command", format!("at most {MAX_COMMAND_ARGS} arguments")));
        }
        if let Some(i) = command.iter().position(|a| a.len() > MAX_STRING_BYTES || a.contains('\0')) {
            return Err(ValidationError::new(&format!("command[{i}]"), "too long or contains a NUL byte"));
        }
        if driver == Driver::Process && command[0].is_empty() {
            return Err(ValidationError::new("command[0]", "must name a program"));
        }
        let env = raw.env.unwrap_or_default();
        if env.len() > MAX_ENV_VARS {
            return Err(ValidationError::new("env", format!("at most {MAX_ENV_VARS} variables")));
        }
        for (k, v) in &env {
            let bad_key = k.is_empty() || k.contains('=') || k.contains('\0') || k.len() > 1024;
            if bad_key || v.contains('\0') || v.len() > MAX_STRING_BYTES {
                return Err(ValidationError::new(&format!("env.{k}"), "invalid variable name or value"));
            }
        }
        Ok(Self {
            docker_image: image,
            command,
            env,
            cpu_required: cpu,
            memory_required: memory,
            gpu_required: gpus,
            priority,
            driver,
            max_retries,
        })
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

/// A task as the API shows it and the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub task_id: TaskId,
    pub status: TaskStatus,
    #[serde(flatten)]
    pub spec: TaskSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<WorkerId>,
    #[serde(default)]
    pub gpu_indices: Vec<u32>,
    /// Runs started so far (0 until first placed).
    pub attempt: u32,
    /// Why a pending task is waiting (no room, no fitting worker, …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Unix milliseconds.
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
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
            status: TaskStatus::Pending,
            spec,
            worker_id: None,
            gpu_indices: Vec::new(),
            attempt: 0,
            pending_reason: None,
            exit_code: None,
            error: None,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            started_at_ms: None,
            finished_at_ms: None,
        }
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

    /// Places a pending task on a worker (→ `queued`).
    pub fn place(
        &mut self,
        worker_id: WorkerId,
        gpu_indices: Vec<u32>,
        now_ms: i64,
    ) -> Result<TaskEvent, TransitionError> {
        let event = self.transition(TaskStatus::Queued, "placed on worker", Outcome::default(), now_ms)?;
        self.attempt += 1;
        self.worker_id = Some(worker_id.clone());
        self.gpu_indices = gpu_indices;
        self.pending_reason = None;
        Ok(TaskEvent { worker_id: Some(worker_id), ..event })
    }

    /// The one place where status changes: checks the move, updates the record, and
    /// returns the event to record.
    pub fn transition(
        &mut self,
        to: TaskStatus,
        reason: &str,
        outcome: Outcome,
        now_ms: i64,
    ) -> Result<TaskEvent, TransitionError> {
        let from = self.status;
        if !from.can_become(to) {
            return Err(TransitionError { task_id: self.task_id.clone(), from, to });
        }
        self.status = to;
        self.updated_at_ms = now_ms;
        match to {
            TaskStatus::Running => self.started_at_ms = Some(now_ms),
            TaskStatus::Pending => {
                // Back in the queue: the placement is void.
                self.worker_id = None;
                self.gpu_indices.clear();
                self.started_at_ms = None;
            }
            s if s.is_final() => {
                self.finished_at_ms = Some(now_ms);
                self.exit_code = outcome.exit_code;
                self.error =
                    outcome.error.or_else(|| (to != TaskStatus::Completed).then(|| reason.to_string()));
                self.pending_reason = None;
            }
            _ => {}
        }
        Ok(TaskEvent {
            task_id: self.task_id.clone(),
            time_ms: now_ms,
            from: Some(from),
            to,
            reason: reason.to_string(),
            worker_id: self.worker_id.clone(),
        })
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
    fn state_machine() {
        let s = spec(r#"{"driver":"process","command":["true"],"cpu_required":1,"memory_required":1}"#)
            .expect("valid");
        let mut t = Task::new(TaskId::generate(), s, 1);
        let w = WorkerId::parse("w1").expect("id");
        t.place(w.clone(), vec![0], 2).expect("pending → queued");
        assert_eq!(t.attempt, 1);
        t.transition(TaskStatus::Running, "started", Outcome::default(), 3).expect("queued → running");
        t.transition(TaskStatus::Pending, "worker lost", Outcome::default(), 4).expect("running → pending");
        assert_eq!(t.worker_id, None);
        t.place(w, vec![], 5).expect("placed again");
        assert_eq!(t.attempt, 2);
        let done = Outcome { exit_code: Some(3), error: None };
        t.transition(TaskStatus::Failed, "exited with code 3", done, 6).expect("→ failed");
        assert_eq!(t.exit_code, Some(3));
        assert_eq!(t.error.as_deref(), Some("exited with code 3"));
        let err = t.transition(TaskStatus::Running, "late", Outcome::default(), 7).expect_err("final");
        assert_eq!(err.from, TaskStatus::Failed);
    }
}
