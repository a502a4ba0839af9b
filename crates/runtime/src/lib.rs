//! The worker side of task execution.
//!
//! [`TaskRuntime`] runs the tasks the master places on a worker through a
//! [`Driver`] (a process group or a Docker container), reports each task's status
//! transitions in order with retries, and ships its output in batches, all of it
//! before the final status. The master is reached through [`MasterLink`].
//!
//! The API speaks domain types (`cloudai_domain::{TaskLaunch, TaskCancel, TaskReport,
//! LogBatch, RunningTask}`); only [`GrpcMasterLink`] knows the wire.
//!
//! Per task: a supervisor owns the running task; a reporter delivers its status
//! reports; a shipper drains its bounded output buffer. The registry holds only what
//! the API needs to reach them. Modules depend one way: runtime → supervisor →
//! registry → stop, and all of them on driver, link, reporter and shipper.
#![forbid(unsafe_code)]

mod config;
pub mod driver;
mod link;
mod registry;
mod reporter;
mod runtime;
mod shipper;
mod stop;
mod supervisor;

pub use config::RuntimeConfig;
pub use driver::{
    DEFAULT_TASK_USER, DockerDriver, DockerOptions, Driver, DriverError, Execution, ExitStatus, Launch,
    Leftover, ProcessDriver, TaskControl, TaskUser, TaskUserError, error_chain,
};
pub use link::{GrpcMasterLink, MasterLink, ReportAck, SendCompression};
pub use runtime::{TaskRuntime, probe_writable};
