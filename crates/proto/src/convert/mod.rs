//! Conversions between the wire types and the domain types (`cloudai-domain`).
//!
//! Values from the network are validated here: ids are parsed, enums must be specified,
//! percentages are clamped. An invalid message is a [`WireError`] naming the field.

mod task;
mod worker;

use cloudai_domain::IdError;

pub use task::bounded_text;
pub use worker::{heartbeat_sample, limits, running_tasks, worker_info};

/// A message from the network that breaks the protocol: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct WireError {
    pub field: &'static str,
    pub problem: String,
}

impl WireError {
    fn new(field: &'static str, problem: impl Into<String>) -> Self {
        Self { field, problem: problem.into() }
    }

    fn id(field: &'static str, e: IdError) -> Self {
        Self::new(field, e.to_string())
    }

    /// A repeated field or string longer than its limit.
    fn too_many(field: &'static str, count: usize, limit: usize, what: &str) -> Self {
        Self::new(field, format!("{count} {what}, more than the limit of {limit}"))
    }

    /// An enum field left at its UNSPECIFIED value, or holding one this side does not know.
    fn enumeration(field: &'static str, what: &str, raw: i32) -> Self {
        match raw {
            0 => Self::new(field, format!("{what} is unspecified")),
            n => Self::new(field, format!("unknown {what} {n}")),
        }
    }
}

impl From<WireError> for tonic::Status {
    fn from(e: WireError) -> Self {
        tonic::Status::invalid_argument(e.to_string())
    }
}
