//! `/api/workers…`: registration details plus live figures, for clients and the CLI.

use std::collections::BTreeMap;

use cloudai_domain::{Driver, WorkerId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::history::History;
use crate::tasks::Task;
use crate::telemetry::{GpuStats, WorkerTelemetry};

/// What a worker advertised when it registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerInfo {
    #[schema(value_type = String)]
    pub worker_id: WorkerId,
    pub hostname: String,
    /// CPU capacity, cores.
    pub cpu_cores: f64,
    /// Memory capacity, MB.
    pub memory_mb: u64,
    pub gpus: Vec<GpuInfo>,
    pub labels: BTreeMap<String, String>,
    /// The worker's build version.
    pub version: String,
    /// Drivers the worker can run tasks with.
    #[schema(value_type = Vec<crate::schema::DriverSchema>)]
    pub drivers: Vec<Driver>,
    /// Unix seconds of the latest registration.
    pub registered_at: i64,
}

/// One GPU as registered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_total_mb: u64,
}

impl From<&cloudai_domain::WorkerInfo> for WorkerInfo {
    fn from(w: &cloudai_domain::WorkerInfo) -> Self {
        Self {
            worker_id: w.worker_id.clone(),
            hostname: w.hostname.clone(),
            cpu_cores: w.cpu_cores,
            memory_mb: w.memory_mb,
            gpus: w.gpus.iter().map(GpuInfo::from).collect(),
            labels: w.labels.clone(),
            version: w.version.clone(),
            // A driver this build does not know cannot run anything it schedules.
            drivers: w.drivers.clone(),
            registered_at: w.registered_at,
        }
    }
}

impl From<&cloudai_domain::GpuInfo> for GpuInfo {
    fn from(g: &cloudai_domain::GpuInfo) -> Self {
        Self {
            index: g.index,
            uuid: g.uuid.clone(),
            model: g.model.clone(),
            memory_total_mb: g.memory_total_mb,
        }
    }
}

/// One worker in `GET /api/workers` and `GET /api/workers/{worker_id}`: its registration,
/// then its live figures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerDetail {
    #[serde(flatten)]
    pub info: WorkerInfo,
    pub is_active: bool,
    /// Why the worker says it cannot run tasks now (it gets none until it recovers); absent
    /// when it can.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<String>,
    pub telemetry: WorkerTelemetry,
}

impl WorkerDetail {
    pub fn new(info: WorkerInfo, telemetry: WorkerTelemetry) -> Self {
        Self { info, is_active: telemetry.is_active, unhealthy: None, telemetry }
    }

    /// The worker as it says it is: unable to run tasks for `reason`.
    pub fn unhealthy(mut self, reason: Option<String>) -> Self {
        self.unhealthy = reason;
        self
    }
}

/// `GET /api/workers/{worker_id}/metrics`: the current figures, plus `history` when the
/// query asked for a range.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerMetrics {
    #[schema(value_type = String)]
    pub worker_id: WorkerId,
    pub is_active: bool,
    /// Unix seconds of the latest heartbeat.
    pub last_update: i64,
    pub cpu_usage: f64,
    pub cpu_cores: f64,
    pub memory_usage: f64,
    pub memory_used_mb: u64,
    pub memory_total_mb: u64,
    pub gpu_usage: f64,
    pub gpus: Vec<GpuStats>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = History)]
    pub history: Option<History>,
}

impl WorkerMetrics {
    /// The current figures of a worker with `cpu_cores` of capacity.
    pub fn new(t: WorkerTelemetry, cpu_cores: f64, history: Option<History>) -> Self {
        Self {
            worker_id: t.worker_id,
            is_active: t.is_active,
            last_update: t.last_update,
            cpu_usage: t.cpu_usage,
            cpu_cores,
            memory_usage: t.memory_usage,
            memory_used_mb: t.memory_used_mb,
            memory_total_mb: t.memory_total_mb,
            gpu_usage: t.gpu_usage,
            gpus: t.gpus,
            history,
        }
    }
}

/// A task on a worker (`GET /api/workers/{worker_id}/tasks`), with its live usage while
/// it is placed there (container stats for docker).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerTask {
    #[serde(flatten)]
    pub task: Task,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = TaskUsage)]
    pub usage: Option<TaskUsage>,
}

/// `GET /api/workers/{id}/tasks`: one page of a worker's tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerTaskList {
    pub tasks: Vec<WorkerTask>,
    /// Pass as `?after=` for the next page; `null` on the last one.
    #[schema(value_type = Option<String>, required = true)]
    pub next: Option<cloudai_domain::TaskId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TaskUsage {
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}
