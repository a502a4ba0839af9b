//! `/metrics` as Prometheus sees it: every family present, real workers' labels,
//! `promtool check metrics` clean, and a real Prometheus server scraping it.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// A tool the test needs: in CI (`CI` set) its absence fails the test; elsewhere it skips.
fn tool(path: &str) -> Option<&str> {
    if std::path::Path::new(path).exists() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{path} is missing: .ci/run installs Debian's prometheus package");
    }
    eprintln!("skipping: {path} not installed (apt-get install prometheus)");
    None
}

async fn scrape(api: &str) -> String {
    let resp = http_client().get(format!("{api}/metrics")).send().await.expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let ct = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    resp.text().await.expect("body")
}

async fn cluster_with_a_finished_task() -> (cloudai_master::Master, Vec<InProcessWorker>, String) {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    let workers = vec![
        InProcessWorker::start(sized_worker(master.grpc_addr, "metrics-cpu", 2.0, None)),
        InProcessWorker::start(sized_worker(master.grpc_addr, "metrics-gpu", 4.0, Some(2))),
    ];
    let task = submit(&api, shell_task("echo measured")).await;
    wait_status(&api, task["task_id"].as_str().expect("id"), "completed").await;
    wait_until(DEADLINE, "both workers reporting", || async {
        let (_, t) = get_json(&format!("{api}/telemetry")).await;
        let m = t.as_object()?;
        (m.len() == 2 && m.values().all(|w| w["last_update"].as_i64().unwrap_or(0) > 0)).then_some(())
    })
    .await;
    (master, workers, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_cover_every_family_with_real_labels_and_pass_promtool() {
    let (master, workers, api) = cluster_with_a_finished_task().await;
    let text = scrape(&api).await;
    for family in [
        "cloudai_worker_up gauge",
        "cloudai_worker_cpu_usage_percent gauge",
        "cloudai_worker_memory_usage_percent gauge",
        "cloudai_worker_memory_used_bytes gauge",
        "cloudai_gpu_utilization_percent gauge",
        "cloudai_gpu_memory_used_bytes gauge",
        "cloudai_gpu_memory_free_bytes gauge",
        "cloudai_gpu_temperature_celsius gauge",
        "cloudai_gpu_power_watts gauge",
        "cloudai_gpu_energy_joules gauge",
        "cloudai_gpu_sm_clock_hertz gauge",
        "cloudai_gpu_memory_clock_hertz gauge",
        "cloudai_gpu_xid_errors gauge",
        "cloudai_task_cpu_usage_percent gauge",
        "cloudai_task_memory_bytes gauge",
        "cloudai_cluster_cpu_capacity_cores gauge",
        "cloudai_cluster_cpu_reserved_cores gauge",
        "cloudai_cluster_memory_capacity_bytes gauge",
        "cloudai_cluster_gpu_capacity gauge",
        "cloudai_cluster_gpu_reserved gauge",
        "cloudai_tasks gauge",
        "cloudai_heartbeats_received_total counter",
        "cloudai_heartbeats_dropped_total counter",
        "cloudai_heartbeats_rejected_total counter",
        "cloudai_heartbeats_rate_limited_total counter",
        "cloudai_history_buckets_dropped_total counter",
        "cloudai_alerts_firing gauge",
        "cloudai_heartbeat_handling_seconds histogram",
        "cloudai_scheduling_latency_seconds histogram",
    ] {
        assert!(text.contains(&format!("# TYPE {family}\n")), "missing family {family}:\n{text}");
    }
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no sample {prefix}:\n{text}"))
    };
    assert_eq!(value("cloudai_worker_up{worker_id=\"metrics-cpu\"}"), 1.0);
    assert_eq!(value("cloudai_worker_up{worker_id=\"metrics-gpu\"}"), 1.0);
    let cpu = value("cloudai_worker_cpu_usage_percent{worker_id=\"metrics-gpu\"}");
    assert!((0.0..=100.0).contains(&cpu));
    assert!(value("cloudai_worker_memory_total_bytes{worker_id=\"metrics-cpu\"}") > 1e8);
    assert_eq!(value("cloudai_tasks{state=\"completed\"}"), 1.0);
    assert_eq!(value("cloudai_cluster_gpu_capacity"), 2.0);
    assert_eq!(value("cloudai_cluster_cpu_capacity_cores"), 6.0);
    assert!(value("cloudai_heartbeats_received_total") >= 2.0);
    assert_eq!(value("cloudai_alerts_firing"), 0.0, "a healthy cluster");
    assert_eq!(value("cloudai_history_buckets_dropped_total"), 0.0);
    assert_eq!(value("cloudai_scheduling_latency_seconds_count"), 1.0);
    let gpu_lines: Vec<&str> =
        text.lines().filter(|l| l.starts_with("cloudai_gpu_temperature_celsius{")).collect();
    assert_eq!(gpu_lines.len(), 2, "{gpu_lines:?}");
    assert!(gpu_lines.iter().all(|l| l.contains("worker_id=\"metrics-gpu\"")
        && l.contains("uuid=\"GPU-")
        && l.contains("model=\"")));
    assert!(gpu_lines.iter().any(|l| l.contains("gpu=\"1\"")));

    if let Some(promtool) = tool("/usr/bin/promtool") {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("write");
        let out = child.wait_with_output().expect("promtool output");
        assert!(
            out.status.success(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for w in workers {
        w.stop().await;
    }
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_master() {
    let Some(prometheus) = tool("/usr/bin/prometheus") else { return };
    let (master, workers, _api) = cluster_with_a_finished_task().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let config = format!(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: cloudai\n    static_configs:\n      - targets: ['{}']\n",
        master.http_addr
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).expect("config");
    let mut server = Command::new(prometheus)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    let query = format!(
        "http://127.0.0.1:{port}/api/v1/query?query=cloudai_worker_cpu_usage_percent%7Bworker_id%3D%22metrics-gpu%22%7D"
    );
    let result =
        wait_until(Duration::from_secs(60), "Prometheus to have the worker's CPU series", || async {
            let resp = http_client().get(&query).send().await.ok()?;
            let body: serde_json::Value = resp.json().await.ok()?;
            let series = body["data"]["result"].as_array()?.first()?.clone();
            Some(series)
        })
        .await;
    assert_eq!(result["metric"]["job"], "cloudai");
    let cpu: f64 = result["value"][1].as_str().and_then(|v| v.parse().ok()).expect("a number");
    assert!((0.0..=100.0).contains(&cpu), "{result}");
    let _ = server.kill();
    let _ = server.wait();
    for w in workers {
        w.stop().await;
    }
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deploy_files_match_what_the_master_exports() {
    let (master, workers, api) = cluster_with_a_finished_task().await;
    let text = scrape(&api).await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    let dashboard = std::fs::read_to_string(root.join("grafana/cloudai-dashboard.json")).expect("dashboard");
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    assert!(exprs.len() >= 15, "{exprs:?}");
    // Every series a panel queries is one the master exports.
    for expr in &exprs {
        for name in expr
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("cloudai_"))
        {
            assert!(
                text.lines().any(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' '])),
                "dashboard queries {name}, which /metrics does not export"
            );
        }
    }
    if let Some(promtool) = tool("/usr/bin/promtool") {
        let out = Command::new(promtool)
            .args(["check", "config"])
            .arg(root.join("prometheus.yml"))
            .output()
            .expect("promtool");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    }
    for w in workers {
        w.stop().await;
    }
    master.shutdown().await;
}
