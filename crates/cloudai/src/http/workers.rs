//! `/api/workers…`: registration details plus live figures, for clients and the CLI.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::telemetry::worker_id;
use super::{ApiError, ApiState};
use crate::telemetry::{GpuStats, WorkerInfo, WorkerTelemetry};

pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/workers", get(list))
        .route("/api/workers/{worker_id}", get(one))
        .route("/api/workers/{worker_id}/metrics", get(metrics))
        .route("/api/workers/{worker_id}/tasks", get(tasks))
}

#[derive(Serialize)]
pub struct WorkerDetail {
    #[serde(flatten)]
    pub info: WorkerInfo,
    pub is_active: bool,
    pub telemetry: WorkerTelemetry,
}

async fn list(State(state): State<ApiState>) -> Json<Vec<WorkerDetail>> {
    Json(
        state
            .telemetry
            .list_workers()
            .into_iter()
            .map(|(info, telemetry)| WorkerDetail { info, is_active: telemetry.is_active, telemetry })
            .collect(),
    )
}

fn lookup(state: &ApiState, raw: &str) -> Result<(WorkerInfo, WorkerTelemetry), ApiError> {
    let id = worker_id(raw)?;
    let info = state.telemetry.get_worker_info(&id);
    let telemetry = state.telemetry.get_worker_telemetry(&id);
    info.zip(telemetry).ok_or_else(|| ApiError::not_found(format!("worker {raw:?} not found")))
}

async fn one(State(state): State<ApiState>, Path(raw): Path<String>) -> Result<Json<WorkerDetail>, ApiError> {
    let (info, telemetry) = lookup(&state, &raw)?;
    Ok(Json(WorkerDetail { info, is_active: telemetry.is_active, telemetry }))
}

#[derive(Serialize)]
struct WorkerMetrics {
    worker_id: String,
    is_active: bool,
    last_update: i64,
    cpu_usage: f64,
    cpu_cores: f64,
    memory_usage: f64,
    memory_used_mb: u64,
    memory_total_mb: u64,
    gpu_usage: f64,
    gpus: Vec<GpuStats>,
}

async fn metrics(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Json<WorkerMetrics>, ApiError> {
    let (info, t) = lookup(&state, &raw)?;
    Ok(Json(WorkerMetrics {
        worker_id: t.worker_id.to_string(),
        is_active: t.is_active,
        last_update: t.last_update,
        cpu_usage: t.cpu_usage,
        cpu_cores: info.cpu_cores,
        memory_usage: t.memory_usage,
        memory_used_mb: t.memory_used_mb,
        memory_total_mb: t.memory_total_mb,
        gpu_usage: t.gpu_usage,
        gpus: t.gpus,
    }))
}

/// A task on a worker, with its live usage while it runs (container stats for docker).
#[derive(Serialize)]
struct WorkerTask {
    #[serde(flatten)]
    task: cloudai_domain::Task,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<TaskUsage>,
}

#[derive(Serialize)]
struct TaskUsage {
    cpu_percent: f64,
    memory_bytes: u64,
}

async fn tasks(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Json<Vec<WorkerTask>>, ApiError> {
    let id = worker_id(&raw)?;
    let telemetry = state.telemetry.get_worker_telemetry(&id);
    let tasks = state.tasks.worker_tasks(&id).await?;
    if telemetry.is_none() && tasks.is_empty() {
        return Err(ApiError::not_found(format!("worker {raw:?} not found")));
    }
    let running = telemetry.map(|t| t.running_tasks).unwrap_or_default();
    Ok(Json(
        tasks
            .into_iter()
            .map(|task| {
                let usage = running
                    .iter()
                    .find(|r| r.task_id == task.task_id.as_str() && task.status.is_placed())
                    .map(|r| TaskUsage { cpu_percent: r.cpu_percent, memory_bytes: r.memory_bytes });
                WorkerTask { task, usage }
            })
            .collect(),
    ))
}
