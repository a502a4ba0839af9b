//! The typed client against a stand-in master on loopback: answers parse into DTOs, a
//! missing field is an error naming it, refusals carry the server's message, and a follow
//! stream arrives as typed chunks however the bytes are split.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use cloudai_api::*;
use cloudai_domain::{TaskId, TaskStatus, WorkerId};
use serde_json::{Value, json};
use tokio::sync::Mutex;

/// Query strings the stand-in received, in order.
type Seen = Arc<Mutex<Vec<String>>>;

fn task_json(id: &str, status: &str) -> Value {
    json!({
        "task_id": id, "status": status, "command": ["true"], "env": {}, "cpu_required": 0.5,
        "memory_required": 16, "gpu_required": 0, "priority": 0, "driver": "process", "max_retries": 1,
        "gpu_indices": [], "attempt": 0, "created_at_ms": 1, "updated_at_ms": 1
    })
}

fn telemetry_json(id: &str) -> Value {
    json!({
        "worker_id": id, "cpu_usage": 1.5, "memory_usage": 20.0, "gpu_usage": 0.0, "memory_used_mb": 100,
        "memory_total_mb": 1000, "gpus": [], "running_tasks": [], "last_update": 5, "sample_time_ms": 4900,
        "is_active": true, "heartbeats_received": 1, "heartbeats_dropped": 0
    })
}

async fn submit(body: Bytes) -> Response {
    match cloudai_domain::TaskSpec::from_json(&body) {
        Ok(spec) => {
            let task = cloudai_domain::Task::new(TaskId::generate(), spec, 1_790_000_000_000);
            (StatusCode::CREATED, Json(task)).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, Json(ApiErrorBody::new(e.to_string()))).into_response(),
    }
}

async fn list(State(seen): State<Seen>, RawQuery(q): RawQuery) -> Json<Value> {
    seen.lock().await.push(q.unwrap_or_default());
    Json(json!({"tasks": [task_json("t1", "running")], "next": null}))
}

async fn one(Path(id): Path<String>) -> Response {
    match id.as_str() {
        "t1" => Json(task_json("t1", "running")).into_response(),
        // A renamed field: `state` where `status` belongs.
        "renamed" => Json(json!({"task_id": "renamed", "state": "running"})).into_response(),
        _ => {
            (StatusCode::NOT_FOUND, Json(ApiErrorBody::new(format!("task {id:?} not found")))).into_response()
        }
    }
}

async fn cancel() -> Response {
    (StatusCode::CONFLICT, Json(ApiErrorBody::new("task t1 has already completed"))).into_response()
}

/// NDJSON split mid-line and across lines, as a network may deliver it.
async fn logs(RawQuery(q): RawQuery) -> Response {
    if !q.unwrap_or_default().contains("follow=true") {
        return (StatusCode::BAD_REQUEST, "plain text rejection").into_response();
    }
    let lines = concat!(
        r#"{"seq":1,"stream":"stdout","data":"one\n","time_ms":1}"#,
        "\n",
        r#"{"seq":2,"stream":"stderr","data":"two\n","time_ms":2}"#,
        "\n",
        r#"{"seq":3,"stream":"stdout","data":"three\n","time_ms":3}"#,
        "\n"
    );
    let parts: Vec<Result<Bytes, std::io::Error>> =
        [&lines[..10], &lines[10..70], &lines[70..]].iter().map(|p| Ok(Bytes::from(p.to_string()))).collect();
    Body::from_stream(futures::stream::iter(parts)).into_response()
}

async fn start() -> (ApiClient, Seen) {
    let seen = Seen::default();
    let app = Router::new()
        .route("/health", get(|| async { Json(json!({"status": "healthy", "time": 1_790_000_000})) }))
        .route("/telemetry/{id}", get(|Path(id): Path<String>| async move { Json(telemetry_json(&id)) }))
        .route(
            "/api/workers",
            get(|| async {
                let mut telemetry = telemetry_json("w1");
                telemetry.as_object_mut().map(|t| t.remove("cpu_usage"));
                Json(json!([{
                    "worker_id": "w1", "hostname": "h", "cpu_cores": 2.0, "memory_mb": 1000, "gpus": [],
                    "labels": {}, "version": "0.1.0", "drivers": ["process"], "registered_at": 1,
                    "is_active": true, "telemetry": telemetry
                }]))
            }),
        )
        .route("/api/tasks", get(list).post(submit))
        .route("/api/tasks/{id}", get(one).delete(cancel))
        .route("/api/tasks/{id}/logs", get(logs))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (ApiClient::new(&format!("http://{addr}/")), seen)
}

