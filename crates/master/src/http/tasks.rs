//! `/api/tasks…`: submit, list, inspect, follow logs, cancel.

use std::time::Duration;

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cloudai_api::{ErrorCode, LogChunk, Task, TaskEvent, TaskLogs, TaskSummary};
use cloudai_domain::{TaskId, TaskSpec, TaskStatus};
use cloudai_store::{LogQuery, LogStream, StoredChunk, TaskFilter};
use futures::StreamExt;
use serde::Deserialize;

use super::{ApiError, ApiState, Route, delete, get, post};
use crate::errors::Coded;
use crate::tasks::TaskError;

pub(super) fn routes() -> Vec<Route> {
    vec![
        get("/api/tasks", list),
        post("/api/tasks", submit),
        get("/api/tasks/summary", summary),
        get("/api/tasks/{id}", one),
        delete("/api/tasks/{id}", cancel),
        get("/api/tasks/{id}/events", events),
        get("/api/tasks/{id}/logs", logs),
    ]
}

impl From<TaskError> for ApiError {
    fn from(e: TaskError) -> Self {
        ApiError::new(e.code(), e.message())
    }
}

fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(raw).map_err(|_| ApiError::not_found(format!("task {raw:?} not found")))
}

/// A body must say it is JSON: a web page can send a "simple" cross-site POST of
/// `text/plain` or a form without the browser asking first, never one of `application/json`.
fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap_or("(not text)"));
    let essence = content_type.map(|c| c.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    if essence.as_deref() == Some("application/json") {
        return Ok(());
    }
    let given = content_type.map_or_else(|| "none".to_string(), |c| format!("{c:?}"));
    Err(ApiError::new(
        ErrorCode::UnsupportedMediaType,
        format!("body: Content-Type must be application/json (given: {given})"),
    ))
}

async fn submit(
    State(state): State<ApiState>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    require_json(&headers)?;
    let body = body.map_err(|r| {
        let code = ErrorCode::from_http_status(r.status().as_u16()).unwrap_or(ErrorCode::InvalidArgument);
        ApiError::new(code, format!("body: {}", r.body_text()))
    })?;
    let spec = TaskSpec::from_json(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let task = state.tasks.submit(spec).await?;
    Ok((StatusCode::CREATED, Json(Task::from(task))).into_response())
}

#[derive(Deserialize)]
struct ListQuery {
    status: Option<String>,
    limit: Option<usize>,
}

async fn list(
    State(state): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Vec<Task>>, ApiError> {
    let status = match q.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(s.parse::<TaskStatus>().map_err(|e| ApiError::bad_request(format!("status: {e}")))?),
    };
    let filter = TaskFilter { status, worker_id: None, limit: q.limit };
    let tasks = state.tasks.list(&filter).await?;
    Ok(Json(tasks.into_iter().map(Task::from).collect()))
}

/// Tasks per status (all six, zeros included).
async fn summary(State(state): State<ApiState>) -> Result<Json<TaskSummary>, ApiError> {
    Ok(Json(state.tasks.count_by_status().await?.into()))
}

async fn one(State(state): State<ApiState>, Path(raw): Path<String>) -> Result<Json<Task>, ApiError> {
    Ok(Json(state.tasks.get(&task_id(&raw)?).await?.into()))
}

async fn events(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
) -> Result<Json<Vec<TaskEvent>>, ApiError> {
    let id = task_id(&raw)?;
    state.tasks.get(&id).await?;
    let events = state.tasks.events(&id).await?;
    Ok(Json(events.into_iter().map(TaskEvent::from).collect()))
}

async fn cancel(State(state): State<ApiState>, Path(raw): Path<String>) -> Result<Response, ApiError> {
    let id = task_id(&raw)?;
    match state.tasks.cancel(id).await {
        Ok(task) if task.status() == TaskStatus::Cancelled => Ok(Json(Task::from(task)).into_response()),
        // Running: the worker stops it (SIGTERM, then SIGKILL after the grace period).
        Ok(task) => Ok((StatusCode::ACCEPTED, Json(Task::from(task))).into_response()),
        // Ended (409) or unknown (404).
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
struct LogsQuery {
    #[serde(default)]
    follow: bool,
    /// Last N lines.
    tail: Option<usize>,
}

fn chunk(c: StoredChunk) -> LogChunk {
    let stream = match c.stream {
        LogStream::Stdout => cloudai_api::LogStream::Stdout,
        LogStream::Stderr => cloudai_api::LogStream::Stderr,
    };
    LogChunk::new(c.seq, stream, &c.data, c.time_ms)
}

/// Most bytes returned by one non-following read.
const PAGE_BYTES: u64 = 8 * 1024 * 1024;

async fn logs(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let id = task_id(&raw)?;
    let task = state.tasks.get(&id).await?;
    if q.tail == Some(0) {
        return Err(ApiError::bad_request("tail: must be at least 1"));
    }
    // A tail is read from the newest bytes backwards; either way at most a page.
    let query = match q.tail {
        Some(n) => LogQuery {
            tail_lines: Some(u64::try_from(n).unwrap_or(u64::MAX)),
            tail_bytes: Some(PAGE_BYTES),
            ..LogQuery::default()
        },
        None => LogQuery { limit_bytes: Some(PAGE_BYTES), ..LogQuery::default() },
    };
    let page = state.tasks.read_logs(&id, query).await?;
    let chunks = page.chunks;
    if !q.follow {
        let logs = chunks.into_iter().map(chunk).collect();
        return Ok(Json(TaskLogs {
            task_id: id,
            status: task.status(),
            logs,
            dropped_bytes: page.dropped_bytes,
            next_seq: page.next_seq,
        })
        .into_response());
    }
    // Follow: newline-delimited JSON, one chunk per line, until the task ends.
    let first: Vec<Bytes> = chunks.into_iter().map(|c| ndjson(chunk(c))).collect();
    let follow = Follow { state, id, after: page.next_seq, done: false };
    let stream = futures::stream::iter(first.into_iter().map(Ok::<_, std::io::Error>))
        .chain(futures::stream::unfold(follow, Follow::next).flat_map(futures::stream::iter));
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], Body::from_stream(stream)).into_response())
}

