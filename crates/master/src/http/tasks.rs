//! `/api/tasks…`: submit, list, inspect, follow logs, cancel.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use cloudai_api::{
    DEFAULT_PAGE, ErrorCode, LogChunk, MAX_PAGE, Task, TaskEvent, TaskList, TaskLogs, TaskSummary,
};
use cloudai_domain::{TaskId, TaskSpec, TaskStatus};
use cloudai_store::{LogQuery, LogStream, StoredChunk, TaskFilter};
use futures::StreamExt;
use serde::Deserialize;

use super::{ApiError, ApiState, Route, delete, get, post};
use crate::auth::{AuditEvent, Principal};
use crate::errors::Coded;
use crate::tasks::{TaskError, TaskPage};

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

/// An id that cannot exist is not found; the message says why it cannot.
fn task_id(raw: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(raw).map_err(|e| ApiError::not_found(format!("task {raw:?} not found (task_id: {e})")))
}

/// A body must say it is JSON: a web page can send a "simple" cross-site POST of
/// `text/plain` or a form without the browser asking first, never one of `application/json`.
pub(super) fn require_json(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
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

/// The status an answer has, for the audit trail.
fn status_of(answer: &Result<Response, ApiError>) -> u16 {
    match answer {
        Ok(response) => response.status().as_u16(),
        Err(e) => e.status().as_u16(),
    }
}

async fn submit(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    headers: axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let (answer, task_id) = match accept(&state, &principal, &headers, body).await {
        Ok(task) => {
            let id = task.task_id.to_string();
            (Ok((StatusCode::CREATED, Json(Task::from(task))).into_response()), id)
        }
        Err(e) => (Err(e), String::new()),
    };
    let event = AuditEvent::new(&principal, "task.submit", task_id, status_of(&answer));
    let event = match &answer {
        Err(e) => event.detail(e.message()),
        Ok(_) => event,
    };
    state.auth.audit.record(event).await;
    answer
}

async fn accept(
    state: &ApiState,
    principal: &Principal,
    headers: &axum::http::HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<cloudai_domain::Task, ApiError> {
    require_json(headers)?;
    let body = body.map_err(|r| match ErrorCode::from_http_status(r.status().as_u16()) {
        Some(ErrorCode::PayloadTooLarge) => {
            ApiError::new(ErrorCode::PayloadTooLarge, super::json_errors::too_large())
        }
        code => ApiError::new(code.unwrap_or(ErrorCode::InvalidArgument), format!("body: {}", r.body_text())),
    })?;
    let spec = TaskSpec::from_json_within(&body, state.tasks.spec_limits())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    // A task bigger than every registered worker could only wait forever; with no worker
    // yet, the absolute bound of `TaskSpec` holds (the first workers may be big).
    if let Some(largest) = state.telemetry.largest_worker_memory_mb()
        && spec.memory_required > largest
    {
        return Err(ApiError::bad_request(format!(
            "memory_required: {} MB is more than the largest registered worker has ({largest} MB)",
            spec.memory_required
        )));
    }
    let max_pending = state.auth.config.max_pending_per_submitter;
    Ok(state.tasks.submit(spec, &principal.name, max_pending).await?)
}

/// The query of a task listing, as sent: every value is checked here so a bad one gets a
/// message naming it.
#[derive(Deserialize)]
pub(super) struct ListQuery {
    status: Option<String>,
    after: Option<String>,
    limit: Option<String>,
    order: Option<String>,
    brief: Option<String>,
}

/// A listing's page: what to list, and whether to leave the big fields out.
pub(super) struct PageQuery {
    pub filter: TaskFilter,
    pub after: Option<TaskId>,
    pub brief: bool,
}

impl ListQuery {
    pub(super) fn parse(self) -> Result<PageQuery, ApiError> {
        let status = match self.status.as_deref() {
            None | Some("") => None,
            Some(s) => {
                Some(s.parse::<TaskStatus>().map_err(|e| ApiError::bad_request(format!("status: {e}")))?)
            }
        };
        let limit = match self.limit.as_deref() {
            None | Some("") => DEFAULT_PAGE,
            Some(raw) => {
                raw.parse::<usize>().ok().filter(|n| (1..=MAX_PAGE).contains(n)).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "limit: {raw:?} is not a whole number between 1 and {MAX_PAGE}"
                    ))
                })?
            }
        };
        let after = match self.after.as_deref() {
            None | Some("") => None,
            Some(raw) => Some(TaskId::parse(raw).map_err(|e| ApiError::bad_request(format!("after: {e}")))?),
        };
        let newest_first = match self.order.as_deref() {
            None | Some("") | Some("oldest") => false,
            Some("newest") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "order: {other:?} is neither \"oldest\" nor \"newest\""
                )));
            }
        };
        let brief = match self.brief.as_deref() {
            None | Some("") | Some("false") => false,
            Some("true") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!("brief: {other:?} is neither true nor false")));
            }
        };
        let filter = TaskFilter { status, limit: Some(limit), newest_first, ..TaskFilter::default() };
        Ok(PageQuery { filter, after, brief })
    }
}

