//! A user's first session: start a master, join workers, look at the cluster.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn plausible_percent(v: &Value) -> bool {
    v.as_f64().is_some_and(|p| (0.0..=100.0).contains(&p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_join_and_report_plausible_telemetry() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);

    // Each compresses its heartbeats differently; the master accepts them all.
    use cloudai_proto::Compression;
    let mut workers = Vec::new();
    for (id, compression) in
        [("worker-1", Compression::Zstd), ("worker-2", Compression::Gzip), ("worker-3", Compression::None)]
    {
        let mut config = worker_config(master.grpc_addr, id);
        config.compression = compression;
        if id == "worker-3" {
            config.simulated_gpus = Some(2);
        }
        workers.push(InProcessWorker::start(config));
    }

    let telemetry = wait_until(DEADLINE, "3 workers with a heartbeat", || async {
        let (status, body) = get_json(&format!("{api}/telemetry")).await;
        assert_eq!(status, 200);
        let map = body.as_object()?;
        let reported = map.values().filter(|t| t["last_update"].as_i64().unwrap_or(0) > 0).count();
        (map.len() == 3 && reported == 3).then(|| body.clone())
    })
    .await;

    for id in ["worker-1", "worker-2", "worker-3"] {
        let t = &telemetry[id];
        assert_eq!(t["worker_id"], id);
        assert_eq!(t["is_active"], true, "{id}: {t}");
        assert!(plausible_percent(&t["cpu_usage"]), "{id} cpu: {t}");
        assert!(plausible_percent(&t["memory_usage"]), "{id} memory: {t}");
        assert!(t["memory_usage"].as_f64().unwrap_or(0.0) > 0.0, "a machine uses some memory: {t}");
        assert!(t["memory_total_mb"].as_u64().unwrap_or(0) > 0, "{t}");
        assert!(t["running_tasks"].is_array());
    }
    let gpus = telemetry["worker-3"]["gpus"].as_array().expect("gpus list");
    assert_eq!(gpus.len(), 2, "simulated GPUs are reported: {}", telemetry["worker-3"]);
    assert!(plausible_percent(&telemetry["worker-3"]["gpu_usage"]));
    assert_eq!(telemetry["worker-1"]["gpus"].as_array().map(Vec::len), Some(0), "no GPU: empty list");

    let (status, one) = get_json(&format!("{api}/telemetry/worker-2")).await;
    assert_eq!(status, 200);
    assert_eq!(one["worker_id"], "worker-2");

    let (_, summary) = get_json(&format!("{api}/workers")).await;
    let summary = summary.as_object().expect("map of workers");
    assert_eq!(summary.len(), 3);
    for (id, w) in summary {
        assert_eq!(w["is_active"], true, "{id}");
        assert!(plausible_percent(&w["cpu_usage"]), "{id}");
        assert_eq!(w["task_count"], 0);
        assert!(w["last_update"].as_i64().unwrap_or(0) > 0);
    }

    let (_, list) = get_json(&format!("{api}/api/workers")).await;
    let list = list.as_array().expect("array of workers");
    assert_eq!(list.len(), 3);
    assert!(list.iter().all(|w| w["cpu_cores"].as_f64().unwrap_or(0.0) > 0.0));
    let (status, metrics) = get_json(&format!("{api}/api/workers/worker-3/metrics")).await;
    assert_eq!(status, 200);
    assert_eq!(metrics["gpus"].as_array().map(Vec::len), Some(2));

    let (status, health) = get_json(&format!("{api}/health")).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy");
    assert!(health["time"].as_i64().unwrap_or(0) > 1_700_000_000);

    // Workers that stop cleanly unregister.
    for w in workers {
        w.stop().await;
    }
    let (_, after) = get_json(&format!("{api}/workers")).await;
    assert_eq!(after.as_object().map(|m| m.len()), Some(0), "{after}");
    master.shutdown().await;
}

#[tokio::test]
async fn unknown_worker_is_a_404_with_a_json_error() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    for path in ["/telemetry/nope", "/api/workers/nope", "/api/workers/nope/metrics", "/telemetry/bad%20id"] {
        let (status, body) = get_json(&format!("{api}{path}")).await;
        assert_eq!(status, 404, "{path}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("not found")), "{path}: {body}");
    }
    let (status, body) = get_json(&format!("{api}/no/such/endpoint")).await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
    master.shutdown().await;
}

#[tokio::test]
async fn heartbeat_from_an_unknown_worker_asks_it_to_register() {
    use cloudai_proto::v1 as pb;
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let mut client =
        pb::master_service_client::MasterServiceClient::connect(format!("http://{}", master.grpc_addr))
            .await
            .expect("connect");
    let hb = pb::Heartbeat { worker_id: "ghost".into(), ..Default::default() };
    let err = client.send_heartbeat(hb).await.expect_err("unknown worker is refused");
    assert_eq!(err.code(), tonic::Code::NotFound);
    assert!(err.message().contains("register again"), "{}", err.message());

    let bad = pb::Heartbeat { worker_id: "no spaces allowed".into(), ..Default::default() };
    let err = client.send_heartbeat(bad).await.expect_err("bad id");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("worker_id"), "{}", err.message());
    assert_eq!(master.telemetry.stats().heartbeats_rejected, 1);
    master.shutdown().await;
}
