//! A worker's telemetry history: asked for over HTTP, in the console, and kept across a
//! master restart at the minute tier.

mod common;

use std::time::Duration;

use cloudai::console::{Console, Outcome, execute};
use common::*;
use serde_json::Value;

fn points<'a>(body: &'a Value, field: &str) -> &'a [Value] {
    body["history"]["fields"][field].as_array().map_or(&[], Vec::as_slice)
}

fn unix_secs_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_served_and_survives_a_master_restart_at_the_minute_tier() {
    let config = master_config(Duration::from_secs(5));
    let (http_port, grpc_port) = (free_port(), free_port());
    let master = start_master_on(config.clone(), http_port, grpc_port).await;
    let api = format!("http://{}", master.http_addr);
    let mut worker_config = worker_config(master.grpc_addr, "hist-1");
    worker_config.heartbeat_interval = Duration::from_millis(100);
    worker_config.simulated_gpus = Some(2);
    let worker = InProcessWorker::start(worker_config);

    // Raw points, as stored: one per heartbeat, every field of the heartbeat.
    let url = format!("{api}/api/workers/hist-1/metrics?since=5m");
    let body = wait_until(DEADLINE, "ten heartbeats in the history", || async {
        let (status, body) = get_json(&url).await;
        (status == 200 && points(&body, "cpu_usage").len() >= 10).then_some(body)
    })
    .await;
    assert_eq!(body["worker_id"], "hist-1");
    assert!(body["cpu_usage"].is_number(), "the current figures are still there: {body}");
    let since_ms = body["history"]["since_ms"].as_i64().expect("since_ms");
    let until_ms = body["history"]["until_ms"].as_i64().expect("until_ms");
    assert!((until_ms - since_ms - 300_000).abs() < 1_000, "{since_ms}..{until_ms}");
    for field in ["cpu_usage", "memory_usage", "memory_used_mb", "gpu0_utilization", "gpu1_memory_used_mb"] {
        for p in points(&body, field) {
            let (t, v) = (p["timestamp_ms"].as_i64().expect("ts"), p["avg"].as_f64().expect("avg"));
            assert!((since_ms..until_ms).contains(&t), "{field} at {t}");
            assert!(v >= 0.0 && (field.ends_with("_mb") || v <= 100.0), "{field} = {v}");
            assert_eq!(p["min"], p["avg"], "a raw point is one sample");
        }
        assert!(!points(&body, field).is_empty(), "{field} recorded: {body}");
    }
    let times: Vec<i64> =
        points(&body, "cpu_usage").iter().filter_map(|p| p["timestamp_ms"].as_i64()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "oldest first: {times:?}");

    // Aggregated per minute, only the fields asked for.
    let url = format!("{api}/api/workers/hist-1/metrics?since=5m&step=1m&fields=cpu_usage,gpu0_utilization");
    let (status, body) = get_json(&url).await;
    assert_eq!(status, 200, "{body}");
    let fields = body["history"]["fields"].as_object().expect("fields");
    assert_eq!(fields.keys().collect::<Vec<_>>(), ["cpu_usage", "gpu0_utilization"]);
    let cpu = points(&body, "cpu_usage");
    assert!((1..=6).contains(&cpu.len()), "at most one point per minute: {cpu:?}");
    for p in cpu {
        let (min, avg, max) = (p["min"].as_f64(), p["avg"].as_f64(), p["max"].as_f64());
        assert!(min <= avg && avg <= max, "{p}");
    }

    // Bad requests are refused with a JSON message naming the problem.
    for (query, needle) in [
        ("since=yesterday", "since"),
        ("since=1h&step=1ms", "step"),
        ("step=often", "step"),
        ("fields=disk_usage", "disk_usage"),
        ("since=1m&until=2m", "until"),
        ("since=1000000y&step=1s", "step"),
    ] {
        let (status, body) = get_json(&format!("{api}/api/workers/hist-1/metrics?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains(needle)), "{query}: {body}");
    }
    let (status, _) = get_json(&format!("{api}/api/workers/nobody/metrics?since=5m")).await;
    assert_eq!(status, 404);

    // The console shows the same history as a table.
    let console = Console::for_master(&master);
    let table = tokio::task::spawn_blocking(move || match execute(&console, "history hist-1 5m") {
        Outcome::Print(text) => text,
        Outcome::Quit => panic!("history does not quit"),
    })
    .await
    .expect("console");
    assert!(table.contains("cpu %") && table.lines().count() >= 3, "{table}");

    // A graceful restart: the master stores every worker's open minute as it stops.
    let restart_secs = unix_secs_now();
    master.shutdown().await;
    let master = start_master_on(config, http_port, grpc_port).await;
    let api = format!("http://{}", master.http_addr);
    let before_restart =
        format!("{api}/api/workers/hist-1/metrics?since=10m&until={restart_secs}&step=1m&fields=cpu_usage");
    // The new master has no raw sample from before the restart: these can only be the
    // minutes it stored, read back when the worker registered again.
    let body = wait_until(DEADLINE, "hist-1 back with its minutes from before the restart", || async {
        let (status, body) = get_json(&before_restart).await;
        (status == 200 && !points(&body, "cpu_usage").is_empty()).then_some(body)
    })
    .await;
    let cpu = points(&body, "cpu_usage");
    for p in cpu {
        assert!(p["timestamp_ms"].as_f64().is_some_and(|t| t < restart_secs * 1000.0), "{p}");
        assert!(p["min"].as_f64() <= p["max"].as_f64(), "{p}");
    }
    // New heartbeats keep adding raw points after it.
    let after = format!("{api}/api/workers/hist-1/metrics?since={restart_secs}");
    wait_until(DEADLINE, "new samples after the restart", || async {
        let (_, body) = get_json(&after).await;
        (points(&body, "cpu_usage").len() >= 3).then_some(())
    })
    .await;

    worker.stop().await;
    master.shutdown().await;
}
