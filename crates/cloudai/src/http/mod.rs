//! The master's HTTP API (axum): health, telemetry and workers.

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
}

pub fn router(state: ApiState) -> Router {
    Router::new()
        .merge(telemetry::routes())
        .merge(tasks::routes())
        .merge(workers::routes())
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such endpoint") })
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT))
}

/// Serves the API on `listener` until `shutdown` fires, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let result =
        axum::serve(listener, router(state)).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    tracing::info!("http server stopped");
    result
}
