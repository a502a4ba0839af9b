//! Every error answer is the documented `{"error": "..."}` with an accurate message, also
//! where axum or tower-http answer before our handlers: 405, bad query strings and paths,
//! the body limit, the request timeout; and history times out of range say so.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Status, `Allow` header, and the error message, checking the answer is our JSON shape.
async fn json_error(req: reqwest::RequestBuilder) -> (u16, Option<String>, String) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let (content_type, allow) = (header("content-type"), header("allow"));
    let text = resp.text().await.expect("body");
    assert_eq!(content_type.as_deref(), Some("application/json"), "{status}: {text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    let message = body["error"].as_str().unwrap_or_else(|| panic!("no error string: {text}")).to_string();
    assert!(!message.is_empty(), "{status}: empty message");
    (status, allow, message)
}

#[tokio::test]
async fn a_method_the_path_does_not_serve_gets_405_naming_the_allowed_ones() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    let client = http_client();

    let (status, allow, message) = json_error(client.put(format!("{api}/api/tasks"))).await;
    assert_eq!(status, 405);
    let allow = allow.expect("the Allow header is kept");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert!(message.contains("PUT") && message.contains("GET") && message.contains("POST"), "{message}");

    let (status, _, message) = json_error(client.delete(format!("{api}/health"))).await;
    assert_eq!(status, 405);
    assert!(message.contains("allowed: GET"), "{message}");
    master.shutdown().await;
}

#[tokio::test]
async fn query_strings_and_paths_that_do_not_decode_get_400_json() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    let client = http_client();

    let (status, _, message) = json_error(client.get(format!("{api}/api/tasks/t1/logs?tail=ten"))).await;
    assert_eq!(status, 400);
    assert!(message.starts_with("query: ") && message.contains("tail"), "{message}");
    let (status, _, message) = json_error(client.get(format!("{api}/api/tasks/t1/logs?follow=maybe"))).await;
    assert_eq!(status, 400);
    assert!(message.contains("follow"), "{message}");
    let (status, _, message) = json_error(client.get(format!("{api}/api/tasks?limit=-1"))).await;
    assert_eq!(status, 400);
    assert!(message.contains("limit"), "{message}");

    // A path segment that is not UTF-8 once decoded.
    let (status, _, message) = json_error(client.get(format!("{api}/api/tasks/%FF%FE"))).await;
    assert_eq!(status, 400);
    assert!(message.starts_with("path: "), "{message}");
    // A control character decodes fine but cannot be in an id: not found, and why.
    let (status, _, message) = json_error(client.get(format!("{api}/api/tasks/a%00b"))).await;
    assert_eq!(status, 404);
    assert!(message.contains("not found") && message.contains("task_id: id may contain only"), "{message}");
    let (status, _, message) = json_error(client.get(format!("{api}/api/workers/w%07"))).await;
    assert_eq!(status, 404);
    assert!(message.contains("worker_id: id may contain only"), "{message}");
    master.shutdown().await;
}

#[tokio::test]
async fn a_body_over_the_limit_gets_413_naming_the_limit() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    let body = format!(
        r#"{{"driver":"process","command":["{}"],"cpu_required":1,"memory_required":1}}"#,
        "a".repeat(2 << 20)
    );
    let req =
        http_client().post(format!("{api}/api/tasks")).header("content-type", "application/json").body(body);
    let (status, _, message) = json_error(req).await;
    assert_eq!(status, 413);
    assert_eq!(
        message,
        format!("body: larger than the limit of {} bytes (1 MiB)", cloudai_master::MAX_BODY_BYTES)
    );
    master.shutdown().await;
}

#[tokio::test]
async fn a_body_sent_slower_than_the_request_timeout_gets_a_json_408() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let mut stream = tokio::net::TcpStream::connect(master.http_addr).await.expect("connect");
    // The head at once (so the header timeout is not what fires), then a body that stalls.
    let head = "POST /api/tasks HTTP/1.1\r\nHost: localhost\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"driver\":";
    stream.write_all(head.as_bytes()).await.expect("send head");
    let started = Instant::now();
    let mut answer = Vec::new();
    let timeout = cloudai_master::REQUEST_TIMEOUT + Duration::from_secs(5);
    let mut buf = [0u8; 4096];
    // Read until the whole JSON body is in (the server may keep the connection open).
    while !String::from_utf8_lossy(&answer).ends_with('}') {
        let n = tokio::time::timeout(timeout, stream.read(&mut buf))
            .await
            .expect("an answer before the timeout plus 5 s")
            .expect("read");
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() >= cloudai_master::REQUEST_TIMEOUT - Duration::from_millis(500));
    assert!(answer.to_ascii_lowercase().contains("content-type: application/json"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"));
    assert!(body["error"].as_str().is_some_and(|e| e.contains("10s")), "{body}");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_times_out_of_range_say_the_range_not_the_format() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let worker = InProcessWorker::start(worker_config(master.grpc_addr, "w1"));
    let api = format!("http://{}", master.http_addr);
    wait_until(DEADLINE, "worker registered", || async {
        (get_json(&format!("{api}/api/workers/w1")).await.0 == 200).then_some(())
    })
    .await;
    let metrics = |query: &str| http_client().get(format!("{api}/api/workers/w1/metrics?{query}"));

    let (status, _, message) = json_error(metrics("until=1e13")).await;
    assert_eq!(status, 400);
    assert!(message.contains("until: 1e13 is out of range for unix seconds"), "{message}");
    assert!(message.contains("253402300799"), "the range is given: {message}");
    let (status, _, message) = json_error(metrics("since=1969-07-20T20:17:40Z")).await;
    assert_eq!(status, 400);
    assert!(message.contains("times before 1970 are not accepted"), "{message}");
    let (status, _, message) = json_error(metrics("since=last%20week")).await;
    assert_eq!(status, 400);
    assert!(message.contains("use a duration ago (15m), unix seconds or RFC 3339"), "{message}");
    // In range, every form still works.
    for query in ["since=15m", "since=1700000000&until=1700003600", "since=2026-01-01T00:00:00Z"] {
        let (status, body) = get_json(&format!("{api}/api/workers/w1/metrics?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
    }
    worker.stop().await;
    master.shutdown().await;
}
