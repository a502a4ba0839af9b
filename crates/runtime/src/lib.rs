//! The worker side of task execution.
//!
//! [`TaskRuntime`] runs the tasks the master places on a worker through a
//! [`Driver`] (a process group or a Docker container), reports each task's status
//! transitions in order with retries, and ships its output in batches, all of it
//! before the final status. The master is reached through [`MasterLink`].
//!
//! Per task: a supervisor owns the running task; a reporter delivers its status
//! reports; a shipper drains its bounded output buffer. The runtime keeps only a
//! registry to reach them.
#![forbid(unsafe_code)]

mod config;
pub mod driver;
mod link;
mod reporter;
mod runtime;
mod shipper;
mod supervisor;

pub use config::RuntimeConfig;
pub use driver::{
    DockerDriver, DockerOptions, Driver, DriverError, Execution, ExitStatus, Launch, Leftover, ProcessDriver,
    TaskControl, error_chain,
};
pub use link::{GrpcMasterLink, MasterLink, SendCompression};
pub use runtime::TaskRuntime;

/// The driver name of [`ProcessDriver`] in [`RuntimeConfig::drivers`].
pub const PROCESS_DRIVER: &str = "process";
/// The driver name of [`DockerDriver`] in [`RuntimeConfig::drivers`].
pub const DOCKER_DRIVER: &str = "docker";

/// Unix time in milliseconds (0 if the clock is before 1970).
pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
