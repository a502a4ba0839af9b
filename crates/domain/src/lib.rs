//! CloudAI's domain: typed ids, task specs and the task state machine, what a worker
//! is and reports, the commands and reports about one attempt of a task, and task output.
//!
//! Pure and synchronous: no I/O; times are passed in (`time` is for the callers that read the clock).

#![forbid(unsafe_code)]

pub mod ids;
pub mod json;
pub mod log;
pub mod run;
pub mod task;
pub mod time;
pub mod worker;

pub use ids::{IdError, TaskId, WorkerId};
pub use log::{LogBatch, LogChunk, LogStream};
pub use run::{Interruption, RunStatus, TaskCancel, TaskLaunch, TaskReport, TaskUpdate, WorkerCommand};
pub use task::{
    Driver, LastRun, OnDisconnect, Outcome, Placement, RecordError, SpecLimits, Task, TaskEvent, TaskRecord,
    TaskSpec, TaskState, TaskStatus, TransitionError, ValidationError,
};
pub use worker::{GpuInfo, GpuStats, HeartbeatSample, RunningStatus, RunningTask, WorkerInfo};
