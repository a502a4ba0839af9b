//! Task placement for CloudAI: which pending task goes on which worker.
//!
//! Pure and synchronous: no I/O, no clocks, no async. The master owns one [`Scheduler`],
//! feeds it worker registrations, activity changes, submissions and task ends, and calls
//! [`Scheduler::schedule`] to get placements. Every lookup goes through an index (workers
//! ordered by free room, the queue ordered by priority), so a pass costs about
//! `log(workers)` per placed task, and a full cluster with a long queue costs a few
//! comparisons per waiting task, not a search of the fleet.

#![forbid(unsafe_code)]

pub mod bench;
mod error;
mod index;
mod largest;
mod queue;
mod scheduler;
mod shape;
mod workers;

#[cfg(test)]
mod tests;

use std::fmt;

pub use cloudai_domain::{Driver, TaskId, WorkerId};
use serde::Serialize;

pub use bench::{BenchReport, bench};
pub use error::SchedulerError;
pub use scheduler::Scheduler;

/// Which fitting worker a task goes to. Room is compared by free GPUs, then free CPU,
/// then free memory.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// The fitting worker with the least free room, so large holes stay free for large
    /// tasks (and CPU-only tasks go to workers without GPUs first).
    #[default]
    BinPack,
    /// The fitting worker with the most free room, to even out load.
    Spread,
}

/// What a worker offers, as it registers (again).
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerResources {
    pub worker_id: WorkerId,
    /// Cores.
    pub cpu_cores: f64,
    pub memory_mb: u64,
    /// Device indices of its GPUs.
    pub gpus: Vec<u32>,
    pub drivers: Vec<Driver>,
    pub active: bool,
}

/// A task waiting for room.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingTask {
    pub task_id: TaskId,
    /// Higher goes first.
    pub priority: i32,
    /// Order within a priority, lower first (e.g. submission order).
    pub seq: u64,
    /// Cores.
    pub cpu: f64,
    pub memory_mb: u64,
    /// Whole GPUs.
    pub gpus: u32,
    pub driver: Driver,
}

/// A decision of [`Scheduler::schedule`]; its resources are already reserved.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub task_id: TaskId,
    pub worker_id: WorkerId,
    pub gpu_indices: Vec<u32>,
}

/// What a task held on its worker, as returned when it is released.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Released {
    pub task_id: TaskId,
    pub worker_id: WorkerId,
    /// Cores.
    pub cpu: f64,
    pub memory_mb: u64,
    pub gpu_indices: Vec<u32>,
}

/// Why a pending task is still waiting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum PendingReason {
    /// Some known worker could hold it, but no active one has the room now.
    NoRoom,
    /// No known worker, active or not, could hold it even when empty; says what is missing.
    NeverFits(String),
}

impl fmt::Display for PendingReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PendingReason::NoRoom => f.write_str("waiting for room: no active worker has room right now"),
            PendingReason::NeverFits(why) => write!(f, "cannot run on any known worker: {why}"),
        }
    }
}

/// An amount of CPU, memory and GPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Resources {
    /// Cores.
    pub cpu: f64,
    pub memory_mb: u64,
    pub gpus: u32,
}

/// One worker as the scheduler sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerView {
    pub worker_id: WorkerId,
    pub active: bool,
    pub drivers: Vec<Driver>,
    pub capacity: Resources,
    /// May exceed capacity after the worker re-registered smaller with tasks on it.
    pub reserved: Resources,
    pub free: Resources,
    pub free_gpu_indices: Vec<u32>,
    pub tasks: usize,
}

/// Cluster-wide figures for metrics.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ClusterTotals {
    pub workers: usize,
    pub active_workers: usize,
    pub pending_tasks: usize,
    pub placed_tasks: usize,
    /// All known workers.
    pub capacity: Resources,
    /// Active workers only: what placements can use.
    pub active_capacity: Resources,
    /// Held by placed tasks, on any worker.
    pub reserved: Resources,
}
