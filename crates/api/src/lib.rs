//! The master's HTTP API as its clients see it: a client, and the parsing of what users type
//! for addresses and durations.

#![forbid(unsafe_code)]

mod client;
pub mod parse;

pub use client::{ApiClient, ClientError};
