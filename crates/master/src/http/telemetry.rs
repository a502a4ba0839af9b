//! `/health`, `/telemetry`, `/telemetry/{worker_id}`, `/workers`: the seeds' telemetry API.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::{ApiError, ApiState};
use crate::telemetry::WorkerTelemetry;
use cloudai_domain::WorkerId;
use cloudai_domain::time::unix_secs;

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/health", get(health))
        .route("/telemetry", get(all_telemetry))
        .route("/telemetry/{worker_id}", get(one_telemetry))
        .route("/workers", get(workers))
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    time: i64,
}

async fn health() -> Json<Health> {
    Json(Health { status: "healthy", time: unix_secs() })
}

async fn all_telemetry(State(state): State<ApiState>) -> Json<BTreeMap<WorkerId, WorkerTelemetry>> {
    Json(state.telemetry.get_all_worker_telemetry().into_iter().collect())
}

/// Parses a worker id from a path; an id that cannot exist is simply not found.
pub(super) fn worker_id(raw: &str) -> Result<WorkerId, ApiError> {
    WorkerId::parse(raw).map_err(|_| ApiError::not_found(format!("worker {raw:?} not found")))
}

async fn one_telemetry(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Json<WorkerTelemetry>, ApiError> {
    let id = worker_id(&raw)?;
    state
        .telemetry
        .get_worker_telemetry(&id)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("worker {raw:?} not found")))
}

#[derive(Serialize)]
struct WorkerSummary {
    worker_id: WorkerId,
    hostname: String,
    is_active: bool,
    cpu_usage: f64,
    memory_usage: f64,
    gpu_usage: f64,
    gpu_count: usize,
    task_count: usize,
    last_update: i64,
}

async fn workers(State(state): State<ApiState>) -> Json<BTreeMap<WorkerId, WorkerSummary>> {
    let all = state.telemetry.list_workers();
    Json(
        all.into_iter()
            .map(|(info, t)| {
                let summary = WorkerSummary {
                    worker_id: t.worker_id.clone(),
                    hostname: info.hostname.clone(),
                    is_active: t.is_active,
                    cpu_usage: t.cpu_usage,
                    memory_usage: t.memory_usage,
                    gpu_usage: t.gpu_usage,
                    gpu_count: info.gpus.len(),
                    task_count: t.running_tasks.len(),
                    last_update: t.last_update,
                };
                (t.worker_id, summary)
            })
            .collect(),
    )
}
