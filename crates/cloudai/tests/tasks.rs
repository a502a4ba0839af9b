//! Tasks end to end with the process driver: submit, run, logs, cancel, priorities, GPUs.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

async fn cluster(cpus: f64, gpus: Option<u32>) -> (cloudai_master::Master, InProcessWorker, String) {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let worker = InProcessWorker::start(sized_worker(master.grpc_addr, "w1", cpus, gpus));
    let api = format!("http://{}", master.http_addr);
    wait_until(DEADLINE, "worker registered", || async {
        let (_, w) = get_json(&format!("{api}/workers")).await;
        (w.as_object().map(|m| m.len()) == Some(1)).then_some(())
    })
    .await;
    (master, worker, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_task_completes_with_its_logs_and_history() {
    let (master, worker, api) = cluster(2.0, None).await;
    let task = submit(&api, shell_task("echo hello from cloudai; echo oops >&2")).await;
    assert_eq!(task["status"], "pending");
    let id = task["task_id"].as_str().expect("id");

    let done = wait_status(&api, id, "completed").await;
    assert_eq!(done["exit_code"], 0);
    assert_eq!(done["worker_id"], "w1");
    assert_eq!(done["attempt"], 1);
    assert!(done["finished_at_ms"].as_i64() >= done["started_at_ms"].as_i64());
    let out = task_output(&api, id).await;
    assert!(out.contains("hello from cloudai\n") && out.contains("oops\n"), "{out}");

    let (_, events) = get_json(&format!("{api}/api/tasks/{id}/events")).await;
    let states: Vec<&str> =
        events.as_array().expect("events").iter().filter_map(|e| e["to"].as_str()).collect();
    assert_eq!(states, ["pending", "queued", "running", "completed"]);

    let (_, listed) = get_json(&format!("{api}/api/tasks?status=completed")).await;
    assert!(listed["tasks"].as_array().expect("list").iter().any(|t| t["task_id"] == id));
    let (_, on_worker) = get_json(&format!("{api}/api/workers/w1/tasks")).await;
    assert!(on_worker["tasks"].as_array().expect("list").iter().any(|t| t["task_id"] == id));
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_zero_exit_fails_with_the_exit_code() {
    let (master, worker, api) = cluster(2.0, None).await;
    let task = submit(&api, shell_task("echo about to fail; exit 7")).await;
    let failed = wait_status(&api, task["task_id"].as_str().expect("id"), "failed").await;
    assert_eq!(failed["exit_code"], 7);
    assert!(failed["error"].as_str().is_some_and(|e| e.contains('7')), "{failed}");

    let missing = submit(
        &api,
        json!({"driver":"process","command":["no-such-program-xyz"],"cpu_required":0.1,"memory_required":1}),
    )
    .await;
    let failed = wait_status(&api, missing["task_id"].as_str().expect("id"), "failed").await;
    assert!(failed["error"].as_str().is_some_and(|e| e.contains("no-such-program-xyz")), "{failed}");
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_task_and_its_processes() {
    let (master, worker, api) = cluster(2.0, None).await;
    // The task's shell starts a child and prints its pid, so we can check it is gone.
    let task = submit(&api, shell_task("sleep 1000 & echo child=$!; wait")).await;
    let id = task["task_id"].as_str().expect("id");
    wait_status(&api, id, "running").await;
    let child: i32 = wait_until(DEADLINE, "the child's pid in the logs", || async {
        let out = task_output(&api, id).await;
        out.lines().find_map(|l| l.strip_prefix("child=")).and_then(|p| p.trim().parse().ok())
    })
    .await;
    let alive = |pid: i32| {
        // Gone, or a zombie waiting for its reaper: either way no longer running.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
            .unwrap_or(false)
    };
    assert!(alive(child), "the child runs before the cancel");

    let resp = http_client().delete(format!("{api}/api/tasks/{id}")).send().await.expect("DELETE");
    assert_eq!(resp.status().as_u16(), 202, "a running task is being stopped");
    let cancelled = wait_status(&api, id, "cancelled").await;
    assert!(cancelled["finished_at_ms"].is_i64());
    wait_until(DEADLINE, "the task's whole process group to be gone", || async {
        (!alive(child)).then_some(())
    })
    .await;

    // Cancelling again: the task has ended.
    let resp = http_client().delete(format!("{api}/api/tasks/{id}")).send().await.expect("DELETE");
    assert_eq!(resp.status().as_u16(), 409);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("cancelled")), "{body}");

    // A pending task is cancelled at once.
    let big =
        submit(&api, json!({"driver":"process","command":["true"],"cpu_required":64,"memory_required":1}))
            .await;
    let big_id = big["task_id"].as_str().expect("id");
    let resp = http_client().delete(format!("{api}/api/tasks/{big_id}")).send().await.expect("DELETE");
    assert_eq!(resp.status().as_u16(), 200);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["status"], "cancelled");
    let resp = http_client().delete(format!("{api}/api/tasks/nope")).send().await.expect("DELETE");
    assert_eq!(resp.status().as_u16(), 404);
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_runs_first_when_capacity_is_short() {
    let (master, worker, api) = cluster(1.0, None).await;
    let one_cpu = |script: &str, priority: i32| json!({"driver":"process","command":["sh","-c",script],"cpu_required":1,"memory_required":16,"priority":priority});
    let blocker = submit(&api, one_cpu("sleep 1", 0)).await;
    wait_status(&api, blocker["task_id"].as_str().expect("id"), "running").await;
    let low = submit(&api, one_cpu("true", 1)).await;
    let low2 = submit(&api, one_cpu("true", 1)).await;
    let high = submit(&api, one_cpu("true", 10)).await;
    let pending = get_task(&api, low["task_id"].as_str().expect("id")).await;
    assert_eq!(pending["status"], "pending");
    assert!(pending["pending_reason"].as_str().is_some_and(|r| r.contains("room")), "{pending}");

    let started = |t: serde_json::Value| t["started_at_ms"].as_i64().expect("started");
    let high = started(wait_status(&api, high["task_id"].as_str().expect("id"), "completed").await);
    let low = started(wait_status(&api, low["task_id"].as_str().expect("id"), "completed").await);
    let low2 = started(wait_status(&api, low2["task_id"].as_str().expect("id"), "completed").await);
    assert!(high <= low && low <= low2, "priority, then FIFO: high {high}, low {low}, low2 {low2}");
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_too_large_for_any_worker_stays_pending_and_says_why() {
    let (master, worker, api) = cluster(2.0, Some(1)).await;
    let task = submit(
        &api,
        json!({"driver":"process","command":["true"],"cpu_required":1,"memory_required":1,"gpu_required":4}),
    )
    .await;
    let id = task["task_id"].as_str().expect("id");
    let reason = wait_until(DEADLINE, "a pending reason", || async {
        let t = get_task(&api, id).await;
        assert_eq!(t["status"], "pending");
        t["pending_reason"].as_str().map(str::to_string)
    })
    .await;
    assert!(reason.contains("cannot run on any known worker") && reason.contains("GPU"), "{reason}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get_task(&api, id).await["status"], "pending");
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gpus_are_assigned_by_index_without_overlap() {
    let (master, worker, api) = cluster(8.0, Some(4)).await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        let t = submit(
            &api,
            json!({
                "driver":"process","command":["sh","-c","echo gpus=$CUDA_VISIBLE_DEVICES; sleep 1"],
                "cpu_required":0.1,"memory_required":1,"gpu_required":2
            }),
        )
        .await;
        ids.push(t["task_id"].as_str().expect("id").to_string());
    }
    // Two run at once (4 GPUs / 2 each); while they do, their GPU sets are disjoint.
    let running = wait_until(DEADLINE, "two GPU tasks running", || async {
        let (_, list) = get_json(&format!("{api}/api/tasks?status=running")).await;
        let list = list["tasks"].as_array()?.clone();
        (list.len() == 2).then_some(list)
    })
    .await;
    let mut seen: Vec<u64> = running
        .iter()
        .flat_map(|t| t["gpu_indices"].as_array().cloned().unwrap_or_default())
        .filter_map(|g| g.as_u64())
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, [0, 1, 2, 3], "{running:?}");
    for id in &ids {
        let done = wait_status(&api, id, "completed").await;
        let gpus: Vec<String> =
            done["gpu_indices"].as_array().expect("gpus").iter().map(|g| g.to_string()).collect();
        assert_eq!(gpus.len(), 2);
        let out = task_output(&api, id).await;
        assert_eq!(out.trim(), format!("gpus={}", gpus.join(",")), "the task sees its GPUs");
    }
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_streams_output_live_until_the_task_ends() {
    let (master, worker, api) = cluster(2.0, None).await;
    let task = submit(&api, shell_task("echo one; sleep 1; echo two; sleep 1; echo three")).await;
    let id = task["task_id"].as_str().expect("id").to_string();
    let mut resp = http_client()
        .get(format!("{api}/api/tasks/{id}/logs?follow=true"))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .expect("follow");
    assert_eq!(resp.status().as_u16(), 200);
    let mut text = String::new();
    let mut status_at_first_line = None;
    while let Some(chunk) = resp.chunk().await.expect("stream") {
        for line in String::from_utf8_lossy(&chunk).lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("NDJSON line");
            text.push_str(v["data"].as_str().unwrap_or_default());
            if status_at_first_line.is_none() {
                status_at_first_line = Some(get_task(&api, &id).await["status"].clone());
            }
        }
    }
    assert_eq!(text, "one\ntwo\nthree\n");
    assert_eq!(status_at_first_line, Some(json!("running")), "output arrives while the task runs");
    assert_eq!(get_task(&api, &id).await["status"], "completed", "the stream ends when the task ends");

    let (_, tail) = get_json(&format!("{api}/api/tasks/{id}/logs?tail=2")).await;
    let tail: String =
        tail["logs"].as_array().expect("logs").iter().filter_map(|c| c["data"].as_str()).collect();
    assert_eq!(tail, "two\nthree\n");
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test]
async fn bad_bodies_get_400_naming_the_field() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    let post = |body: String| {
        let api = api.clone();
        async move {
            let resp = http_client()
                .post(format!("{api}/api/tasks"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .expect("POST");
            let status = resp.status().as_u16();
            (status, resp.json::<serde_json::Value>().await.expect("JSON error body"))
        }
    };
    let cases = [
        (r#"{"docker_image":"python:3.9","cpu_required":"two","memory_required":512}"#, "cpu_required"),
        (r#"{"docker_image":"python:3.9","cpu_required":0,"memory_required":512}"#, "cpu_required"),
        (r#"{"docker_image":"python:3.9","cpu_required":1}"#, "memory_required"),
        (
            r#"{"docker_image":"python:3.9","cpu_required":1,"memory_required":1,"gpu_required":-1}"#,
            "gpu_required",
        ),
        (r#"{"cpu_required":1,"memory_required":1}"#, "docker_image"),
        (r#"{"driver":"process","cpu_required":1,"memory_required":1}"#, "command"),
        (r#"{"driver":"slurm","cpu_required":1,"memory_required":1}"#, "driver"),
        (r#"{"docker_image":"x","cpu_required":1,"memory_required":1,"bogus":1}"#, "bogus"),
        (r#"{"docker_image":"x","cpu_required":1,"memory_required":1,"env":{"A":1}}"#, "env"),
        (r#"not json"#, "body"),
    ];
    for (body, field) in cases {
        let (status, err) = post(body.to_string()).await;
        assert_eq!(status, 400, "{body}: {err}");
        assert!(
            err["error"].as_str().is_some_and(|e| e.contains(field)),
            "{body}: error must name {field}: {err}"
        );
    }
    let huge = format!(
        r#"{{"docker_image":"x","cpu_required":1,"memory_required":1,"command":["{}"]}}"#,
        "a".repeat(2 << 20)
    );
    let (status, err) = post(huge).await;
    assert_eq!(status, 413, "{err}");
    assert!(err["error"].is_string());
    let (status, err) = get_json(&format!("{api}/api/tasks?status=sleeping")).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().is_some_and(|e| e.contains("status")), "{err}");
    let (status, _) = get_json(&format!("{api}/api/tasks/0000")).await;
    assert_eq!(status, 404);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_task_sees_only_its_documented_environment() {
    let (master, worker, api) = cluster(2.0, None).await;
    // The worker runs inside cargo's test process: its environment is full of CARGO_* and more.
    assert!(
        std::env::vars().any(|(k, _)| k.starts_with("CARGO")),
        "the worker's own environment is not empty"
    );
    let body = json!({
        "driver": "process",
        "command": ["env"],
        "env": {"MY_SETTING": "on", "PATH": "/opt/tool/bin:/usr/bin:/bin"},
        "cpu_required": 0.1,
        "memory_required": 16,
    });
    let task = submit(&api, body).await;
    let id = task["task_id"].as_str().expect("id");
    wait_status(&api, id, "completed").await;
    let out = task_output(&api, id).await;
    let mut names: Vec<&str> = out.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["CLOUDAI_TASK_ID", "CUDA_VISIBLE_DEVICES", "HOME", "LANG", "LOGNAME", "MY_SETTING", "PATH", "USER"],
        "{out}"
    );
    assert!(out.contains("PATH=/opt/tool/bin:/usr/bin:/bin\n"), "the task's env wins: {out}");
    assert!(out.contains(&format!("CLOUDAI_TASK_ID={id}\n")), "{out}");
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spinning_process_task_shows_its_cpu_and_memory() {
    let (master, worker, api) = cluster(2.0, None).await;
    // Bounded, so a failing run does not leave a core spinning for the tests after it.
    let task = submit(&api, shell_task("exec timeout 120 sh -c 'while :; do :; done'")).await;
    let id = task["task_id"].as_str().expect("id").to_string();
    wait_status(&api, &id, "running").await;
    // One core busy: near 100 % (the machine is shared, so more than half of it).
    let usage = wait_until(DEADLINE, "the task's CPU measured near 100 %", || async {
        let (_, tasks) = get_json(&format!("{api}/api/workers/w1/tasks")).await;
        let usage = tasks["tasks"].as_array()?.iter().find(|t| t["task_id"] == id.as_str())?["usage"].clone();
        (usage["cpu_percent"].as_f64()? > 50.0).then_some(usage)
    })
    .await;
    assert!(usage["cpu_percent"].as_f64() < Some(150.0), "one shell loop is at most one core: {usage}");
    assert!(usage["memory_bytes"].as_u64() > Some(100_000), "the shell's resident memory: {usage}");
    let resp = http_client().delete(format!("{api}/api/tasks/{id}")).send().await.expect("cancel");
    assert_eq!(resp.status().as_u16(), 202, "a running task's cancel is accepted");
    wait_status(&api, &id, "cancelled").await;
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test]
async fn a_submission_that_is_not_declared_json_gets_415() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    let body = r#"{"driver":"process","command":["true"],"cpu_required":0.1,"memory_required":1}"#;
    // What a web page can send cross-site without asking first, and no type at all.
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut request = http_client().post(format!("{api}/api/tasks")).body(body);
        if let Some(t) = content_type {
            request = request.header("content-type", t);
        }
        let resp = request.send().await.expect("POST");
        assert_eq!(resp.status().as_u16(), 415, "{content_type:?}");
        let err: serde_json::Value = resp.json().await.expect("JSON error body");
        assert!(err["error"].as_str().is_some_and(|e| e.contains("application/json")), "{err}");
    }
    let (_, tasks) = get_json(&format!("{api}/api/tasks")).await;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(0), "nothing was accepted: {tasks}");
    let resp = http_client()
        .post(format!("{api}/api/tasks"))
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 201, "a charset parameter is fine");
    master.shutdown().await;
}

/// POSTs a JSON text as is (so it can hold what serde_json would never write).
async fn post_raw(api: &str, body: &str) -> (u16, serde_json::Value) {
    let resp = http_client()
        .post(format!("{api}/api/tasks"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_numbers_out_of_range_and_control_characters_are_refused() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    let task = r#""driver":"process","command":["true"],"cpu_required":0.1"#;

    // With no worker yet, only the absolute bound holds: the first workers may be big.
    let (status, early) = post_raw(&api, &format!(r#"{{{task},"memory_required":8192}}"#)).await;
    assert_eq!(status, 201, "{early}");

    let worker = InProcessWorker::start(sized_worker(master.grpc_addr, "w1", 2.0, None));
    wait_until(DEADLINE, "worker registered", || async {
        (get_json(&format!("{api}/api/workers/w1")).await.0 == 200).then_some(())
    })
    .await;
    let refused = [
        (
            format!(r#"{{{task},"memory_required":1,"memory_required":2}}"#),
            r#"body: duplicate key "memory_required""#,
        ),
        (format!(r#"{{{task},"memory_required":1,"env":{{"A":"1","A":"2"}}}}"#), r#"env: duplicate key "A""#),
        (
            format!(r#"{{{task},"memory_required":18446744073709551616}}"#),
            "memory_required: must be a number of MB greater than 0 and at most 67108864",
        ),
        (
            format!(r#"{{{task},"memory_required":1e308}}"#),
            "memory_required: must be a number of MB greater than 0 and at most 67108864",
        ),
        (
            format!(r#"{{{task},"memory_required":8192}}"#),
            "memory_required: 8192 MB is more than the largest registered worker has (4096 MB)",
        ),
        (
            r#"{"driver":"process","command":["true"],"cpu_required":5000,"memory_required":1}"#.to_string(),
            "cpu_required: must be a number of cores greater than 0 and at most 4096",
        ),
        (
            r#"{"docker_image":"python:3.9\u0000","cpu_required":1,"memory_required":1}"#.to_string(),
            "docker_image: must be an image reference without spaces or control characters",
        ),
        (
            format!(r#"{{{task},"memory_required":1,"env":{{"BAD\u001bKEY":"1"}}}}"#),
            "a variable name has no '=' or control character",
        ),
    ];
    for (body, expected) in &refused {
        let (status, err) = post_raw(&api, body).await;
        assert_eq!(status, 400, "{body}: {err}");
        let message = err["error"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{body}: expected {expected:?}, got {message:?}");
    }
    // Nothing refused was stored: only the early task exists, waiting for a bigger worker.
    let (_, summary) = get_json(&format!("{api}/api/tasks/summary")).await;
    let total: u64 = summary.as_object().expect("summary").values().filter_map(|n| n.as_u64()).sum();
    assert_eq!((total, summary["pending"].as_u64()), (1, Some(1)), "{summary}");
    let early = early["task_id"].as_str().expect("id");
    let resp = http_client().delete(format!("{api}/api/tasks/{early}")).send().await.expect("DELETE");
    assert_eq!(resp.status().as_u16(), 200);
    // At the largest worker's size, a task is taken and runs.
    let (status, fits) = post_raw(&api, &format!(r#"{{{task},"memory_required":4096}}"#)).await;
    assert_eq!(status, 201, "{fits}");
    wait_status(&api, fits["task_id"].as_str().expect("id"), "completed").await;
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test]
async fn a_submission_past_the_task_limits_is_refused_naming_the_setting() {
    let mut config = master_config(Duration::from_secs(30));
    config.tasks.limits = cloudai_domain::SpecLimits { env_vars: 2, ..cloudai_domain::SpecLimits::default() };
    let master = start_master(config).await;
    let api = format!("http://{}", master.http_addr);
    let with_env = |env: serde_json::Value| {
        json!({"driver": "process", "command": ["true"], "env": env, "cpu_required": 1, "memory_required": 8})
            .to_string()
    };
    let (status, err) = post_raw(&api, &with_env(json!({"A": "1", "B": "2", "C": "3"}))).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"].as_str().is_some_and(|e| e.starts_with("env:") && e.contains("MAX_TASK_ENV_VARS")),
        "{err}"
    );
    let big: serde_json::Map<String, serde_json::Value> =
        (0..2).map(|i| (format!("V{i}"), json!("x".repeat(60 * 1024)))).collect();
    let (status, _) = post_raw(&api, &with_env(big.into())).await;
    assert_eq!(status, 201, "two big values are within the defaults");
    master.shutdown().await;

    let master = start_master(master_config(Duration::from_secs(30))).await;
    let api = format!("http://{}", master.http_addr);
    // Five values of 60 KiB: each within MAX_TASK_STRING_BYTES, together past MAX_TASK_ENV_BYTES.
    let big: serde_json::Map<String, serde_json::Value> =
        (0..5).map(|i| (format!("V{i}"), json!("x".repeat(60 * 1024)))).collect();
    let (status, err) = post_raw(&api, &with_env(big.into())).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["error"].as_str().is_some_and(|e| e.contains("MAX_TASK_ENV_BYTES")), "{err}");
    let (_, tasks) = get_json(&format!("{api}/api/tasks")).await;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(0), "nothing refused is stored: {tasks}");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_env_value_reaches_the_task_and_no_answer() {
    let (master, worker, api) = cluster(2.0, None).await;
    let body = json!({
        "driver": "process",
        // Compared without writing the value in the command (which every answer shows).
        "command": ["sh", "-c", "test \"$API_KEY\" = \"$(printf hunter; printf 2)\" && echo the task has its key"],
        "env": {"API_KEY": "hunter2", "REGION": "eu"},
        "secret_env": ["API_KEY"],
        "cpu_required": 0.5, "memory_required": 16
    });
    let (status, accepted) = post_raw(&api, &body.to_string()).await;
    assert_eq!(status, 201, "{accepted}");
    let id = accepted["task_id"].as_str().expect("id").to_string();
    assert_eq!((&accepted["env"]["API_KEY"], &accepted["env"]["REGION"]), (&json!("<secret>"), &json!("eu")));
    wait_status(&api, &id, "completed").await;
    assert_eq!(task_output(&api, &id).await, "the task has its key\n");
    let mut answers = vec![accepted.to_string()];
    for path in [
        format!("/api/tasks/{id}"),
        "/api/tasks".to_string(),
        "/api/tasks?order=newest".to_string(),
        "/api/workers/w1/tasks".to_string(),
        format!("/api/tasks/{id}/events"),
    ] {
        let (status, answer) = get_json(&format!("{api}{path}")).await;
        assert_eq!(status, 200, "{path}: {answer}");
        answers.push(answer.to_string());
    }
    for answer in &answers {
        assert!(!answer.contains("hunter2"), "the secret leaked: {answer}");
    }
    assert!(
        answers[1].contains("<secret>") && answers[1].contains("\"secret_env\":[\"API_KEY\"]"),
        "{}",
        answers[1]
    );

    let body = json!({"driver": "process", "command": ["true"], "env": {"A": "1"}, "secret_env": ["B"], "cpu_required": 1, "memory_required": 8});
    let (status, err) = post_raw(&api, &body.to_string()).await;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["error"].as_str().is_some_and(|e| e.starts_with("secret_env[0]:") && e.contains("\"B\"")),
        "{err}"
    );
    worker.stop().await;
    master.shutdown().await;
}
