//! `/api/cluster/join-token` and `/api/workers/{id}/revoke`: who may join, and who may not
//! any more (admin only).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The join token workers present once (`CLOUDAI_JOIN_TOKEN`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JoinTokenInfo {
    /// `cloudai-join.<CA fingerprint>.<secret>`.
    pub token: String,
    /// SHA-256 of the cluster CA certificate, hex: what the token pins.
    pub ca_fingerprint: String,
    /// The master's gRPC port, where workers dial (`https://HOST:PORT`).
    pub grpc_port: u16,
}

/// A worker revoked: its certificates are refused from now on, and its joining again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RevokedWorker {
    pub worker_id: String,
    /// `false` when it was revoked already.
    pub newly_revoked: bool,
}
