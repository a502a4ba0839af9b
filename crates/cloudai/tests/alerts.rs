//! Alerts end to end: a worker dies and comes back, tasks fail, rules files are checked,
//! and every firing and resolution reaches `GET /api/alerts` and a webhook.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use cloudai_alerts::RuleSet;
use common::*;
use nix::sys::signal::Signal;
use parking_lot::Mutex;
use serde_json::{Value, json};

/// A webhook endpoint that keeps every JSON body POSTed to it.
struct HookReceiver {
    url: reqwest::Url,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl HookReceiver {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind webhook receiver");
        let addr = listener.local_addr().expect("receiver address");
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route(
                "/hook",
                post(|State(sink): State<Arc<Mutex<Vec<Value>>>>, Json(body): Json<Value>| async move {
                    sink.lock().push(body);
                    StatusCode::OK
                }),
            )
            .with_state(bodies.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = reqwest::Url::parse(&format!("http://{addr}/hook")).expect("receiver url");
        Self { url, bodies }
    }

    /// Bodies received so far about `rule` (and `worker`, if given), in arrival order.
    fn about(&self, rule: &str, worker: Option<&str>) -> Vec<Value> {
        let matches =
            |b: &&Value| b["alert"]["rule"] == rule && worker.is_none_or(|w| b["alert"]["worker_id"] == w);
        self.bodies.lock().iter().filter(matches).cloned().collect()
    }

    /// Waits for a `status` event about `rule` on `worker` and returns it.
    async fn wait_for(&self, status: &str, rule: &str, worker: &str) -> Value {
        wait_until(DEADLINE, &format!("a {status} webhook for {rule} on {worker}"), || async {
            self.about(rule, Some(worker)).into_iter().find(|b| b["status"] == status)
        })
        .await
    }
}

/// `GET /api/alerts` with an optional query string; panics unless it answers 200.
async fn list_alerts(api: &str, query: &str) -> Vec<Value> {
    let (status, body) = get_json(&format!("{api}/api/alerts{query}")).await;
    assert_eq!(status, 200, "GET /api/alerts{query}: {body}");
    body["alerts"].as_array().unwrap_or_else(|| panic!("no alerts array in {body}")).clone()
}

fn find<'a>(alerts: &'a [Value], rule: &str, worker: Option<&str>) -> Option<&'a Value> {
    alerts.iter().find(|a| a["rule"] == rule && worker.is_none_or(|w| a["worker_id"] == w))
}