/// About how many bytes a page may take as JSON: a page ends early past it (with `next`), so
/// tasks with big environments cannot make one answer hundreds of megabytes.
const PAGE_JSON_BYTES: usize = 8 * 1024 * 1024;

/// About the size of a task's JSON, dominated by what the user sent.
fn approx_json_bytes(task: &cloudai_domain::Task, brief: bool) -> usize {
    let spec = &task.spec;
    let big = if brief {
        0
    } else {
        spec.env.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>()
            + spec.command.iter().map(|a| a.len() + 4).sum::<usize>()
    };
    512 + big + task.error().map_or(0, str::len) + spec.docker_image.as_deref().map_or(0, str::len)
}

/// Ends `page` early once it passes [`PAGE_JSON_BYTES`] (always keeping one task).
pub(super) fn fit_page(page: &mut TaskPage, brief: bool) {
    let mut total = 0;
    let keep = page
        .tasks
        .iter()
        .take_while(|t| {
            total += approx_json_bytes(t, brief);
            total <= PAGE_JSON_BYTES
        })
        .count()
        .max(1);
    if keep < page.tasks.len() {
        page.tasks.truncate(keep);
        page.next = page.tasks.last().map(|t| t.task_id.clone());
    }
}

/// The API's task as `viewer` may see it: env values only for its submitter and operators.
pub(super) fn shown(task: cloudai_domain::Task, viewer: &Principal) -> Task {
    let mine = viewer.owns_or_operates(task.submitted_by.as_deref());
    let mut task = Task::from(task);
    if !mine {
        task.hide_env();
    }
    task
}

/// The API's task as `viewer` may see it, without `env` and `command` when `brief`.
pub(super) fn listed(task: cloudai_domain::Task, brief: bool, viewer: &Principal) -> Task {
    let mut task = shown(task, viewer);
    if brief {
        task.spec.env.clear();
        task.spec.command.clear();
    }
    task
}

/// A page's answer; a brief one leaves the big fields out altogether.
pub(super) fn page_json<T: serde::Serialize>(answer: &T, brief: bool) -> Result<Response, ApiError> {
    if !brief {
        return Ok(Json(answer).into_response());
    }
    let mut value = serde_json::to_value(answer).map_err(|e| ApiError::internal(format!("listing: {e}")))?;
    if let Some(tasks) = value.get_mut("tasks").and_then(serde_json::Value::as_array_mut) {
        for task in tasks.iter_mut().filter_map(serde_json::Value::as_object_mut) {
            task.remove("env");
            task.remove("command");
        }
    }
    Ok(Json(value).into_response())
}

async fn list(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Principal>,
    Query(q): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let PageQuery { filter, after, brief } = q.parse()?;
    let mut page = state.tasks.list(filter, after.as_ref()).await?;
    fit_page(&mut page, brief);
    let tasks = page.tasks.into_iter().map(|t| listed(t, brief, &viewer)).collect();
    let answer = TaskList { tasks, next: page.next };
    page_json(&answer, brief)
}

/// Tasks per status (all six, zeros included).
async fn summary(State(state): State<ApiState>) -> Result<Json<TaskSummary>, ApiError> {
    Ok(Json(state.tasks.count_by_status().await?.into()))
}

async fn one(
    State(state): State<ApiState>,
    Extension(viewer): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Json<Task>, ApiError> {
    Ok(Json(shown(state.tasks.get(&task_id(&raw)?).await?, &viewer)))
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

async fn cancel(
    State(state): State<ApiState>,
    Extension(principal): Extension<Principal>,
    Path(raw): Path<String>,
) -> Result<Response, ApiError> {
    let answer = stop(&state, &principal, &raw).await;
    let event = AuditEvent::new(&principal, "task.cancel", raw, status_of(&answer));
    let event = match &answer {
        Err(e) => event.detail(e.message()),
        Ok(_) => event,
    };
    state.auth.audit.record(event).await;
    answer
}

async fn stop(state: &ApiState, principal: &Principal, raw: &str) -> Result<Response, ApiError> {
    let id = task_id(raw)?;
    if !principal.can(cloudai_api::Role::Operator) {
        let task = state.tasks.get(&id).await?;
        if task.submitted_by.as_deref() != Some(&*principal.name) {
            let owner = task.submitted_by.as_deref().unwrap_or("an unrecorded submitter");
            return Err(ApiError::new(
                ErrorCode::PermissionDenied,
                format!(
                    "task {id} was submitted by {owner:?}: the {} role cancels only its own tasks (operator cancels any)",
                    principal.role
                ),
            ));
        }
    }
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
