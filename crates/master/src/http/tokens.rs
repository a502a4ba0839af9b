//! `/api/tokens` and `/api/audit` (admin only: the middleware checks the role).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cloudai_api::{AuditEntry, AuditList, CreateToken, DEFAULT_PAGE, MAX_PAGE, TokenInfo};
use serde::Deserialize;

use super::{ApiError, ApiState, Route, delete, get, post};
use crate::auth::{AuditEvent, AuthError, Principal};

pub(super) fn routes() -> Vec<Route> {
    vec![
        get("/api/tokens", list),
        post("/api/tokens", create),
        delete("/api/tokens/{id}", revoke),
        get("/api/audit", audit),
    ]
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        if let AuthError::Store(source) = &e {
            tracing::error!(error = %format!("{source:#}"), "token store error");
        }
        ApiError::new(e.code(), e.to_string())
    }
}

async fn list(State(state): State<ApiState>) -> Json<Vec<TokenInfo>> {
    Json(state.auth.tokens.list())
}

/// A token change is on disk before it is answered; so is its audit record.
async fn audited(state: &ApiState, event: AuditEvent) {
    if let Err(e) = state.auth.audit.record_durable(event).await {
        tracing::error!(error = %format!("{e:#}"), "cannot record a token change in the audit trail");
    }
}

async fn create(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let created = async {
        super::tasks::require_json(&headers)?;
        let body = body.map_err(|r| ApiError::bad_request(format!("body: {}", r.body_text())))?;
        let request: CreateToken =
            serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("body: {e}")))?;
        let created = state.auth.tokens.create(&request.name, request.role).await?;
        Ok::<_, ApiError>(created)
    }
    .await;
    let (target, status, detail) = match &created {
        Ok(c) => (c.info.id.clone(), 201, format!("name {:?}, role {}", c.info.name, c.info.role)),
        Err(e) => (String::new(), e.status().as_u16(), e.message().to_string()),
    };
    audited(&state, AuditEvent::new(&principal, "token.create", target, status).detail(detail)).await;
    Ok((StatusCode::CREATED, Json(created?)).into_response())
}

async fn revoke(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<TokenInfo>, ApiError> {
    let revoked = state.auth.tokens.revoke(&id).await.map_err(ApiError::from);
    let event = match &revoked {
        Ok(info) => {
            AuditEvent::new(&principal, "token.revoke", &id, 200).detail(format!("name {:?}", info.name))
        }
        Err(e) => AuditEvent::new(&principal, "token.revoke", &id, e.status().as_u16()).detail(e.message()),
    };
    audited(&state, event).await;
    Ok(Json(revoked?))
}

#[derive(Deserialize)]
struct AuditQuery {
    before: Option<String>,
    limit: Option<String>,
}

async fn audit(
    State(state): State<ApiState>,
    Query(q): Query<AuditQuery>,
) -> Result<Json<AuditList>, ApiError> {
    let limit = match q.limit.as_deref() {
        None | Some("") => DEFAULT_PAGE,
        Some(raw) => raw.parse::<usize>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
            ApiError::bad_request(format!("limit: {raw:?} is not a whole number between 1 and {MAX_PAGE}"))
        })?,
    };
    let before = match q.before.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(raw.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            ApiError::bad_request(format!("before: {raw:?} is not a page's `next` (a whole number above 0)"))
        })?),
    };
    // One more than the page says whether an older one follows.
    let mut records = state.auth.audit.list(before, limit + 1).await.map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "cannot read the audit trail");
        ApiError::new(cloudai_api::ErrorCode::Unavailable, "the master cannot read its store; retry")
    })?;
    let more = records.len() > limit;
    records.truncate(limit);
    let next = if more { records.last().map(|r| r.seq) } else { None };
    let entries = records
        .into_iter()
        .map(|r| AuditEntry {
            seq: r.seq,
            at_ms: r.at_ms,
            actor: r.actor,
            action: r.action,
            target: r.target,
            status: r.status,
            detail: r.detail,
        })
        .collect();
    Ok(Json(AuditList { entries, next }))
}
