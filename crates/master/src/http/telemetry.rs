//! `/health`, `/telemetry`, `/telemetry/{worker_id}`, `/workers`: the seeds' telemetry API.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use cloudai_api::{Health, TelemetryMap, WorkerSummary, WorkerSummaryMap};
use cloudai_domain::time::unix_secs;
use cloudai_domain::{WorkerId, WorkerInfo};

use super::{ApiError, ApiState, Route, get};
use crate::telemetry::WorkerTelemetry;

pub(super) fn routes() -> Vec<Route> {
    vec![
        get("/health", health),
        get("/telemetry", all_telemetry),
        get("/telemetry/{worker_id}", one_telemetry),
        get("/workers", workers),
    ]
}

impl From<WorkerTelemetry> for cloudai_api::WorkerTelemetry {
    fn from(t: WorkerTelemetry) -> Self {
        Self {
            worker_id: t.worker_id,
            cpu_usage: t.cpu_usage,
            memory_usage: t.memory_usage,
            gpu_usage: t.gpu_usage,
            memory_used_mb: t.memory_used_mb,
            memory_total_mb: t.memory_total_mb,
            gpus: t.gpus.into_iter().map(Into::into).collect(),
            // The worker reports only tasks it was given, by their ids and its two statuses;
            // an entry that is not one of ours has nothing to show.
            running_tasks: t.running_tasks.into_iter().filter_map(|r| r.try_into().ok()).collect(),
            last_update: t.last_update,
            sample_time_ms: t.sample_time_ms,
            is_active: t.is_active,
            heartbeats_received: t.heartbeats_received,
            heartbeats_dropped: t.heartbeats_dropped,
        }
    }
}

fn summary(info: &Arc<WorkerInfo>, t: &WorkerTelemetry) -> WorkerSummary {
    WorkerSummary {
        worker_id: t.worker_id.clone(),
        hostname: info.hostname.clone(),
        is_active: t.is_active,
        cpu_usage: t.cpu_usage,
        memory_usage: t.memory_usage,
        gpu_usage: t.gpu_usage,
        gpu_count: info.gpus.len(),
        task_count: t.running_tasks.len(),
        last_update: t.last_update,
    }
}

async fn health() -> Json<Health> {
    Json(Health { status: "healthy".into(), time: unix_secs() })
}

async fn all_telemetry(State(state): State<ApiState>) -> Json<TelemetryMap> {
    let all = state.telemetry.get_all_worker_telemetry();
    Json(all.into_iter().map(|(id, t)| (id, t.into())).collect())
}

/// Parses a worker id from a path; an id that cannot exist is not found, and the message
/// says why it cannot.
pub(super) fn worker_id(raw: &str) -> Result<WorkerId, ApiError> {
    WorkerId::parse(raw)
        .map_err(|e| ApiError::not_found(format!("worker {raw:?} not found (worker_id: {e})")))
}

pub(super) fn not_found(raw: &str) -> ApiError {
    ApiError::not_found(format!("worker {raw:?} not found"))
}

async fn one_telemetry(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Json<cloudai_api::WorkerTelemetry>, ApiError> {
    let id = worker_id(&raw)?;
    let t = state.telemetry.get_worker_telemetry(&id).ok_or_else(|| not_found(&raw))?;
    Ok(Json(t.into()))
}

async fn workers(State(state): State<ApiState>) -> Json<WorkerSummaryMap> {
    let all = state.telemetry.list_workers();
    Json(all.iter().map(|(info, t)| (t.worker_id.clone(), summary(info, t))).collect())
}
