//! The OpenAPI document of the master's HTTP API, built from this crate's types alone.
//!
//! The handlers live in the master; the functions below only carry `#[utoipa::path]`, one
//! per route, so the document is written once, next to the types it refers to. [`ROUTES`]
//! lists the same routes, for a test that the router serves nothing undocumented.

#![expect(dead_code, reason = "the path functions only carry their #[utoipa::path] documentation")]

use utoipa::OpenApi;

use crate::alerts::{Alert, AlertList, AlertStatus, Severity};
use crate::auth::{AuditEntry, AuditList, CreateToken, CreatedToken, Role, TokenInfo};
use crate::cluster::{JoinTokenInfo, RevokedWorker};
use crate::error::ApiErrorBody;
use crate::history::{History, Point};
use crate::logs::{LogChunk, LogStream, TaskLogs};
use crate::tasks::{SubmitTask, Task, TaskEvent, TaskList, TaskSpec, TaskSummary};
use crate::telemetry::{GpuStats, Health, RunningTask, WorkerSummary, WorkerTelemetry};
use crate::workers::{
    GpuInfo, TaskUsage, WorkerDetail, WorkerInfo, WorkerMetrics, WorkerTask, WorkerTaskList,
};

/// Every documented route: (method, axum-style path template).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/telemetry"),
    ("GET", "/telemetry/{worker_id}"),
    ("GET", "/workers"),
    ("GET", "/api/workers"),
    ("GET", "/api/workers/{worker_id}"),
    ("GET", "/api/workers/{worker_id}/metrics"),
    ("GET", "/api/workers/{worker_id}/tasks"),
    ("GET", "/api/tasks"),
    ("POST", "/api/tasks"),
    ("GET", "/api/tasks/summary"),
    ("GET", "/api/tasks/{id}"),
    ("DELETE", "/api/tasks/{id}"),
    ("GET", "/api/tasks/{id}/events"),
    ("GET", "/api/tasks/{id}/logs"),
    ("GET", "/api/alerts"),
    ("GET", "/api/tokens"),
    ("POST", "/api/tokens"),
    ("DELETE", "/api/tokens/{id}"),
    ("GET", "/api/audit"),
    ("GET", "/api/cluster/join-token"),
    ("POST", "/api/cluster/join-token/rotate"),
    ("POST", "/api/workers/{worker_id}/revoke"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
];

/// The document, as `GET /openapi.json` serves it.
pub fn openapi() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "CloudAI HTTP API",
        description = "The master's HTTP API: telemetry, workers, tasks, alerts, tokens, audit. JSON \
            with snake_case fields; every error is `{\"error\": \"...\"}` with a 4xx or 5xx status. \
            Unless the master runs with --insecure, every endpoint but /health and /openapi.json \
            needs `Authorization: Bearer <token>` (401 without a valid one, 403 without the role; \
            failed attempts are limited per client address, then 429)."
    ),
    modifiers(&BearerAuth, &CommonResponses, &EmptyMeansDefault, &DriverNeeds),
    security(("bearer" = [])),
    paths(
        health, telemetry, worker_telemetry, workers, api_workers, worker, worker_metrics,
        worker_tasks, list_tasks, submit_task, tasks_summary, task, cancel_task, task_events,
        task_logs, alerts, list_tokens, create_token, revoke_token, audit, join_token, rotate_join_token,
        revoke_worker, metrics, openapi_json
    ),
    components(schemas(
        ApiErrorBody, Health, WorkerTelemetry, GpuStats, RunningTask, WorkerSummary, WorkerInfo,
        GpuInfo, WorkerDetail, WorkerMetrics, History, Point, WorkerTask, WorkerTaskList, TaskUsage, SubmitTask,
        TaskSpec, Task, TaskList, TaskEvent, TaskSummary, TaskLogs, LogChunk, LogStream, AlertList, Alert,
        AlertStatus, Severity, Role, CreateToken, CreatedToken, TokenInfo, AuditEntry, AuditList,
        JoinTokenInfo, RevokedWorker, crate::schema::OrderSchema
    )),
    tags(
        (name = "telemetry", description = "The seeds' telemetry API"),
        (name = "workers", description = "Registered workers and their figures"),
        (name = "tasks", description = "Submit, inspect, follow and cancel tasks"),
        (name = "alerts", description = "Alerts from the rules the master evaluates"),
        (name = "auth", description = "API tokens with roles, and the audit trail (admin)"),
        (name = "cluster", description = "Workers' trust: the join token, revocation (admin)"),
        (name = "meta", description = "Prometheus metrics and this document"),
    )
)]
struct ApiDoc;

