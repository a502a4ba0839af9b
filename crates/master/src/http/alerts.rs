//! `GET /api/alerts`: firing alerts, then recently resolved ones.

use axum::Json;
use axum::extract::{Query, State};
use cloudai_alerts::AlertStatus;
use cloudai_api::{Alert, AlertList};
use cloudai_domain::time::unix_ms;
use serde::Deserialize;

use super::{ApiError, ApiState, Route, get};

pub(super) fn routes() -> Vec<Route> {
    vec![get("/api/alerts", list)]
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
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
    Ok(Json(AlertList { alerts: alerts.into_iter().map(Alert::from).collect() }))
}