/// A `cloudai worker` process (so it can really die, with SIGKILL).
fn worker_process(grpc: std::net::SocketAddr, id: &str, data: &std::path::Path) -> Proc {
    let env = [
        ("MASTER_ADDR", format!("http://{grpc}")),
        ("WORKER_ID", id.to_string()),
        ("HEARTBEAT_INTERVAL", "200ms".to_string()),
        ("CLOUDAI_DRIVERS", "process".to_string()),
        ("WORKER_DATA_DIR", data.display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    Proc::spawn(&["worker"], &env, Some(data))
}

async fn wait_active(api: &str, ids: &[&str]) {
    wait_until(DEADLINE, &format!("workers {ids:?} active"), || async {
        let (_, workers) = get_json(&format!("{api}/workers")).await;
        ids.iter().all(|id| workers[*id]["is_active"] == true).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_worker_fires_worker_inactive_and_resolves_when_it_comes_back() {
    let hook = HookReceiver::start().await;
    let mut config = master_config(Duration::from_secs(1));
    config.alerts.eval_interval = Duration::from_millis(200);
    config.alerts.webhook_url = Some(hook.url.clone());
    let master = start_master(config).await;
    let api = format!("http://{}", master.http_addr);
    let data = tempfile::tempdir().expect("tempdir");

    let box1 = worker_process(master.grpc_addr, "gpu-box-1", data.path());
    let box2 = InProcessWorker::start(worker_config(master.grpc_addr, "gpu-box-2"));
    wait_active(&api, &["gpu-box-1", "gpu-box-2"]).await;
    assert_eq!(list_alerts(&api, "").await, Vec::<Value>::new(), "a healthy cluster has no alerts");

    // gpu-box-2 leaves cleanly; gpu-box-1 dies without a word.
    box2.stop().await;
    box1.signal(Signal::SIGKILL);
    drop(box1);

    let fired = wait_until(DEADLINE, "worker_inactive firing for gpu-box-1", || async {
        let alerts = list_alerts(&api, "").await;
        find(&alerts, "worker_inactive", Some("gpu-box-1")).filter(|a| a["status"] == "firing").cloned()
    })
    .await;
    assert_eq!(fired["severity"], "critical", "{fired}");
    assert!(fired["message"].as_str().is_some_and(|m| m.contains("gpu-box-1")), "{fired}");
    assert!(fired.get("resolved_at_ms").is_none(), "{fired}");
    let fired_at = fired["fired_at_ms"].as_i64().expect("fired_at_ms");
    // gpu-box-2 stopped first: had its leaving counted as an outage, it would fire by now too.
    let alerts = list_alerts(&api, "").await;
    assert!(alerts.iter().all(|a| a["worker_id"] != "gpu-box-2"), "a clean leave is no alert: {alerts:?}");
    assert!(find(&list_alerts(&api, "?status=firing").await, "worker_inactive", Some("gpu-box-1")).is_some());
    assert!(list_alerts(&api, "?status=resolved").await.is_empty());
    // Prometheus sees it too.
    let metrics = http_client().get(format!("{api}/metrics")).send().await.expect("scrape");
    let text = metrics.text().await.expect("metrics text");
    let firing = text.lines().find_map(|l| l.strip_prefix("cloudai_alerts_firing ")?.parse::<f64>().ok());
    assert_eq!(firing, Some(1.0), "{text}");

    let posted = hook.wait_for("firing", "worker_inactive", "gpu-box-1").await;
    assert_eq!(posted["alert"]["status"], "firing", "{posted}");
    assert_eq!(posted["alert"]["fired_at_ms"], fired_at, "{posted}");

    // The same worker id starts again: the alert resolves.
    let box1 = worker_process(master.grpc_addr, "gpu-box-1", data.path());
    let resolved = wait_until(DEADLINE, "worker_inactive resolved for gpu-box-1", || async {
        let alerts = list_alerts(&api, "?status=resolved").await;
        find(&alerts, "worker_inactive", Some("gpu-box-1")).cloned()
    })
    .await;
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    assert_eq!(resolved["fired_at_ms"], fired_at, "{resolved}");
    let resolved_at = resolved["resolved_at_ms"].as_i64().expect("resolved_at_ms");
    assert!(resolved_at >= fired_at, "{resolved}");
    assert!(list_alerts(&api, "?status=firing").await.is_empty());

    let posted = hook.wait_for("resolved", "worker_inactive", "gpu-box-1").await;
    assert_eq!(posted["alert"]["resolved_at_ms"], resolved_at, "{posted}");
    // One sender delivers in order: exactly one firing, then one resolved.
    let statuses: Vec<Value> =
        hook.about("worker_inactive", Some("gpu-box-1")).iter().map(|b| b["status"].clone()).collect();
    assert_eq!(statuses, [json!("firing"), json!("resolved")]);
    assert!(hook.about("worker_inactive", Some("gpu-box-2")).is_empty());

    drop(box1);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_tasks_fire_the_failure_rate_alert_and_cancels_do_not_count() {
    let rules = r#"{"rules": [{"name": "tasks_failing", "kind": "task_failure_rate",
        "threshold": 0.5, "window": "1m", "min_count": 2}]}"#;
    let mut config = master_config(Duration::from_secs(5));
    config.alerts.rules = RuleSet::from_json(rules).expect("valid rules");
    config.alerts.eval_interval = Duration::from_millis(200);
    let master = start_master(config).await;
    let api = format!("http://{}", master.http_addr);
    let worker = InProcessWorker::start(sized_worker(master.grpc_addr, "w1", 2.0, None));
    wait_active(&api, &["w1"]).await;

    // Two cancels (of tasks too big to place) and one success: 0 failed of 1 counted.
    for _ in 0..2 {
        let big = json!({"driver":"process","command":["true"],"cpu_required":64,"memory_required":1});
        let id = submit(&api, big).await["task_id"].as_str().expect("id").to_string();
        let resp = http_client().delete(format!("{api}/api/tasks/{id}")).send().await.expect("DELETE");
        assert_eq!(resp.status().as_u16(), 200);
    }
    let ok = submit(&api, shell_task("exit 0")).await;
    wait_status(&api, ok["task_id"].as_str().expect("id"), "completed").await;
    // Two failures: 2 of 3 failed, above 0.5 (2 of 5, below it, if cancels counted).
    for _ in 0..2 {
        let bad = submit(&api, shell_task("exit 1")).await;
        wait_status(&api, bad["task_id"].as_str().expect("id"), "failed").await;
    }

    let alert = wait_until(DEADLINE, "tasks_failing firing", || async {
        find(&list_alerts(&api, "?status=firing").await, "tasks_failing", None).cloned()
    })
    .await;
    let rate = alert["value"].as_f64().expect("value");
    assert!((rate - 2.0 / 3.0).abs() < 1e-9, "{alert}");
    assert_eq!(alert["threshold"], 0.5, "{alert}");
    assert!(alert.get("worker_id").is_none(), "a cluster-wide alert: {alert}");
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_status_filter_is_a_400_with_a_json_error() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let (status, body) = get_json(&format!("http://{}/api/alerts?status=bogus", master.http_addr)).await;
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap_or_else(|| panic!("no error field in {body}"));
    assert!(error.contains("status") && error.contains("bogus"), "{error}");
    master.shutdown().await;
}

async fn run_to_exit(env: &[(&str, &str)], dir: &std::path::Path) -> (Option<i32>, String) {
    let mut p = Proc::spawn(&["master", "--no-console"], env, Some(dir));
    let code = p.wait_exit(DEADLINE).await;
    // The exit code is in; give the stderr reader the last lines.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (code, p.output())
}

#[tokio::test]
async fn the_master_refuses_bad_alert_settings_naming_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rules = dir.path().join("alerts.json");
    std::fs::write(&rules, r#"{"rules": [{"name": "cpu_hot", "kind": "cpu_usage", "threshold": 150}]}"#)
        .expect("write rules");
    let rules = rules.display().to_string();
    let (code, out) = run_to_exit(&[("ALERT_RULES", &rules)], dir.path()).await;
    assert_eq!(code, Some(2), "{out}");
    for needle in ["ALERT_RULES", rules.as_str(), "cpu_hot", "threshold", "150"] {
        assert!(out.contains(needle), "message must name {needle:?}: {out}");
    }

    let missing = dir.path().join("missing.json").display().to_string();
    let (code, out) = run_to_exit(&[("ALERT_RULES", &missing)], dir.path()).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("ALERT_RULES") && out.contains(&missing), "{out}");

    for (var, value) in [("ALERT_WEBHOOK_URL", "https://hooks.example/x"), ("ALERT_EVAL_INTERVAL", "often")] {
        let (code, out) = run_to_exit(&[(var, value)], dir.path()).await;
        assert_eq!(code, Some(2), "{var}={value}: {out}");
        assert!(out.contains(var), "{var}={value}: message must name the variable: {out}");
    }
}
