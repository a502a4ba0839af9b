//! Registration and heartbeats: what a worker is and reports.

use cloudai_domain::{
    Driver, GpuInfo, GpuStats, HeartbeatSample, RunningStatus, RunningTask, WorkerId, WorkerInfo,
};

use super::WireError;
use crate::v1 as pb;

/// What one registration or heartbeat may carry, so one message cannot take the master's
/// memory (a real host has at most a few dozen GPUs and tasks in the hundreds).
pub mod limits {
    pub const MAX_GPUS: usize = 64;
    pub const MAX_LABELS: usize = 64;
    pub const MAX_DRIVERS: usize = 8;
    pub const MAX_RUNNING_TASKS: usize = 1024;
    /// Hostnames, versions, GPU uuids and models, label keys and values, task ids.
    pub const MAX_STRING_BYTES: usize = 256;
    /// Largest CPU count and memory a worker may advertise: beyond any real machine, so a
    /// bogus figure is refused rather than registered and never scheduled. The same bounds
    /// as a task's, so every task that passes validation fits some legal worker.
    pub use cloudai_domain::task::{MAX_CPU_CORES, MAX_MEMORY_MB};
    /// A task report's `error` or progress `message`: longer text keeps this many bytes and
    /// a marker saying how many were cut (see `convert/task.rs`).
    pub const MAX_REPORT_TEXT_BYTES: usize = 16 * 1024;

    /// The master's limits on one message (settings; `Default` is the constants above).
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct WireLimits {
        pub gpus: usize,
        pub labels: usize,
        pub drivers: usize,
        pub running_tasks: usize,
        pub string_bytes: usize,
        /// A whole gRPC message, encoded.
        pub message_bytes: usize,
    }

    impl Default for WireLimits {
        fn default() -> Self {
            Self {
                gpus: MAX_GPUS,
                labels: MAX_LABELS,
                drivers: MAX_DRIVERS,
                running_tasks: MAX_RUNNING_TASKS,
                string_bytes: MAX_STRING_BYTES,
                message_bytes: crate::MAX_MESSAGE_BYTES,
            }
        }
    }
}

use limits::*;

fn count<T>(field: &'static str, items: &[T], limit: usize, what: &str) -> Result<(), WireError> {
    if items.len() > limit {
        return Err(WireError::too_many(field, items.len(), limit, what));
    }
    Ok(())
}

fn short(field: &'static str, value: &str, limits: &WireLimits) -> Result<(), WireError> {
    if value.len() > limits.string_bytes {
        return Err(WireError::too_many(field, value.len(), limits.string_bytes, "bytes"));
    }
    Ok(())
}

/// A percentage from the network: NaN and out-of-range values are clamped, not trusted.
fn percent(v: f64) -> f64 {
    if v.is_finite() { v.clamp(0.0, 100.0) } else { 0.0 }
}

/// Converts a heartbeat, validating what came from the network against `limits`.
pub fn heartbeat_sample(hb: pb::Heartbeat, limits: &WireLimits) -> Result<HeartbeatSample, WireError> {
    count("gpus", &hb.gpus, limits.gpus, "GPUs")?;
    for g in &hb.gpus {
        short("gpus.uuid", &g.uuid, limits)?;
        short("gpus.model", &g.model, limits)?;
    }
    Ok(HeartbeatSample {
        worker_id: WorkerId::parse(&hb.worker_id).map_err(|e| WireError::id("worker_id", e))?,
        timestamp_ms: hb.timestamp_ms,
        cpu_usage: percent(hb.cpu_usage),
        memory_usage: percent(hb.memory_usage),
        gpu_usage: percent(hb.gpu_usage),
        memory_used_mb: hb.memory_used_mb,
        memory_total_mb: hb.memory_total_mb,
        gpus: hb.gpus.into_iter().map(GpuStats::from).collect(),
        running_tasks: running_tasks(hb.running_tasks, limits)?,
    })
}

