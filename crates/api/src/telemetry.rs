//! `/health`, `/telemetry`, `/telemetry/{worker_id}` and `/workers`: the seeds' telemetry API.

use std::collections::BTreeMap;

use cloudai_domain::{TaskId, TaskStatus, WorkerId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /health`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"status": "healthy", "time": 1_790_000_000}))]
pub struct Health {
    /// Always `healthy` when the master answers.
    pub status: String,
    /// The master's clock, unix seconds.
    pub time: i64,
}

/// The latest known state of one worker (`GET /telemetry/{worker_id}`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerTelemetry {
    #[schema(value_type = String)]
    pub worker_id: WorkerId,
    /// Percent, 0–100.
    pub cpu_usage: f64,
    /// Percent, 0–100.
    pub memory_usage: f64,
    /// Mean utilisation of the worker's GPUs, percent.
    pub gpu_usage: f64,
    pub memory_used_mb: u64,
    pub memory_total_mb: u64,
    pub gpus: Vec<GpuStats>,
    pub running_tasks: Vec<RunningTask>,
    /// Unix seconds when the master received the latest applied heartbeat (0: none yet).
    pub last_update: i64,
    /// The worker's own timestamp of that heartbeat, unix milliseconds.
    pub sample_time_ms: i64,
    pub is_active: bool,
    pub heartbeats_received: u64,
    pub heartbeats_dropped: u64,
}

/// One GPU's figures; a field the GPU cannot report is left out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct GpuStats {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    /// Percent, 0–100.
    pub utilization_percent: f64,
    pub memory_used_mb: u64,
    pub memory_total_mb: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = f64)]
    pub temperature_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = f64)]
    pub power_watts: Option<f64>,
    /// Energy used since the driver loaded, millijoules.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64)]
    pub energy_mj: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32)]
    pub sm_clock_mhz: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32)]
    pub mem_clock_mhz: Option<u32>,
    /// XID errors (driver-reported GPU faults) seen.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u64)]
    pub xid_errors: Option<u64>,
}

/// A task placed on a worker, as its heartbeat reports it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RunningTask {
    #[schema(value_type = String)]
    pub task_id: TaskId,
    /// `queued` (starting) or `running`.
    #[schema(value_type = crate::schema::TaskStatusSchema)]
    pub status: TaskStatus,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    /// Unix seconds: when it started running (queued: when the worker accepted it).
    pub started_at: i64,
}

/// `GET /telemetry`: worker id → telemetry.
pub type TelemetryMap = BTreeMap<WorkerId, WorkerTelemetry>;

/// One worker in `GET /workers`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerSummary {
    #[schema(value_type = String)]
    pub worker_id: WorkerId,
    pub hostname: String,
    pub is_active: bool,
    pub cpu_usage: f64,
    pub memory_usage: f64,
    pub gpu_usage: f64,
    pub gpu_count: usize,
    /// Tasks on the worker (queued or running).
    pub task_count: usize,
    /// Unix seconds of the latest heartbeat (0: none yet).
    pub last_update: i64,
}

/// `GET /workers`: worker id → summary.
pub type WorkerSummaryMap = BTreeMap<WorkerId, WorkerSummary>;
