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

impl From<cloudai_domain::GpuStats> for GpuStats {
    fn from(g: cloudai_domain::GpuStats) -> Self {
        Self {
            index: g.index,
            uuid: g.uuid,
            model: g.model,
            utilization_percent: g.utilization_percent,
            memory_used_mb: g.memory_used_mb,
            memory_total_mb: g.memory_total_mb,
            temperature_c: g.temperature_c,
            power_watts: g.power_watts,
            energy_mj: g.energy_mj,
            sm_clock_mhz: g.sm_clock_mhz,
            mem_clock_mhz: g.mem_clock_mhz,
            xid_errors: g.xid_errors,
        }
    }
}

/// A heartbeat's entry whose id or status is not one of ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("running task {task_id:?}: {reason}")]
pub struct BadRunningTask {
    pub task_id: String,
    pub reason: String,
}

impl TryFrom<cloudai_domain::RunningTask> for RunningTask {
    type Error = BadRunningTask;

    fn try_from(t: cloudai_domain::RunningTask) -> Result<Self, Self::Error> {
        let bad = |reason: String| BadRunningTask { task_id: t.task_id.clone(), reason };
        let task_id = TaskId::parse(&t.task_id).map_err(|e| bad(e.to_string()))?;
        let status = match t.status {
            cloudai_domain::RunningStatus::Queued => TaskStatus::Queued,
            cloudai_domain::RunningStatus::Running => TaskStatus::Running,
        };
        Ok(Self {
            task_id,
            status,
            cpu_percent: t.cpu_percent,
            memory_bytes: t.memory_bytes,
            started_at: t.started_at,
        })
    }
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