/// The `bearer` security scheme every operation refers to.
struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some("An API token, `cai_<id>_<secret>` (`cloudai token create`)"))
            .build();
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// What any operation may answer before its handler runs, added to each so that every status
/// the master sends is documented: 401 and 429 from authentication (where a token is needed),
/// 403 from the role check and, on a loopback master, from the `Host`/`Origin` check.
struct CommonResponses;

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::SecurityRequirement;
        for item in openapi.paths.paths.values_mut() {
            for op in [&mut item.get, &mut item.post, &mut item.delete].into_iter().flatten() {
                // Without its own `security`, an operation takes the document's: a token.
                let secured = op
                    .security
                    .as_ref()
                    .is_none_or(|reqs| reqs.iter().any(|r| *r != SecurityRequirement::default()));
                let mut add = |status: &str, description: &str| {
                    if !op.responses.responses.contains_key(status) {
                        op.responses.responses.insert(status.to_string(), error_response(description));
                    }
                };
                if secured {
                    add("401", "No valid token: none sent, not one this master issued, or revoked");
                    add(
                        "403",
                        "The token has not the role this needs (named in the message); or, on a master on a loopback address, a `Host` or `Origin` that is not this machine's",
                    );
                    add(
                        "429",
                        "Too many failed token attempts from this address (MAX_FAILED_TOKEN_ATTEMPTS a minute): refused until the minute ends",
                    );
                } else {
                    add(
                        "403",
                        "On a master on a loopback address: a `Host` or `Origin` that is not this machine's (protection against DNS rebinding)",
                    );
                }
            }
        }
    }
}

/// A response with the API's error body.
fn error_response(description: &str) -> utoipa::openapi::RefOr<utoipa::openapi::Response> {
    use utoipa::openapi::{Content, Ref, ResponseBuilder};
    let body = Content::new(Some(Ref::from_schema_name("ApiErrorBody")));
    ResponseBuilder::new().description(description).content("application/json", body).into()
}

/// Query parameters whose empty value (`?status=`) means the same as leaving them out.
const EMPTY_MEANS_DEFAULT: &[(&str, &[&str])] = &[
    ("/api/tasks", &["status", "after", "limit", "order", "brief"]),
    ("/api/workers/{worker_id}/tasks", &["after", "limit", "order", "brief"]),
    ("/api/audit", &["before", "limit"]),
    ("/api/alerts", &["status"]),
];

/// Documents [`EMPTY_MEANS_DEFAULT`]: those parameters' schemas also admit `""`.
struct EmptyMeansDefault;

impl utoipa::Modify for EmptyMeansDefault {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Type};
        use utoipa::openapi::{RefOr, path::ParameterIn};
        for (path, names) in EMPTY_MEANS_DEFAULT {
            let Some(op) = openapi.paths.paths.get_mut(*path).and_then(|item| item.get.as_mut()) else {
                continue;
            };
            for param in op.parameters.iter_mut().flatten() {
                let RefOr::T(param) = param else { continue };
                if param.parameter_in != ParameterIn::Query || !names.contains(&param.name.as_str()) {
                    continue;
                }
                let Some(schema) = param.schema.take() else { continue };
                let empty = ObjectBuilder::new().schema_type(Type::String).enum_values(Some([""]));
                param.schema = Some(AnyOfBuilder::new().item(schema).item(empty).into());
            }
        }
    }
}

/// A submission's driver decides what else it needs: `command` (at least one argument) for
/// `process`; a `docker_image` that is not blank for `docker`, the default. Added to the
/// derived `SubmitTask` as `allOf: [SubmitTask, oneOf: [process, docker]]`.
struct DriverNeeds;

impl utoipa::Modify for DriverNeeds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::schema::{
            AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, SchemaType, Type,
        };
        let Some(schemas) = openapi.components.as_mut().map(|c| &mut c.schemas) else { return };
        let Some(submit) = schemas.remove("SubmitTask") else { return };
        let driver = |values: Vec<serde_json::Value>| {
            ObjectBuilder::new().schema_type(SchemaType::AnyValue).enum_values(Some(values))
        };
        let process = ObjectBuilder::new()
            .title(Some("process"))
            .property("driver", driver(vec!["process".into()]))
            .property(
                "command",
                ArrayBuilder::new().items(ObjectBuilder::new().schema_type(Type::String)).min_items(Some(1)),
            )
            .required("driver")
            .required("command");
        let docker = ObjectBuilder::new()
            .title(Some("docker"))
            .property("driver", driver(vec!["docker".into(), serde_json::Value::Null]))
            .property("docker_image", ObjectBuilder::new().schema_type(Type::String).pattern(Some("\\S")))
            .required("docker_image");
        let needs = OneOfBuilder::new().item(process).item(docker);
        schemas.insert("SubmitTask".to_string(), AllOfBuilder::new().item(submit).item(needs).into());
    }
}

