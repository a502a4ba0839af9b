//! Generated protobuf and gRPC types of the `cloudai.v1` package.
//!
//! These types stay at the edge: the master and worker convert them to domain types.

#![allow(clippy::all, clippy::pedantic)]

pub mod v1 {
    tonic::include_proto!("cloudai.v1");
}

/// The protocol version a worker announces when it registers.
pub const PROTOCOL_VERSION: u32 = 1;