/// The tasks a heartbeat or registration lists, at most `limits.running_tasks`.
pub fn running_tasks(
    tasks: Vec<pb::RunningTask>,
    limits: &WireLimits,
) -> Result<Vec<RunningTask>, WireError> {
    count("running_tasks", &tasks, limits.running_tasks, "running tasks")?;
    tasks.into_iter().map(|t| running_task(t, limits)).collect()
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

fn running_task(t: pb::RunningTask, limits: &WireLimits) -> Result<RunningTask, WireError> {
    const FIELD: &str = "running_tasks.status";
    short("running_tasks.task_id", &t.task_id, limits)?;
    let status = match pb::TaskStatus::try_from(t.status) {
        Ok(pb::TaskStatus::Queued) => RunningStatus::Queued,
        Ok(pb::TaskStatus::Running) => RunningStatus::Running,
        Ok(pb::TaskStatus::Unspecified) | Err(_) => {
            return Err(WireError::enumeration(FIELD, "task status", t.status));
        }
        Ok(ended) => {
            let problem = format!("a listed task is queued or running, not {}", ended.as_str_name());
            return Err(WireError::new(FIELD, problem));
        }
    };
    Ok(RunningTask {
        task_id: t.task_id,
        status,
        cpu_percent: if t.cpu_percent.is_finite() { t.cpu_percent.max(0.0) } else { 0.0 },
        memory_bytes: t.memory_bytes,
        started_at: t.started_at,
    })
}

impl From<RunningTask> for pb::RunningTask {
    fn from(t: RunningTask) -> Self {
        let status = match t.status {
            RunningStatus::Queued => pb::TaskStatus::Queued,
            RunningStatus::Running => pb::TaskStatus::Running,
        };
        Self {
            task_id: t.task_id,
            status: status.into(),
            cpu_percent: t.cpu_percent,
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

impl From<Driver> for pb::Driver {
    fn from(d: Driver) -> Self {
        match d {
            Driver::Process => pb::Driver::Process,
            Driver::Docker => pb::Driver::Docker,
        }
    }
}

/// A driver from the wire (an `i32`, as prost keeps enum fields).
pub(super) fn driver(field: &'static str, raw: i32) -> Result<Driver, WireError> {
    match pb::Driver::try_from(raw) {
        Ok(pb::Driver::Process) => Ok(Driver::Process),
        Ok(pb::Driver::Docker) => Ok(Driver::Docker),
        Ok(pb::Driver::Unspecified) | Err(_) => Err(WireError::enumeration(field, "driver", raw)),
    }
}

/// Converts a registration request, validating what came from the network.
/// A worker that could never be given a task (no CPU, no memory, no driver, or figures no
/// machine has) is refused, naming why, rather than registered and left idle.
pub fn worker_info(
    req: pb::RegisterWorkerRequest,
    now_secs: i64,
    limits: &WireLimits,
) -> Result<WorkerInfo, WireError> {
    let worker_id = WorkerId::parse(&req.worker_id).map_err(|e| WireError::id("worker_id", e))?;
    short("hostname", &req.hostname, limits)?;
    short("version", &req.version, limits)?;
    count("gpus", &req.gpus, limits.gpus, "GPUs")?;
    count("drivers", &req.drivers, limits.drivers, "drivers")?;
    if req.labels.len() > limits.labels {
        return Err(WireError::too_many("labels", req.labels.len(), limits.labels, "labels"));
    }
    for (k, v) in &req.labels {
        short("labels", k, limits)?;
        short("labels", v, limits)?;
    }
    for g in &req.gpus {
        short("gpus.uuid", &g.uuid, limits)?;
        short("gpus.model", &g.model, limits)?;
    }
    if !(req.cpu_cores.is_finite() && req.cpu_cores > 0.0 && req.cpu_cores <= MAX_CPU_CORES) {
        let problem =
            format!("{} cores: a worker needs more than 0 and at most {MAX_CPU_CORES}", req.cpu_cores);
        return Err(WireError::new("cpu_cores", problem));
    }
    if req.memory_mb == 0 || req.memory_mb > MAX_MEMORY_MB {
        let problem = format!("{} MB: a worker needs more than 0 and at most {MAX_MEMORY_MB}", req.memory_mb);
        return Err(WireError::new("memory_mb", problem));
    }
    if req.drivers.is_empty() {
        return Err(WireError::new("drivers", "none: a worker without a driver can run no task"));
    }
    Ok(WorkerInfo {
        worker_id,
        hostname: req.hostname,
        cpu_cores: req.cpu_cores,
        memory_mb: req.memory_mb,
        gpus: req.gpus.into_iter().map(GpuInfo::from).collect(),
        labels: req.labels.into_iter().collect(),
        version: req.version,
        drivers: req.drivers.into_iter().map(|d| driver("drivers", d)).collect::<Result<_, _>>()?,
        registered_at: now_secs,
    })
}
