//! CloudAI's domain: typed ids, task specs and the task state machine.
//!
//! Pure and synchronous: no I/O, no clocks read here (callers pass times in).

#![forbid(unsafe_code)]

pub mod ids;
pub mod task;

pub use ids::{IdError, TaskId, WorkerId};
pub use task::{Driver, Outcome, Task, TaskEvent, TaskSpec, TaskStatus, TransitionError, ValidationError};
