//! A typed async client for the master's HTTP API: one method per endpoint, answers parsed
//! into this crate's types, so a renamed or missing field is an error naming it.

use std::time::Duration;

use cloudai_domain::{TaskId, TaskStatus, WorkerId};
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;

use crate::alerts::{AlertList, AlertStatus};
use crate::auth::{AuditList, CreateToken, CreatedToken, Role, TokenInfo};
use crate::cluster::{JoinTokenInfo, RevokedWorker};
use crate::error::{ApiErrorBody, ErrorCode};
use crate::history::HistoryQuery;
use crate::logs::{LogChunk, TaskLogs};
use crate::tasks::{SubmitTask, Task, TaskEvent, TaskList, TaskListQuery, TaskSummary};
use crate::telemetry::{Health, TelemetryMap, WorkerSummaryMap, WorkerTelemetry};
use crate::workers::{WorkerDetail, WorkerMetrics, WorkerTaskList};

/// A request that does not follow a stream gives up after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the master at {addr} (is it running? set CLOUDAI_ADDR or --addr)")]
    Unreachable {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    /// The master answered with an error status; `message` is its `error` text.
    #[error("the master says ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("the API token holds characters that cannot be sent in a header")]
    BadToken,
    #[error("the CA certificate (CLOUDAI_CA_CERT) is not a PEM certificate: {0}")]
    BadCa(String),
    /// The answer is not what this client expects; `path` is where in the JSON it differs
    /// (`.` for the whole body, `[0].telemetry` for a field of the first item's `telemetry`).
    #[error("unexpected answer from the master to {request}: {}", describe(.path, .message))]
    BadAnswer { request: String, path: String, message: String },
}

fn describe(path: &str, message: &str) -> String {
    if path == "." { message.to_string() } else { format!("at {path}: {message}") }
}

impl ClientError {
    /// The error kind behind a refusal, when the status is one the master sends.
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Refused { status, .. } => ErrorCode::from_http_status(*status),
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct ApiClient {
    addr: String,
    http: reqwest::Client,
    /// `Authorization` value sent with every request, when given a token.
    bearer: Option<reqwest::header::HeaderValue>,
}

impl std::fmt::Debug for ApiClient {
    // Never the token: clients end up in logs and panic messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").field("addr", &self.addr).field("token", &self.bearer.is_some()).finish()
    }
}

impl ApiClient {
    /// A client for the master at `addr` (`http://HOST:PORT`).
    pub fn new(addr: &str) -> Self {
        let http = Self::builder().build().unwrap_or_default();
        Self { addr: addr.trim_end_matches('/').to_string(), http, bearer: None }
    }

    fn builder() -> reqwest::ClientBuilder {
        reqwest::Client::builder().connect_timeout(Duration::from_secs(5)).pool_max_idle_per_host(64)
    }

    /// The same client trusting only `ca_pem` (the cluster CA, `<data dir>/pki/ca.crt`) for
    /// an `https://` master, and never following it to plain text.
    pub fn with_ca_cert(mut self, ca_pem: &[u8]) -> Result<Self, ClientError> {
        let ca = reqwest::Certificate::from_pem(ca_pem).map_err(|e| ClientError::BadCa(e.to_string()))?;
        self.http = Self::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .https_only(true)
            .build()
            .map_err(|e| ClientError::BadCa(e.to_string()))?;
        Ok(self)
    }

