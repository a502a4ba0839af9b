//! Each of the master's error kinds, mapped once to the API's [`ErrorCode`]: the HTTP API
//! answers with its status ([`ErrorCode::http_status`]), the gRPC service with its code
//! ([`ErrorCode::grpc_code`]).

use cloudai_api::ErrorCode;

use crate::fleet::FleetError;
use crate::tasks::TaskError;
use crate::telemetry::TelemetryError;

impl TaskError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TaskError::NotFound(_) => ErrorCode::NotFound,
            TaskError::Finished { .. } => ErrorCode::Conflict,
            TaskError::ShuttingDown | TaskError::Store(_) => ErrorCode::Unavailable,
        }
    }
}

impl FleetError {
    pub fn code(&self) -> ErrorCode {
        match self {
            FleetError::UnknownWorker(_) => ErrorCode::NotFound,
            FleetError::ShuttingDown => ErrorCode::Unavailable,
        }
    }
}

impl TelemetryError {
    pub fn code(&self) -> ErrorCode {
        match self {
            TelemetryError::UnknownWorker(_) => ErrorCode::NotFound,
            TelemetryError::ShuttingDown => ErrorCode::Unavailable,
            TelemetryError::RateLimited { .. } => ErrorCode::ResourceExhausted,
        }
    }
}
