//! A property test over every route of the master's own `/openapi.json`: real and garbage
//! ids in the path, known and unknown query parameters with garbage values, task bodies
//! mutated (huge numbers, duplicate keys, control characters), random bytes, deep nesting,
//! wrong content types, and methods the path does not serve. Whatever is sent, the master
//! never answers 5xx, and every answer that is not a success is `{"error": "<message>"}`.
//!
//! One master and one worker serve every case; the seed is fixed, so a failure replays.

mod common;

use std::fmt;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};

const CASES: u32 = 1000;

/// One documented operation and the names of its query parameters.
#[derive(Clone, Debug)]
struct Operation {
    method: String,
    path: String,
    query: Vec<String>,
}

fn operations(doc: &serde_json::Value) -> Vec<Operation> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in ["get", "post", "put", "delete", "patch"] {
            let Some(op) = item.get(method) else { continue };
            let query = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "query")
                .filter_map(|p| p["name"].as_str().map(str::to_string))
                .collect();
            ops.push(Operation { method: method.to_uppercase(), path: path.clone(), query });
        }
    }
    ops
}

struct Request {
    method: String,
    /// Path and query, as sent.
    target: String,
    content_type: Option<&'static str>,
    body: Option<Vec<u8>>,
}

/// What a failure prints: the request, with a long body cut.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} content-type={:?}", self.method, self.target, self.content_type)?;
        if let Some(body) = &self.body {
            let text = String::from_utf8_lossy(body);
            let shown: String = text.chars().take(300).collect();
            write!(f, " body ({} bytes): {shown:?}", body.len())?;
        }
        Ok(())
    }
}

/// Characters a path segment or query value may hold without changing the URL's shape
/// (no `/`, `?`, `#`, and no `\`, which URL parsers read as `/`); `%` makes bad escapes.
fn url_chars() -> Vec<char> {
    (' '..='~').filter(|c| !matches!(c, '/' | '?' | '#' | '\\')).chain(['é', '\u{7}', '\u{0}']).collect()
}

fn garbage() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(prop::sample::select(url_chars()), 1..16).prop_map(String::from_iter),
        1 => Just("%FF%FE".to_string()),
        1 => Just("%zz".to_string()),
        1 => Just("a%00b".to_string()),
        1 => Just("%2F%2E%2E".to_string()),
        1 => Just("x".repeat(300)),
    ]
}

fn query_value() -> impl Strategy<Value = String> {
    let known = [
        "",
        "-1",
        "0",
        "1",
        "5",
        "1e13",
        "18446744073709551616",
        "true",
        "maybe",
        "%FF",
        "%zz",
        "15m",
        "1ms",
        "1000000y",
        "1969-12-31T23:59:59Z",
        "2026-13-40T99:00:00Z",
        "1700000000",
        "pending",
        "firing",
        "cpu_usage,nope",
        "NaN",
        "inf",
    ];
    prop_oneof![3 => prop::sample::select(known.to_vec()).prop_map(str::to_string), 1 => garbage()]
}

fn query(names: Vec<String>) -> impl Strategy<Value = String> {
    let names = if names.is_empty() { vec!["limit".to_string()] } else { names };
    let name = prop_oneof![
        3 => prop::sample::select(names),
        1 => Just("unknown".to_string()),
        1 => garbage(),
    ];
    let tail = prop_oneof![6 => Just(""), 1 => Just("&&=&%"), 1 => Just("&tail=1&tail=2")];
    (prop::collection::vec((name, query_value()), 0..4), tail).prop_map(|(pairs, tail)| {
        let pairs: Vec<String> = pairs.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("{}{tail}", pairs.join("&"))
    })
}

