//! `/api/cluster/join-token` and `/api/workers/{worker_id}/revoke` (admin: the middleware
//! checks the role). Every change is durable, and audited, before it is answered.

use axum::extract::{Path, State};
use axum::{Extension, Json};
use cloudai_api::{ErrorCode, JoinTokenInfo, RevokedWorker};
use cloudai_domain::WorkerId;

use super::{ApiError, ApiState, Route, get, post};
use crate::auth::{AuditEvent, Principal};
use crate::identity::TrustError;

pub(super) fn routes() -> Vec<Route> {
    vec![
        get("/api/cluster/join-token", join_token),
        post("/api/cluster/join-token/rotate", rotate),
        post("/api/workers/{worker_id}/revoke", revoke),
    ]
}

impl From<TrustError> for ApiError {
    fn from(e: TrustError) -> Self {
        match e {
            TrustError::Insecure => ApiError::new(ErrorCode::Conflict, e.to_string()),
            TrustError::Pki(source) => {
                tracing::error!(error = %source, "cannot write the cluster's trust files");
                ApiError::new(ErrorCode::Unavailable, format!("not saved: {source}"))
            }
        }
    }
}

fn info(state: &ApiState, token: cloudai_pki::JoinToken) -> JoinTokenInfo {
    JoinTokenInfo {
        ca_fingerprint: token.ca_fingerprint.clone(),
        token: token.to_string(),
        grpc_port: state.grpc_port,
    }
}

async fn join_token(State(state): State<ApiState>) -> Result<Json<JoinTokenInfo>, ApiError> {
    let token = state.trust.join_token().ok_or(TrustError::Insecure)?;
    Ok(Json(info(&state, token)))
}

async fn audited(state: &ApiState, event: AuditEvent) {
    if let Err(e) = state.auth.audit.record_durable(event).await {
        tracing::error!(error = %format!("{e:#}"), "cannot record a trust change in the audit trail");
    }
}

async fn rotate(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
) -> Result<Json<JoinTokenInfo>, ApiError> {
    let rotated = state.trust.rotate_join_token().map_err(ApiError::from);
    let status = rotated.as_ref().map_or_else(|e| e.status().as_u16(), |_| 200);
    audited(&state, AuditEvent::new(&principal, "cluster.join_token.rotate", "", status)).await;
    Ok(Json(info(&state, rotated?)))
}

async fn revoke(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<RevokedWorker>, ApiError> {
    let revoked = WorkerId::parse(&raw)
        .map_err(|e| ApiError::bad_request(format!("worker_id: {e}")))
        .and_then(|id| state.trust.revoke(&id).map(|newly| (id, newly)).map_err(ApiError::from));
    let event = match &revoked {
        Ok((_, newly)) => AuditEvent::new(&principal, "worker.revoke", &raw, 200).detail(if *newly {
            "revoked"
        } else {
            "already revoked"
        }),
        Err(e) => AuditEvent::new(&principal, "worker.revoke", &raw, e.status().as_u16()).detail(e.message()),
    };
    audited(&state, event).await;
    let (id, newly_revoked) = revoked?;
    Ok(Json(RevokedWorker { worker_id: id.to_string(), newly_revoked }))
}
