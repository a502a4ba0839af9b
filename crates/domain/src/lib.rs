//! CloudAI's domain: typed ids, task specs and the task state machine, and what a worker
//! is and reports.
//!
//! Pure and synchronous: no I/O; times are passed in (`time` is for the callers that read the clock).

#![forbid(unsafe_code)]

pub mod ids;
pub mod task;
pub mod time;
pub mod worker;

pub use ids::{IdError, TaskId, WorkerId};
pub use task::{Driver, Outcome, Task, TaskEvent, TaskSpec, TaskStatus, TransitionError, ValidationError};
pub use worker::{GpuInfo, GpuStats, HeartbeatSample, RunningTask, WorkerInfo};
