//! What a worker is and reports: shared by the master and the worker agent.
//!
//! The wire types convert to these at the edge (`cloudai-proto`).

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

use crate::ids::WorkerId;
use crate::task::Driver;

/// What a worker advertises when it registers.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WorkerInfo {
    pub worker_id: WorkerId,
    pub hostname: String,
    pub cpu_cores: f64,
    pub memory_mb: u64,
    pub gpus: Vec<GpuInfo>,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    pub drivers: Vec<Driver>,
    /// Unix seconds of the latest registration.
    pub registered_at: i64,
}

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GpuInfo {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub memory_total_mb: u64,
}

/// One GPU's figures; `None` where the GPU could not report a field.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct GpuStats {
    pub index: u32,
    pub uuid: String,
    pub model: String,
    pub utilization_percent: f64,
    pub memory_used_mb: u64,
    pub memory_total_mb: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power_watts: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub energy_mj: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sm_clock_mhz: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mem_clock_mhz: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub xid_errors: Option<u64>,
}

/// Where a task that its worker lists is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunningStatus {
    /// Accepted, being prepared (image pull, container create).
    Queued,
    Running,
}

impl RunningStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunningStatus::Queued => "queued",
            RunningStatus::Running => "running",
        }
    }
}

impl fmt::Display for RunningStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A task queued or running on a worker, as the worker lists it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RunningTask {
    pub task_id: String,
    pub status: RunningStatus,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub started_at: i64,
}

/// One heartbeat's figures, as the worker measured them.
#[derive(Clone, Debug, PartialEq)]
pub struct HeartbeatSample {
    pub worker_id: WorkerId,
    pub timestamp_ms: i64,
    pub cpu_usage: f64,
    pub memory_usage: f64,
    pub gpu_usage: f64,
    pub memory_used_mb: u64,
    pub memory_total_mb: u64,
    pub gpus: Vec<GpuStats>,
    pub running_tasks: Vec<RunningTask>,
}