fn ndjson(line: LogChunk) -> Bytes {
    let mut v = serde_json::to_vec(&line).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

struct Follow {
    state: ApiState,
    id: TaskId,
    after: u64,
    done: bool,
}

impl Follow {
    /// The next lines to send; `None` ends the stream (task over and output drained).
    async fn next(mut self) -> Option<(Vec<Result<Bytes, std::io::Error>>, Self)> {
        if self.done {
            return None;
        }
        let id = self.id.clone();
        let watch = self.state.tasks.log_watch().clone();
        let notify = watch.notifier(&id);
        let result = loop {
            // Register interest before reading, so a wake between the read and the wait is kept.
            let notified = notify.notified();
            let query = LogQuery {
                after_seq: Some(self.after),
                limit_bytes: Some(1024 * 1024),
                ..LogQuery::default()
            };
            let page = match self.state.tasks.read_logs(&self.id, query).await {
                Ok(p) => p,
                Err(_) => break None,
            };
            if !page.chunks.is_empty() {
                self.after = page.next_seq;
                let lines = page.chunks.into_iter().map(|c| Ok(ndjson(chunk(c)))).collect();
                break Some((lines, self));
            }
            let finished = match self.state.tasks.get(&self.id).await {
                Ok(t) => t.status().is_final(),
                Err(_) => true,
            };
            if finished {
                // Final status is recorded after the worker shipped all output: read once more.
                let query = LogQuery { after_seq: Some(self.after), ..LogQuery::default() };
                let rest =
                    self.state.tasks.read_logs(&self.id, query).await.map(|p| p.chunks).unwrap_or_default();
                self.done = true;
                let lines = rest.into_iter().map(|c| Ok(ndjson(chunk(c)))).collect();
                break Some((lines, self));
            }
            // Woken by new output or the task's end; the timeout covers a missed wake.
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        };
        drop(notify);
        watch.release(&id);
        result
    }
}