/// Task bodies close to valid: some fields replaced, added or repeated, as raw JSON text.
fn task_json() -> impl Strategy<Value = Vec<u8>> {
    let keys = [
        "driver",
        "command",
        "cpu_required",
        "memory_required",
        "gpu_required",
        "docker_image",
        "env",
        "priority",
        "max_retries",
        "bogus",
        "",
    ];
    let values = [
        "1e308",
        "18446744073709551616",
        "-1",
        "0",
        "null",
        "\"\"",
        "\"\\u0000\"",
        "[]",
        "{}",
        "true",
        "1.5",
        "\"x\"",
        "{\"A\":\"1\",\"A\":\"2\"}",
        "{\"\\u0007\":\"v\"}",
        "{\"A\":{\"B\":1}}",
        "[\"sh\",\"-c\",\"exit 3\"]",
        "\"docker\"",
        "\"python:3.9\\u0000\"",
        "4097",
        "65",
        "1e-300",
        "-0",
        "\"16\"",
    ];
    let change = (prop::sample::select(keys.to_vec()), prop::sample::select(values.to_vec()));
    (prop::collection::vec(change, 0..4), any::<u8>()).prop_map(|(changes, dropped)| {
        let mut pairs: Vec<(&str, &str)> = [
            ("driver", "\"process\""),
            ("command", "[\"true\"]"),
            ("cpu_required", "0.1"),
            ("memory_required", "16"),
        ]
        .into_iter()
        .enumerate()
        .filter(|(i, _)| dropped & (1 << i) == 0 || dropped < 128)
        .map(|(_, p)| p)
        .collect();
        pairs.extend(changes);
        let fields: Vec<String> =
            pairs.iter().map(|(k, v)| format!("{}:{v}", serde_json::Value::from(*k))).collect();
        format!("{{{}}}", fields.join(",")).into_bytes()
    })
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        3 => Just(None),
        6 => task_json().prop_map(Some),
        // A valid submission, so acceptance (201) is reached by design, not by luck.
        2 => Just(Some(br#"{"command":["true"],"cpu_required":0.1,"memory_required":16}"#.to_vec())),
        2 => prop::collection::vec(any::<u8>(), 0..200).prop_map(Some),
        1 => (1usize..5000).prop_map(|d| Some(format!("{}{}", "[".repeat(d), "]".repeat(d)).into_bytes())),
        1 => (1usize..5000).prop_map(|d| Some(format!("{{\"env\":{}", "{\"a\":".repeat(d)).into_bytes())),
        1 => Just(Some(format!("{{\"command\":[\"{}\"]}}", "a".repeat(1_100_000)).into_bytes())),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        6 => Just(Some("application/json")),
        1 => Just(Some("application/json; charset=utf-8")),
        1 => Just(Some("APPLICATION/JSON")),
        1 => Just(Some("text/plain")),
        1 => Just(Some("application/x-www-form-urlencoded")),
        1 => Just(Some("multipart/form-data; boundary=x")),
        1 => Just(None),
    ]
}

fn request(
    ops: Vec<Operation>,
    task_ids: Vec<String>,
    worker_ids: Vec<String>,
) -> impl Strategy<Value = Request> {
    prop::sample::select(ops).prop_flat_map(move |op| {
        let method = prop_oneof![
            5 => Just(op.method.clone()),
            1 => prop::sample::select(vec!["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]).prop_map(str::to_string),
        ];
        let ids = |real: &Vec<String>| {
            prop::collection::vec(prop_oneof![2 => prop::sample::select(real.clone()), 1 => garbage()], 2)
        };
        (method, ids(&task_ids), ids(&worker_ids), query(op.query.clone()), content_type(), body()).prop_map(
            move |(method, tasks, workers, query, content_type, body)| {
                let path = op.path.replace("{id}", &tasks[0]).replace("{worker_id}", &workers[0]);
                // A body over the limit only where it is read: elsewhere the master answers
                // before it has all of it and closes, and the client sees a reset, not an answer.
                let reads_body = method == "POST" && path == "/api/tasks" && content_type == Some("application/json");
                let body = body.map(|mut b| {
                    if !reads_body {
                        b.truncate(64 * 1024);
                    }
                    b
                });
                let target = if query.is_empty() { path } else { format!("{path}?{query}") };
                Request { method, target, content_type, body }
            },
        )
    })
}

/// Answers seen, by status (0: not sent, the target is not a URL), to show what was covered.
type Seen = std::sync::Mutex<std::collections::BTreeMap<u16, usize>>;

async fn check(client: &reqwest::Client, api: &str, req: &Request, seen: &Seen) -> Result<(), TestCaseError> {
    let Ok(url) = reqwest::Url::parse(&format!("{api}{}", req.target)) else {
        // Not a URL any client would send; nothing to ask the master.
        *seen.lock().expect("seen").entry(0).or_default() += 1;
        return Ok(());
    };
    let method =
        reqwest::Method::from_bytes(req.method.as_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut builder = client.request(method, url);
    if let Some(t) = req.content_type {
        builder = builder.header("content-type", t);
    }
    if let Some(body) = &req.body {
        builder = builder.body(body.clone());
    }
    let resp = builder.send().await.map_err(|e| TestCaseError::fail(format!("no answer: {e:?}")))?;
    let status = resp.status();
    *seen.lock().expect("seen").entry(status.as_u16()).or_default() += 1;
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    let text = resp.text().await.map_err(|e| TestCaseError::fail(format!("body: {e}")))?;
    prop_assert!(status.as_u16() < 500, "a 5xx for bad input: {status} {text}");
    if status.is_success() {
        return Ok(());
    }
    prop_assert_eq!(content_type.as_deref(), Some("application/json"), "{} {}", status, text);
    let body: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| TestCaseError::fail(format!("{status}: not JSON ({e}): {text}")))?;
    let message =
        body.as_object().filter(|o| o.len() == 1).and_then(|o| o.get("error")).and_then(|e| e.as_str());
    prop_assert!(
        message.is_some_and(|m| !m.trim().is_empty()),
        "{status}: not {{\"error\": message}}: {text}"
    );
    Ok(())
}

#[test]
fn every_route_answers_bad_input_with_a_json_error_and_never_a_5xx() {
    let runtime =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let (master, worker, api, client, ops, task_id) = runtime.block_on(async {
        let master = start_master(master_config(Duration::from_secs(30))).await;
        let worker = InProcessWorker::start(worker_config(master.grpc_addr, "w1"));
        let api = format!("http://{}", master.http_addr);
        wait_until(DEADLINE, "worker registered", || async {
            (get_json(&format!("{api}/api/workers/w1")).await.0 == 200).then_some(())
        })
        .await;
        // A finished task: its logs end at once even with `follow=true`, and cancelling it is a 409.
        let done = submit(&api, shell_task("echo fuzz")).await;
        let task_id = done["task_id"].as_str().expect("id").to_string();
        wait_status(&api, &task_id, "completed").await;
        let (status, doc) = get_json(&format!("{api}/openapi.json")).await;
        assert_eq!(status, 200);
        // A new connection per case: a case after one the master closed (an unread body)
        // must not fail for the pooled connection.
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_max_idle_per_host(0)
            .build()
            .expect("client");
        (master, worker, api, client, operations(&doc), task_id)
    });
    assert!(ops.len() >= 15, "every documented operation: {ops:?}");

    let config =
        Config { cases: CASES, max_shrink_iters: 64, failure_persistence: None, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let strategy = request(ops, vec![task_id], vec!["w1".to_string()]);
    let seen = Seen::default();
    let result = runner.run(&strategy, |req| runtime.block_on(check(&client, &api, &req, &seen)));

    runtime.block_on(async {
        let (status, health) = get_json(&format!("{api}/health")).await;
        assert_eq!((status, health["status"].as_str()), (200, Some("healthy")), "the master still serves");
        worker.stop().await;
        master.shutdown().await;
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let seen = seen.into_inner().expect("seen");
    eprintln!("answers by status (0: not a URL, not sent): {seen:?}");
    let sent: usize = seen.iter().filter(|(s, _)| **s != 0).map(|(_, n)| n).sum();
    assert!(sent * 10 >= CASES as usize * 9, "most cases reach the master: {seen:?}");
    for status in [200, 201, 400, 404, 405, 413, 415] {
        assert!(seen.contains_key(&status), "no {status} among the answers: {seen:?}");
    }
}
