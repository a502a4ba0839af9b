//! The CLI and the console render the master's answers from typed responses: an answer
//! that lacks a field is an error naming that field, never a figure printed as 0.

use std::process::Command;

use axum::routing::get;
use axum::{Json, Router};
use cloudai::console::{Console, Outcome, execute};
use cloudai_api::ApiClient;
use serde_json::{Value, json};

/// One worker as `GET /api/workers` lists it, with `cut` removed from its telemetry.
fn workers_answer(cut: Option<&str>) -> Value {
    let mut telemetry = json!({
        "worker_id": "w-1", "cpu_usage": 42.5, "memory_usage": 20.0, "gpu_usage": 0.0,
        "memory_used_mb": 100, "memory_total_mb": 1000, "gpus": [], "running_tasks": [],
        "last_update": 1_790_000_000, "sample_time_ms": 1_790_000_000_000_i64, "is_active": true,
        "heartbeats_received": 3, "heartbeats_dropped": 0
    });
    if let (Some(field), Some(fields)) = (cut, telemetry.as_object_mut()) {
        fields.remove(field);
    }
    json!([{
        "worker_id": "w-1", "hostname": "host-1", "cpu_cores": 2.0, "memory_mb": 1000, "gpus": [],
        "labels": {}, "version": "0.1.0", "drivers": ["process"], "registered_at": 1_790_000_000,
        "is_active": true, "telemetry": telemetry
    }])
}

/// A stand-in master on loopback answering `GET /api/workers` with `answer`.
async fn stand_in(answer: Value) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = Router::new().route("/api/workers", get(move || async move { Json(answer) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// `cloudai worker ls` against `api`: (exit code, stdout, stderr).
async fn worker_ls(api: &str) -> (i32, String, String) {
    let api = api.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_cloudai"))
            .args(["worker", "ls"])
            .env("CLOUDAI_ADDR", &api)
            .env_remove("RUST_LOG")
            .output()
            .expect("run cloudai")
    })
    .await
    .expect("cli thread");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code().unwrap_or(-1), text(&out.stdout), text(&out.stderr))
}

/// The console's `workers` against `api`.
async fn console_workers(api: &str) -> String {
    let console = Console::new(ApiClient::new(api), tokio::runtime::Handle::current());
    tokio::task::spawn_blocking(move || match execute(&console, "workers") {
        Outcome::Print(text) => text,
        Outcome::Quit => panic!("workers does not quit"),
    })
    .await
    .expect("console thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_field_is_an_error_naming_it_not_a_zero() {
    // The whole answer renders: the stand-in speaks the master's shape.
    let full = stand_in(workers_answer(None)).await;
    let (code, out, err) = worker_ls(&full).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("w-1") && out.contains("42.5"), "{out}");
    let table = console_workers(&full).await;
    assert!(table.contains("w-1") && table.contains("42.5") && table.contains("1 workers"), "{table}");

    // Without `cpu_usage`, both refuse the answer and say which field is missing.
    let cut = stand_in(workers_answer(Some("cpu_usage"))).await;
    let (code, out, err) = worker_ls(&cut).await;
    assert_ne!(code, 0, "exit status with a missing field; stdout: {out}");
    assert!(err.contains("cpu_usage") && err.contains("telemetry"), "{err}");
    assert!(out.is_empty(), "nothing rendered: {out}");
    let text = console_workers(&cut).await;
    assert!(text.starts_with("error:") && text.contains("cpu_usage"), "{text}");
    assert!(!text.contains("w-1"), "no table: {text}");
}
