//! Domain types for worker telemetry, converted from the wire types at the edge.

use std::collections::BTreeMap;

use cloudai_proto::v1 as pb;
use serde::Serialize;

use crate::ids::{IdError, WorkerId};

/// What a worker advertises when it registers.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerInfo {
    pub worker_id: WorkerId,
    pub hostname: String,
    pub cpu_cores: f64,
    pub memory_mb: u64,
    pub gpus: Vec<GpuInfo>,
    pub labels: BTreeMap<String, String>,
    pub version: String,
    pub drivers: Vec<String>,
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

#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct RunningTask {
    pub task_id: String,
    pub status: String,
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

/// The latest known state of one worker, as `/telemetry` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct WorkerTelemetry {
    pub worker_id: WorkerId,
    pub cpu_usage: f64,
    pub memory_usage: f64,
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

impl WorkerTelemetry {
    pub(crate) fn empty(worker_id: WorkerId) -> Self {
        Self {
            worker_id,
            cpu_usage: 0.0,
            memory_usage: 0.0,
            gpu_usage: 0.0,
            memory_used_mb: 0,
            memory_total_mb: 0,
            gpus: Vec::new(),
            running_tasks: Vec::new(),
            last_update: 0,
            sample_time_ms: 0,
            is_active: true,
            heartbeats_received: 0,
            heartbeats_dropped: 0,
        }
    }
}

/// A percentage from the network: NaN and out-of-range values are clamped, not trusted.
fn percent(v: f64) -> f64 {
    if v.is_finite() { v.clamp(0.0, 100.0) } else { 0.0 }
}

impl TryFrom<pb::Heartbeat> for HeartbeatSample {
    type Error = IdError;

    fn try_from(hb: pb::Heartbeat) -> Result<Self, Self::Error> {
        Ok(Self {
            worker_id: WorkerId::parse(&hb.worker_id)?,
            timestamp_ms: hb.timestamp_ms,
            cpu_usage: percent(hb.cpu_usage),
            memory_usage: percent(hb.memory_usage),
            gpu_usage: percent(hb.gpu_usage),
            memory_used_mb: hb.memory_used_mb,
            memory_total_mb: hb.memory_total_mb,
            gpus: hb.gpus.into_iter().map(GpuStats::from).collect(),
            running_tasks: hb.running_tasks.into_iter().map(RunningTask::from).collect(),
        })
    }
}

impl From<pb::GpuStats> for GpuStats {
    fn from(g: pb::GpuStats) -> Self {
        Self {
            index: g.index,
            uuid: g.uuid,
            model: g.model,
            utilization_percent: percent(g.utilization_percent),
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

impl From<GpuStats> for pb::GpuStats {
    fn from(g: GpuStats) -> Self {
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

impl From<pb::RunningTask> for RunningTask {
    fn from(t: pb::RunningTask) -> Self {
        Self {
            task_id: t.task_id,
            status: t.status,
            cpu_percent: if t.cpu_percent.is_finite() { t.cpu_percent.max(0.0) } else { 0.0 },
            memory_bytes: t.memory_bytes,
            started_at: t.started_at,
        }
    }
}

impl From<pb::GpuInfo> for GpuInfo {
    fn from(g: pb::GpuInfo) -> Self {
        Self { index: g.index, uuid: g.uuid, model: g.model, memory_total_mb: g.memory_total_mb }
    }
}

impl From<GpuInfo> for pb::GpuInfo {
    fn from(g: GpuInfo) -> Self {
        Self { index: g.index, uuid: g.uuid, model: g.model, memory_total_mb: g.memory_total_mb }
    }
}

impl WorkerInfo {
    /// Converts a registration request, validating what came from the network.
    pub fn from_request(req: pb::RegisterWorkerRequest, now_secs: i64) -> Result<Self, IdError> {
        Ok(Self {
            worker_id: WorkerId::parse(&req.worker_id)?,
            hostname: req.hostname,
            cpu_cores: if req.cpu_cores.is_finite() { req.cpu_cores.max(0.0) } else { 0.0 },
            memory_mb: req.memory_mb,
            gpus: req.gpus.into_iter().map(GpuInfo::from).collect(),
            labels: req.labels.into_iter().collect(),
            version: req.version,
            drivers: req.drivers,
            registered_at: now_secs,
        })
    }
}