#[tokio::test]
async fn answers_parse_into_typed_values() {
    let (client, seen) = start().await;
    assert_eq!(client.health().await.expect("health").status, "healthy");
    let w = WorkerId::parse("w9").expect("id");
    assert_eq!(client.worker_telemetry(&w).await.expect("telemetry").worker_id, w);

    let page =
        TaskListQuery { status: Some(TaskStatus::Running), limit: Some(5), ..TaskListQuery::default() };
    let tasks = client.list_tasks(&page).await.expect("list");
    assert_eq!((tasks.tasks[0].status, tasks.next), (TaskStatus::Running, None));
    client.list_tasks(&TaskListQuery::default()).await.expect("list");
    let newest = TaskListQuery { newest_first: true, brief: true, ..TaskListQuery::default() };
    client.list_tasks(&newest).await.expect("list");
    assert_eq!(*seen.lock().await, ["status=running&limit=5", "", "order=newest&brief=true"]);

    let mut body = SubmitTask::process(vec!["true".into()], 0.5, 16);
    body.priority = Some(3);
    let task = client.submit_task(&body).await.expect("submit");
    assert_eq!((task.status, task.spec.priority, task.spec.max_retries), (TaskStatus::Pending, 3, 1));
}

#[tokio::test]
async fn a_missing_or_renamed_field_is_an_error_naming_it() {
    let (client, _) = start().await;
    let err = client.api_workers().await.expect_err("cpu_usage is missing");
    match &err {
        ClientError::BadAnswer { request, path, message } => {
            assert_eq!(request, "GET /api/workers");
            assert_eq!(path, "[0].telemetry");
            assert!(message.contains("`cpu_usage`"), "{message}");
        }
        other => panic!("expected BadAnswer, got {other:?}"),
    }
    assert!(err.to_string().contains("[0].telemetry") && err.to_string().contains("cpu_usage"), "{err}");

    let err = client.task(&TaskId::parse("renamed").expect("id")).await.expect_err("status is missing");
    assert!(matches!(&err, ClientError::BadAnswer { message, .. } if message.contains("`status`")), "{err}");
}

#[tokio::test]
async fn refusals_carry_the_message_and_the_code() {
    let (client, _) = start().await;
    let err = client.task(&TaskId::parse("nope").expect("id")).await.expect_err("404");
    assert!(
        matches!(&err, ClientError::Refused { status: 404, message } if message == "task \"nope\" not found")
    );
    assert_eq!(err.code(), Some(ErrorCode::NotFound));
    let err = client.cancel_task(&TaskId::parse("t1").expect("id")).await.expect_err("409");
    assert_eq!(err.code(), Some(ErrorCode::Conflict));
    assert!(err.to_string().contains("already completed"), "{err}");

    let bad = SubmitTask::process(vec!["true".into()], 0.0, 16);
    let err = client.submit_task(&bad).await.expect_err("400");
    assert!(
        matches!(&err, ClientError::Refused { status: 400, message } if message.contains("cpu_required"))
    );

    // Not our error shape (axum's own rejections): the text, or the status' name.
    let err = client.task_logs(&TaskId::parse("t1").expect("id"), None).await.expect_err("400");
    assert!(
        matches!(&err, ClientError::Refused { status: 400, message } if message == "plain text rejection")
    );
    let err = client.alerts(None).await.expect_err("no such route here");
    assert!(matches!(&err, ClientError::Refused { status: 404, message } if message == "Not Found"), "{err}");
}

#[tokio::test]
async fn follow_delivers_typed_chunks_in_order() {
    let (client, _) = start().await;
    let mut chunks = Vec::new();
    client.follow_logs(&TaskId::parse("t1").expect("id"), None, |c| chunks.push(c)).await.expect("follow");
    let seqs: Vec<u64> = chunks.iter().map(|c| c.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(chunks[1].stream, LogStream::Stderr);
    let text: String = chunks.iter().map(|c| c.data.as_str()).collect();
    assert_eq!(text, "one\ntwo\nthree\n");
}

#[tokio::test]
async fn an_unreachable_master_is_named_with_the_hint() {
    // A port that was just free: nothing listens there.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let err = ApiClient::new(&addr).health().await.expect_err("nothing listens");
    assert!(matches!(&err, ClientError::Unreachable { addr: a, .. } if *a == addr), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&addr) && text.contains("CLOUDAI_ADDR") && text.contains("--addr"), "{text}");
    assert!(std::error::Error::source(&err).is_some(), "the cause is kept as the source");
}
