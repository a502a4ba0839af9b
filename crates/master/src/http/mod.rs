//! The master's HTTP API (axum): health, telemetry and workers.

mod alerts;
mod error;
mod tasks;
mod telemetry;
mod workers;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

pub use error::ApiError;

use crate::tasks::TaskService;
use crate::telemetry::TelemetryManager;

/// Requests (reading the body and writing the answer) taking longer than this get 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub telemetry: TelemetryManager,
    pub tasks: TaskService,
    pub metrics: crate::metrics::Metrics,
    pub alerts: crate::alerting::AlertService,
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(telemetry::routes())
        .merge(tasks::routes())
        .route("/metrics", axum::routing::get(metrics))
        .merge(workers::routes())
        .merge(alerts::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
}

/// Prometheus scrape: a snapshot of the cluster, encoded off the async threads.
async fn metrics(
    axum::extract::State(state): axum::extract::State<ApiState>,
    headers: axum::http::HeaderMap,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let task_states = state.tasks.count_by_status().await?;
    let counts = state.tasks.counts().await?;
    let (metrics, telemetry, alerts) = (state.metrics.clone(), state.telemetry.clone(), state.alerts.clone());
    // Copying every worker's figures is a pass over the cluster too: not on an async thread.
    let text = tokio::task::spawn_blocking(move || {
        let snapshot = crate::metrics::Snapshot {
            workers: telemetry.list_workers(),
            stats: telemetry.stats(),
            task_states,
            counts,
            alerts_firing: alerts.firing_count(),
        };
        crate::metrics::render(&metrics, snapshot)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}")))?
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("metrics: {e}")))?;
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if accept.contains("application/openmetrics-text") {
        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        return Ok(([(axum::http::header::CONTENT_TYPE, content_type)], text).into_response());
    }
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(([(axum::http::header::CONTENT_TYPE, content_type)], crate::metrics::to_classic_text(&text))
        .into_response())
}

/// Serves the API on `listener` until `shutdown` fires, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await
}