#[utoipa::path(get, path = "/health", tag = "telemetry", security(()),
    responses((status = 200, description = "The master is up", body = Health)))]
fn health() {}

#[utoipa::path(get, path = "/telemetry", tag = "telemetry",
    responses((status = 200, description = "Worker id → telemetry", body = BTreeMap<String, WorkerTelemetry>)))]
fn telemetry() {}

#[utoipa::path(get, path = "/telemetry/{worker_id}", tag = "telemetry",
    params(("worker_id" = String, Path, description = "Worker id")),
    responses(
        (status = 200, description = "The worker's latest telemetry", body = WorkerTelemetry),
        (status = 404, description = "Unknown worker", body = ApiErrorBody),
    ))]
fn worker_telemetry() {}

#[utoipa::path(get, path = "/workers", tag = "telemetry",
    responses((status = 200, description = "Worker id → summary", body = BTreeMap<String, WorkerSummary>)))]
fn workers() {}

#[utoipa::path(get, path = "/api/workers", tag = "workers",
    responses((status = 200, description = "Every registered worker", body = Vec<WorkerDetail>)))]
fn api_workers() {}

#[utoipa::path(get, path = "/api/workers/{worker_id}", tag = "workers",
    params(("worker_id" = String, Path, description = "Worker id")),
    responses(
        (status = 200, description = "The worker", body = WorkerDetail),
        (status = 404, description = "Unknown worker", body = ApiErrorBody),
    ))]
fn worker() {}

#[utoipa::path(get, path = "/api/workers/{worker_id}/metrics", tag = "workers",
    params(
        ("worker_id" = String, Path, description = "Worker id"),
        ("since" = Option<String>, Query,
            description = "Start of the history: a duration ago (`15m`), unix seconds or RFC 3339; default 1h ago"),
        ("until" = Option<String>, Query, description = "End of the history, same forms; default now"),
        ("step" = Option<String>, Query,
            description = "Aggregate per step: a duration (`1m`) or seconds; absent for the points as stored"),
        ("fields" = Option<String>, Query,
            description = "Comma-separated field names (`cpu_usage,gpu0_utilization`); default every field"),
    ),
    responses(
        (status = 200, description = "Current figures; `history` when any query parameter is given",
            body = WorkerMetrics),
        (status = 400, description = "Bad time, step or field (named in the message)", body = ApiErrorBody),
        (status = 404, description = "Unknown worker", body = ApiErrorBody),
    ))]
fn worker_metrics() {}

#[utoipa::path(get, path = "/api/workers/{worker_id}/tasks", tag = "workers",
    params(
        ("worker_id" = String, Path, description = "Worker id"),
        ("after" = Option<String>, Query, pattern = "^[A-Za-z0-9._:-]{1,128}$", description = "A previous page's `next` (a task id)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size: default 100, at most 1000"),
        ("order" = Option<crate::schema::OrderSchema>, Query, description = "`oldest` (default) or `newest` first"),
        ("brief" = Option<bool>, Query, description = "Leave out `env` and `command`"),
    ),
    responses(
        (status = 200, description = "A page of the tasks placed on the worker", body = WorkerTaskList),
        (status = 400, description = "Bad limit, order or cursor", body = ApiErrorBody),
        (status = 404, description = "Unknown worker without tasks", body = ApiErrorBody),
        (status = 503, description = "Store unavailable or shutting down", body = ApiErrorBody),
    ))]
fn worker_tasks() {}

#[utoipa::path(get, path = "/api/tasks", tag = "tasks",
    params(
        ("status" = Option<crate::schema::TaskStatusSchema>, Query, description = "Only tasks in this state"),
        ("after" = Option<String>, Query, pattern = "^[A-Za-z0-9._:-]{1,128}$", description = "A previous page's `next` (a task id)"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size: default 100, at most 1000 (a page also ends at about 8 MiB)"),
        ("order" = Option<crate::schema::OrderSchema>, Query, description = "`oldest` (default) or `newest` first"),
        ("brief" = Option<bool>, Query, description = "Leave out `env` and `command`"),
    ),
    responses(
        (status = 200, description = "A page of tasks; `next` continues it", body = TaskList),
        (status = 400, description = "Unknown status, bad limit, order or cursor", body = ApiErrorBody),
        (status = 503, description = "Store unavailable or shutting down", body = ApiErrorBody),
    ))]
