//! CloudAI's HTTP API at the edge: the request and response types the master serves (serde,
//! snake_case, with OpenAPI schemas), the one [`ErrorCode`] mapped to HTTP statuses and gRPC
//! codes, the OpenAPI document ([`openapi()`], [`ROUTES`]) and a typed client ([`ApiClient`])
//! for the CLI, the console, the load generators and the tests.
//!
//! Fields the server always sends are required here: an answer that lacks one, or has it
//! renamed, fails with an error naming the field instead of reading as zero.

#![forbid(unsafe_code)]

pub mod alerts;
pub mod auth;
pub mod client;
pub mod cluster;
pub mod error;
pub mod history;
pub mod logs;
mod openapi;
pub mod parse;
mod schema;
pub mod tasks;
pub mod telemetry;
pub mod workers;

pub use alerts::{Alert, AlertList, AlertStatus, Severity};
pub use auth::{AuditEntry, AuditList, CreateToken, CreatedToken, HIDDEN_VALUE, Role, TokenInfo};
pub use client::{ApiClient, ClientError};
pub use cluster::{JoinTokenInfo, RevokedWorker};
pub use error::{ApiErrorBody, ErrorCode};
pub use history::{History, HistoryQuery, Point};
pub use logs::{LogChunk, LogStream, TaskLogs};
pub use openapi::{ROUTES, openapi};
pub use tasks::{
    DEFAULT_PAGE, MAX_PAGE, SECRET_VALUE, SubmitTask, Task, TaskEvent, TaskList, TaskListQuery, TaskSpec,
    TaskSummary,
};
pub use telemetry::{
    BadRunningTask, GpuStats, Health, RunningTask, TelemetryMap, WorkerSummary, WorkerSummaryMap,
    WorkerTelemetry,
};
pub use workers::{GpuInfo, TaskUsage, WorkerDetail, WorkerInfo, WorkerMetrics, WorkerTask, WorkerTaskList};
