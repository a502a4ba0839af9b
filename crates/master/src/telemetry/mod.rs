//! Per-worker telemetry on the master: the latest figures of every worker, kept
//! without ever blocking the RPC path.

mod manager;
mod model;

pub use manager::{
    ClosedMinute, RateLimit, TelemetryConfig, TelemetryError, TelemetryManager, TelemetryStats,
    UpdateCallback,
};
pub use model::WorkerTelemetry;
