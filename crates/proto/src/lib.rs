//! CloudAI's wire protocol: generated protobuf and gRPC types of the `cloudai.v1` package,
//! their conversions to domain types, the version handshake, and the transport settings
//! both sides share.
//!
//! The generated types stay at the edge: the master and worker work with domain types.

#![forbid(unsafe_code)]

pub mod codec;
mod compression;
mod convert;
mod version;

#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("cloudai.v1");
}

pub use compression::{ACCEPTED_COMPRESSION, Compression};
pub use convert::{WireError, bounded_text, heartbeat_sample, limits, running_tasks, worker_info};
pub use version::{PROTOCOL_VERSION, PROTOCOL_VERSION_KEY, refused_version, version_refusal};

/// Metadata key of a rate-limited heartbeat's answer: when to send the next one.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// Largest message either side accepts by default (the master's `GRPC_MAX_MESSAGE_BYTES`); a
/// bigger one is refused with `RESOURCE_EXHAUSTED` (see [`codec`]).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;
/// The range of that setting: a worker's log batch (a quarter of the default) must fit the
/// lowest, and no message may take more than the highest.
pub const MIN_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
pub const MESSAGE_BYTES_CAP: usize = 64 * 1024 * 1024;
