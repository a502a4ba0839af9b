//! The one mapping from our error kinds to HTTP statuses and gRPC codes, and the error body.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What went wrong, independent of the protocol that reports it. The HTTP layer answers
/// with [`ErrorCode::http_status`], the gRPC layer with [`ErrorCode::grpc_code`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Bad input: the message names the field and says why.
    InvalidArgument,
    /// No credentials, or credentials that are not valid.
    Unauthenticated,
    /// Valid credentials without the role the request needs.
    PermissionDenied,
    /// Unknown id or endpoint.
    NotFound,
    /// The request cannot apply to the current state (e.g. cancelling a finished task).
    Conflict,
    /// A request body over the limit.
    PayloadTooLarge,
    /// A body that is not JSON.
    UnsupportedMediaType,
    /// The request took too long.
    Timeout,
    /// Rate limited or over a quota: retry later.
    ResourceExhausted,
    /// The master's disk is full: nothing was saved; retry once there is room.
    InsufficientStorage,
    /// Shutting down, or a dependency (the store) is down: retry.
    Unavailable,
    /// A bug or an unexpected failure on our side.
    Internal,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 12] = [
        ErrorCode::InvalidArgument,
        ErrorCode::Unauthenticated,
        ErrorCode::PermissionDenied,
        ErrorCode::NotFound,
        ErrorCode::Conflict,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::Timeout,
        ErrorCode::ResourceExhausted,
        ErrorCode::InsufficientStorage,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::InvalidArgument => 400,
            ErrorCode::Unauthenticated => 401,
            ErrorCode::PermissionDenied => 403,
            ErrorCode::NotFound => 404,
            ErrorCode::Timeout => 408,
            ErrorCode::Conflict => 409,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::UnsupportedMediaType => 415,
            ErrorCode::ResourceExhausted => 429,
            ErrorCode::Internal => 500,
            ErrorCode::Unavailable => 503,
            ErrorCode::InsufficientStorage => 507,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::NotFound => tonic::Code::NotFound,
            // gRPC's word for "not in a state where this applies".
            ErrorCode::Conflict => tonic::Code::FailedPrecondition,
            // What gRPC itself answers to a message over the size limit.
            ErrorCode::PayloadTooLarge => tonic::Code::ResourceExhausted,
            // gRPC has no media types: a body it cannot read is bad input.
            ErrorCode::UnsupportedMediaType => tonic::Code::InvalidArgument,
            ErrorCode::Timeout => tonic::Code::DeadlineExceeded,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            // gRPC's word for an exhausted resource, here the disk; clients retry it.
            ErrorCode::InsufficientStorage => tonic::Code::ResourceExhausted,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
            ErrorCode::Internal => tonic::Code::Internal,
        }
    }

    /// The code behind an HTTP error status, for clients; `None` for a status we never send.
    pub fn from_http_status(status: u16) -> Option<ErrorCode> {
        ErrorCode::ALL.into_iter().find(|c| c.http_status() == status)
    }
}

/// Every error answer of the HTTP API: `{"error": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({"error": "cpu_required: must be a number of cores greater than 0"}))]
pub struct ApiErrorBody {
    /// What went wrong; for bad input, names the field and says why.
    pub error: String,
}

impl ApiErrorBody {
    pub fn new(error: impl Into<String>) -> Self {
        Self { error: error.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_statuses_are_distinct_and_map_back() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_http_status(code.http_status()), Some(code), "{code:?}");
            assert!((400..600).contains(&code.http_status()), "{code:?}");
            assert_ne!(code.grpc_code(), tonic::Code::Ok, "{code:?}");
        }
        assert_eq!(ErrorCode::from_http_status(200), None);
        assert_eq!(ErrorCode::Conflict.grpc_code(), tonic::Code::FailedPrecondition);
        assert_eq!(ErrorCode::InsufficientStorage.http_status(), 507);
    }

    #[test]
    fn error_body_is_one_field() {
        let body = serde_json::to_string(&ApiErrorBody::new("task \"x\" not found")).expect("json");
        assert_eq!(body, r#"{"error":"task \"x\" not found"}"#);
    }
}
