//! `GET /api/alerts`: firing alerts, then recently resolved ones.

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use cloudai_alerts::{Alert, AlertStatus};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiState};
use cloudai_domain::time::unix_ms;

pub fn routes() -> Router<ApiState> {
    Router::new().route("/api/alerts", get(list))
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
}

#[derive(Serialize)]
struct AlertList {
    alerts: Vec<Alert>,
}

async fn list(
    State(state): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<AlertList>, ApiError> {
    let wanted = match q.status.as_deref() {
        None | Some("") => None,
        Some("firing") => Some(AlertStatus::Firing),
        Some("resolved") => Some(AlertStatus::Resolved),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "status: unknown status {other:?}, expected firing or resolved"
            )));
        }
    };
    let mut alerts = state.alerts.alerts(unix_ms());
    if let Some(wanted) = wanted {
        alerts.retain(|a| a.status == wanted);
    }
    Ok(Json(AlertList { alerts }))
}