fn list_tasks() {}

#[utoipa::path(post, path = "/api/tasks", tag = "tasks",
    request_body(content = SubmitTask, description = "The task to run (at most 1 MiB)"),
    responses(
        (status = 201, description = "Accepted and durable", body = Task),
        (status = 400, description = "Bad field (named in the message), a key given twice, or more memory than the largest registered worker has", body = ApiErrorBody),
        (status = 403, description = "The token's role cannot submit (reader)", body = ApiErrorBody),
        (status = 413, description = "Body over 1 MiB", body = ApiErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ApiErrorBody),
        (status = 429, description = "The submitter has as many pending tasks as allowed (MAX_PENDING_PER_SUBMITTER)", body = ApiErrorBody),
        (status = 507, description = "The master's disk is full: not accepted; retry once there is room", body = ApiErrorBody),
        (status = 503, description = "Store unavailable or shutting down", body = ApiErrorBody),
    ))]
fn submit_task() {}

#[utoipa::path(get, path = "/api/tasks/summary", tag = "tasks",
    responses(
        (status = 200, description = "Tasks per status", body = TaskSummary),
        (status = 503, description = "Store unavailable or shutting down", body = ApiErrorBody),
    ))]
fn tasks_summary() {}

#[utoipa::path(get, path = "/api/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "The task", body = Task),
        (status = 404, description = "Unknown task", body = ApiErrorBody),
    ))]
fn task() {}

#[utoipa::path(delete, path = "/api/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "Cancelled (it was pending)", body = Task),
        (status = 202, description = "Being stopped (SIGTERM, then SIGKILL after the grace period)", body = Task),
        (status = 403, description = "A reader, or a submitter cancelling another's task", body = ApiErrorBody),
        (status = 404, description = "Unknown task", body = ApiErrorBody),
        (status = 409, description = "The task has already ended", body = ApiErrorBody),
        (status = 503, description = "Store unavailable or shutting down: not cancelled; retry", body = ApiErrorBody),
        (status = 507, description = "The master's disk is full: not cancelled; retry once there is room", body = ApiErrorBody),
    ))]
fn cancel_task() {}

#[utoipa::path(get, path = "/api/tasks/{id}/events", tag = "tasks",
    params(("id" = String, Path, description = "Task id")),
    responses(
        (status = 200, description = "Every state transition, oldest first", body = Vec<TaskEvent>),
        (status = 404, description = "Unknown task", body = ApiErrorBody),
    ))]
fn task_events() {}

#[utoipa::path(get, path = "/api/tasks/{id}/logs", tag = "tasks",
    params(
        ("id" = String, Path, description = "Task id"),
        ("tail" = Option<usize>, Query, minimum = 1, description = "Only the last N lines (N ≥ 1)"),
        ("follow" = Option<bool>, Query,
            description = "Stream NDJSON, one `LogChunk` per line, until the task ends"),
    ),
    responses(
        (status = 200, description = "The output so far, or (follow) a stream of chunks", content(
            (TaskLogs = "application/json"),
            (LogChunk = "application/x-ndjson"),
        )),
        (status = 400, description = "Bad tail", body = ApiErrorBody),
        (status = 404, description = "Unknown task", body = ApiErrorBody),
    ))]
fn task_logs() {}

#[utoipa::path(get, path = "/api/alerts", tag = "alerts",
    params(("status" = Option<AlertStatus>, Query, description = "Only firing or only resolved alerts")),
    responses(
        (status = 200, description = "Firing alerts, then those resolved recently; newest first in each",
            body = AlertList),
        (status = 400, description = "Unknown status", body = ApiErrorBody),
    ))]
fn alerts() {}

#[utoipa::path(get, path = "/metrics", tag = "meta", security(("bearer" = []), ()),
    responses(
        (status = 200, description = "Prometheus text exposition; OpenMetrics when the Accept header asks for it",
            content(
                (String = "text/plain; version=0.0.4; charset=utf-8"),
                (String = "application/openmetrics-text; version=1.0.0; charset=utf-8"),
            )),
        (status = 401, description = "No valid token (unless the master runs with --metrics-public)", body = ApiErrorBody),
        (status = 500, description = "Encoding the metrics failed", body = ApiErrorBody),
        (status = 503, description = "Store unavailable or shutting down", body = ApiErrorBody),
    ))]
