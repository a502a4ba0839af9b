//! CloudAI: a cluster manager for AI compute.
//!
//! Data flows one way: worker → [`rpc`] → [`telemetry`] → [`http`] / [`console`].
//! Every server is a function of (config, bound listeners, shutdown token), so the
//! master and any number of workers can run in one process (tests, `cloudai dev`).

#![forbid(unsafe_code)]

pub mod alerting;
pub mod bench;
pub mod cli;
pub mod client;
pub mod compression;
pub mod config;
pub mod console;
pub mod events;
pub mod history_store;
pub mod http;
pub mod master;
pub mod metrics;
pub mod rpc;
pub mod tasks;
pub mod telemetry;
pub mod time;
pub mod worker;

pub use cloudai_domain::ids;

/// Software version reported by workers and the API.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