    /// The same client, sending `Authorization: Bearer <token>` with every request. A token
    /// that cannot be a header value (a control character) is refused.
    pub fn with_token(mut self, token: &str) -> Result<Self, ClientError> {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| ClientError::BadToken)?;
        value.set_sensitive(true);
        self.bearer = Some(value);
        Ok(self)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    // ---- telemetry ----

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, "/health".into(), &[]).await
    }

    /// `GET /telemetry`: worker id → telemetry.
    pub async fn telemetry(&self) -> Result<TelemetryMap, ClientError> {
        self.call(Method::GET, "/telemetry".into(), &[]).await
    }

    pub async fn worker_telemetry(&self, id: &WorkerId) -> Result<WorkerTelemetry, ClientError> {
        self.call(Method::GET, format!("/telemetry/{id}"), &[]).await
    }

    /// `GET /workers`: worker id → summary.
    pub async fn workers(&self) -> Result<WorkerSummaryMap, ClientError> {
        self.call(Method::GET, "/workers".into(), &[]).await
    }

    // ---- workers ----

    /// `GET /api/workers`.
    pub async fn api_workers(&self) -> Result<Vec<WorkerDetail>, ClientError> {
        self.call(Method::GET, "/api/workers".into(), &[]).await
    }

    pub async fn worker(&self, id: &WorkerId) -> Result<WorkerDetail, ClientError> {
        self.call(Method::GET, format!("/api/workers/{id}"), &[]).await
    }

    /// The worker's current figures, plus `history` when `history` is given.
    pub async fn worker_metrics(
        &self,
        id: &WorkerId,
        history: Option<&HistoryQuery>,
    ) -> Result<WorkerMetrics, ClientError> {
        let mut query = history.map(HistoryQuery::pairs).unwrap_or_default();
        if history.is_some() && query.is_empty() {
            // Any parameter asks for history; an empty `since` would be refused.
            query.push(("since", "1h".into()));
        }
        self.call(Method::GET, format!("/api/workers/{id}/metrics"), &query).await
    }

    /// A page of the tasks placed on (or once run by) the worker (`status` is not a filter here).
    pub async fn worker_tasks(
        &self,
        id: &WorkerId,
        page: &TaskListQuery,
    ) -> Result<WorkerTaskList, ClientError> {
        self.call(Method::GET, format!("/api/workers/{id}/tasks"), &page.pairs()).await
    }

    // ---- tasks ----

    /// Submits a task; the answer is the accepted (durable) task.
    pub async fn submit_task(&self, task: &SubmitTask) -> Result<Task, ClientError> {
        let request = self.request(Method::POST, "/api/tasks", &[]).json(task);
        self.send("POST /api/tasks".into(), request).await
    }

    /// One page of tasks; its `next` goes into the next query's `after`.
    pub async fn list_tasks(&self, page: &TaskListQuery) -> Result<TaskList, ClientError> {
        self.call(Method::GET, "/api/tasks".into(), &page.pairs()).await
    }

    /// Every task (in `status`, if given), oldest first, walking the pages.
    pub async fn all_tasks(&self, status: Option<TaskStatus>) -> Result<Vec<Task>, ClientError> {
        let mut query = TaskListQuery { status, limit: Some(crate::MAX_PAGE), ..TaskListQuery::default() };
        let mut tasks = Vec::new();
        loop {
            let page = self.list_tasks(&query).await?;
            tasks.extend(page.tasks);
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(tasks),
            }
        }
    }

    pub async fn tasks_summary(&self) -> Result<TaskSummary, ClientError> {
        self.call(Method::GET, "/api/tasks/summary".into(), &[]).await
    }

    pub async fn task(&self, id: &TaskId) -> Result<Task, ClientError> {
        self.call(Method::GET, format!("/api/tasks/{id}"), &[]).await
    }

    /// Cancels a task: the answer is `cancelled` for a pending one, or still `queued` or
    /// `running` while its worker stops it. A task that has ended is refused (409).
    pub async fn cancel_task(&self, id: &TaskId) -> Result<Task, ClientError> {
        self.call(Method::DELETE, format!("/api/tasks/{id}"), &[]).await
    }

    pub async fn task_events(&self, id: &TaskId) -> Result<Vec<TaskEvent>, ClientError> {
        self.call(Method::GET, format!("/api/tasks/{id}/events"), &[]).await
    }

    /// The output so far; `tail` keeps the last N lines.
    pub async fn task_logs(&self, id: &TaskId, tail: Option<usize>) -> Result<TaskLogs, ClientError> {
        let query: Vec<_> = tail.map(|n| ("tail", n.to_string())).into_iter().collect();
        self.call(Method::GET, format!("/api/tasks/{id}/logs"), &query).await
    }

    /// Follows a task's output (from the last `tail` lines, or the start), calling
    /// `on_chunk` with each chunk until the task ends and its output is drained.
    pub async fn follow_logs(
        &self,
        id: &TaskId,
        tail: Option<usize>,
        mut on_chunk: impl FnMut(LogChunk),
    ) -> Result<(), ClientError> {
        let path = format!("/api/tasks/{id}/logs");
        let mut query = vec![("follow", "true".to_string())];
        query.extend(tail.map(|n| ("tail", n.to_string())));
        let what = format!("GET {path}?follow=true");
        // No overall timeout: the stream lasts as long as the task.
        let mut resp =
            self.request(Method::GET, &path, &query).send().await.map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(self.refused(resp).await);
        }
        let mut pending = Vec::new();
        while let Some(bytes) = resp.chunk().await.map_err(|e| self.unreachable(e))? {
            pending.extend_from_slice(&bytes);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                if !line.trim_ascii().is_empty() {
                    on_chunk(parse(&what, &line)?);
                }
            }
        }
        if !pending.trim_ascii().is_empty() {
            on_chunk(parse(&what, &pending)?);
        }
        Ok(())
    }

    // ---- alerts and metrics ----

    /// Firing alerts, then recently resolved ones; `status` keeps one kind.
    pub async fn alerts(&self, status: Option<AlertStatus>) -> Result<AlertList, ClientError> {
        let query: Vec<_> = status.map(|s| ("status", s.as_str().to_string())).into_iter().collect();
        self.call(Method::GET, "/api/alerts".into(), &query).await
    }

    /// `GET /metrics`: the Prometheus text exposition.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let request = self.request(Method::GET, "/metrics", &[]).timeout(REQUEST_TIMEOUT);
        let resp = request.send().await.map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(self.refused(resp).await);
        }
        resp.text().await.map_err(|e| self.unreachable(e))
    }

    // ---- tokens and audit ----

    /// Every token (admin): never their secrets.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>, ClientError> {
        self.call(Method::GET, "/api/tokens".into(), &[]).await
    }

    /// Creates a token (admin); the answer holds it, the only time it is shown.
    pub async fn create_token(&self, name: &str, role: Role) -> Result<CreatedToken, ClientError> {
        let body = CreateToken { name: name.to_string(), role };
        let request = self.request(Method::POST, "/api/tokens", &[]).json(&body);
        self.send("POST /api/tokens".into(), request).await
    }

    /// Revokes a token by id (admin).
    pub async fn revoke_token(&self, id: &str) -> Result<TokenInfo, ClientError> {
        self.call(Method::DELETE, format!("/api/tokens/{id}"), &[]).await
    }

    // ---- cluster trust (admin) ----

    pub async fn join_token(&self) -> Result<JoinTokenInfo, ClientError> {
        self.call(Method::GET, "/api/cluster/join-token".into(), &[]).await
    }

    pub async fn rotate_join_token(&self) -> Result<JoinTokenInfo, ClientError> {
        self.call(Method::POST, "/api/cluster/join-token/rotate".into(), &[]).await
    }

    pub async fn revoke_worker(&self, id: &WorkerId) -> Result<RevokedWorker, ClientError> {
        self.call(Method::POST, format!("/api/workers/{id}/revoke"), &[]).await
    }

    /// A page of the audit trail (admin), newest first; `before` is a previous page's `next`.
    pub async fn audit(&self, before: Option<i64>, limit: Option<usize>) -> Result<AuditList, ClientError> {
        let mut query = Vec::new();
        query.extend(before.map(|b| ("before", b.to_string())));
        query.extend(limit.map(|l| ("limit", l.to_string())));
        self.call(Method::GET, "/api/audit".into(), &query).await
    }

    // ---- plumbing ----

    fn request(&self, method: Method, path: &str, query: &[(&str, String)]) -> RequestBuilder {
        let mut request = self.http.request(method, format!("{}{path}", self.addr));
        if let Some(bearer) = &self.bearer {
            request = request.header(reqwest::header::AUTHORIZATION, bearer.clone());
        }
        if query.is_empty() { request } else { request.query(query) }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let request = self.request(method.clone(), &path, query);
        self.send(format!("{method} {path}"), request).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        what: String,
        request: RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = request.timeout(REQUEST_TIMEOUT).send().await.map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return Err(self.refused(resp).await);
        }
        let body = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        parse(&what, &body)
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable { addr: self.addr.clone(), source }
    }

    /// The error of an answer with an error status: its `{"error": ...}` text, else its
    /// body, else the status' name (axum's own rejections are plain text or empty).
    async fn refused(&self, resp: Response) -> ClientError {
        let status = resp.status();
        let body = match resp.bytes().await {
            Ok(body) => body,
            Err(e) => return self.unreachable(e),
        };
        let message = match serde_json::from_slice::<ApiErrorBody>(&body) {
            Ok(ApiErrorBody { error }) => error,
            Err(_) if body.trim_ascii().is_empty() => {
                status.canonical_reason().unwrap_or_default().to_string()
            }
            Err(_) => String::from_utf8_lossy(body.trim_ascii()).into_owned(),
        };
        ClientError::Refused { status: status.as_u16(), message }
    }
}

/// Parses an answer, naming the JSON path where it does not fit `T`.
fn parse<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ClientError> {
    let bad =
        |path: String, message: String| ClientError::BadAnswer { request: what.to_string(), path, message };
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| bad(e.path().to_string(), e.into_inner().to_string()))?;
    de.end().map_err(|e| bad(".".into(), e.to_string()))?;
    Ok(value)
}