fn metrics() {}

#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(()),
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
fn openapi_json() {}

#[utoipa::path(get, path = "/api/tokens", tag = "auth",
    responses(
        (status = 200, description = "Every token, revoked ones included, oldest first (never a secret)",
            body = Vec<TokenInfo>),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "Not an admin token", body = ApiErrorBody),
    ))]
fn list_tokens() {}

#[utoipa::path(post, path = "/api/tokens", tag = "auth",
    request_body(content = CreateToken, description = "The new token's name and role"),
    responses(
        (status = 201, description = "Created and durable; `token` is shown this once", body = CreatedToken),
        (status = 400, description = "Bad name or role (named in the message)", body = ApiErrorBody),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "Not an admin token", body = ApiErrorBody),
        (status = 415, description = "Content-Type is not application/json", body = ApiErrorBody),
        (status = 503, description = "Store unavailable or shutting down: not created", body = ApiErrorBody),
        (status = 507, description = "The master's disk is full: not created; retry once there is room", body = ApiErrorBody),
    ))]
fn create_token() {}

#[utoipa::path(delete, path = "/api/tokens/{id}", tag = "auth",
    params(("id" = String, Path, description = "Token id (the part after `cai_`)")),
    responses(
        (status = 200, description = "Revoked (durable): requests with it now get 401", body = TokenInfo),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "Not an admin token", body = ApiErrorBody),
        (status = 404, description = "Unknown token", body = ApiErrorBody),
        (status = 409, description = "The last valid admin token cannot be revoked", body = ApiErrorBody),
        (status = 503, description = "Store unavailable or shutting down: not revoked", body = ApiErrorBody),
        (status = 507, description = "The master's disk is full: not revoked; retry once there is room", body = ApiErrorBody),
    ))]
fn revoke_token() {}

#[utoipa::path(get, path = "/api/cluster/join-token", tag = "cluster",
    responses(
        (status = 200, description = "The current join token", body = JoinTokenInfo),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "Not an admin token", body = ApiErrorBody),
        (status = 409, description = "The master runs without TLS (--insecure): no join token", body = ApiErrorBody),
    ))]
fn join_token() {}

#[utoipa::path(post, path = "/api/cluster/join-token/rotate", tag = "cluster",
    responses(
        (status = 200, description = "A new join token (durable); the old one admits no one", body = JoinTokenInfo),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "Not an admin token", body = ApiErrorBody),
        (status = 409, description = "The master runs without TLS (--insecure): no join token", body = ApiErrorBody),
        (status = 503, description = "Cannot write the new token: not rotated", body = ApiErrorBody),
    ))]
fn rotate_join_token() {}

#[utoipa::path(post, path = "/api/workers/{worker_id}/revoke", tag = "cluster",
    params(("worker_id" = String, Path, pattern = "^[A-Za-z0-9._:-]{1,128}$",
        description = "Worker id: 1-128 of letters, digits, `-`, `_`, `.` and `:`")),
    responses(
        (status = 200, description = "Revoked (durable): its certificates are refused from now on", body = RevokedWorker),
        (status = 400, description = "Not a valid worker id", body = ApiErrorBody),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "Not an admin token", body = ApiErrorBody),
        (status = 409, description = "The master runs without TLS (--insecure): nothing to revoke", body = ApiErrorBody),
        (status = 503, description = "Cannot write the revocation: not revoked", body = ApiErrorBody),
    ))]
fn revoke_worker() {}

#[utoipa::path(get, path = "/api/audit", tag = "auth",
    params(
        ("before" = Option<i64>, Query, minimum = 1, description = "A previous page's `next`: only older entries"),
        ("limit" = Option<usize>, Query, minimum = 1, maximum = 1000, description = "Page size: default 100, at most 1000"),
    ),
    responses(
        (status = 200, description = "Audited calls, newest first", body = AuditList),
        (status = 400, description = "Bad limit or cursor", body = ApiErrorBody),
        (status = 401, description = "No valid token", body = ApiErrorBody),
        (status = 403, description = "Not an admin token", body = ApiErrorBody),
        (status = 503, description = "Store unavailable or shutting down", body = ApiErrorBody),
    ))]
fn audit() {}
