//! What the scheduler refuses, and why.

use cloudai_domain::{TaskId, WorkerId};

use crate::shape::{InvalidCpu, MAX_CORES};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SchedulerError {
    #[error("unknown worker {0}")]
    UnknownWorker(WorkerId),
    #[error("task {0} is already pending")]
    AlreadyPending(TaskId),
    #[error("task {task_id} is already placed on worker {worker_id}")]
    AlreadyPlaced { task_id: TaskId, worker_id: WorkerId },
    #[error("{field} must be a finite number of cores between 0 and {max}, got {value}", max = MAX_CORES)]
    InvalidCpu { field: &'static str, value: f64 },
    #[error("GPU {gpu} is listed more than once")]
    DuplicateGpu { gpu: u32 },
    #[error("worker {worker_id} has no GPU {gpu}")]
    UnknownGpu { worker_id: WorkerId, gpu: u32 },
    #[error("GPU {gpu} on worker {worker_id} is held by task {task_id}")]
    GpuInUse { worker_id: WorkerId, gpu: u32, task_id: TaskId },
}

impl From<InvalidCpu> for SchedulerError {
    fn from(InvalidCpu { field, value }: InvalidCpu) -> Self {
        SchedulerError::InvalidCpu { field, value }
    }
}
