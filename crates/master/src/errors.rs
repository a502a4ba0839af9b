//! Each of the master's error kinds, mapped once to the API's [`ErrorCode`]: the HTTP API
//! answers with its status ([`ErrorCode::http_status`]), the gRPC service with its code
//! ([`ErrorCode::grpc_code`]).

use cloudai_api::ErrorCode;
use tracing::error;

use crate::fleet::FleetError;
use crate::tasks::TaskError;
use crate::telemetry::TelemetryError;

/// An error a caller is told about: its code, and its `Display` as the message, the same
/// for HTTP and gRPC.
pub(crate) trait Coded: std::fmt::Display {
    fn code(&self) -> ErrorCode;

    /// The message for the caller; failures the caller cannot act on are logged here, once.
    fn message(&self) -> String {
        self.to_string()
    }
}

impl Coded for TaskError {
    fn message(&self) -> String {
        match self {
            TaskError::Store(source) => error!(error = %format!("{source:#}"), "store error"),
            // Someone must free space; the caller's retry then succeeds.
            TaskError::DiskFull(source) => {
                error!(error = %format!("{source:#}"), "disk full: a write failed")
            }
            _ => {}
        }
        self.to_string()
    }

    fn code(&self) -> ErrorCode {
        match self {
            TaskError::NotFound(_) => ErrorCode::NotFound,
            TaskError::UnknownCursor(_) => ErrorCode::InvalidArgument,
            // FAILED_PRECONDITION: a worker's shipper drops such output instead of retrying.
            TaskError::Finished { .. } | TaskError::NotShippedHere { .. } => ErrorCode::Conflict,
            // The worker's copy stops (reports) or its output is dropped (logs), as for a stale copy.
            TaskError::NotPlacedHere { .. } => ErrorCode::PermissionDenied,
            TaskError::DiskFull(_) => ErrorCode::InsufficientStorage,
            TaskError::TooManyPending { .. } => ErrorCode::ResourceExhausted,
            TaskError::ShuttingDown | TaskError::Store(_) => ErrorCode::Unavailable,
        }
    }
}

impl Coded for FleetError {
    fn code(&self) -> ErrorCode {
        match self {
            FleetError::UnknownWorker(_) => ErrorCode::NotFound,
            FleetError::ShuttingDown => ErrorCode::Unavailable,
            FleetError::Full { .. } => ErrorCode::ResourceExhausted,
        }
    }
}

impl Coded for TelemetryError {
    fn code(&self) -> ErrorCode {
        match self {
            TelemetryError::UnknownWorker(_) => ErrorCode::NotFound,
            TelemetryError::ShuttingDown => ErrorCode::Unavailable,
            TelemetryError::RateLimited { .. } => ErrorCode::ResourceExhausted,
        }
    }
}
