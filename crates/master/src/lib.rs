//! The CloudAI master, as a library: `Master::start(config, http, grpc)` on bound listeners,
//! `Master::shutdown` in order.
//!
//! Data flows one way: workers → [`rpc`] → telemetry / tasks → store → [`http`].

#![forbid(unsafe_code)]

pub mod alerting;
pub mod auth;
mod errors;
pub mod events;
pub mod fleet;
mod history_store;
mod http;
pub mod identity;
mod master;
pub mod metrics;
mod rpc;
mod shutdown;
pub mod tasks;
pub mod telemetry;

pub use http::{HttpLimits, MAX_BODY_BYTES, REQUEST_TIMEOUT};
pub use identity::WorkerTrust;
pub use master::{Master, MasterConfig, MasterError, Security, TlsConfig, WorkerLimits, history_config};
pub use rpc::MasterRpc;
pub use shutdown::StageReport;

/// Software version reported by the API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
