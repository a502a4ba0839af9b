//! The master's view of one worker's latest figures, as `/telemetry` shows it.

use cloudai_domain::{GpuStats, RunningTask, WorkerId};
use serde::Serialize;

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
