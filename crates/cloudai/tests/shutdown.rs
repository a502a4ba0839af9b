//! Stopping a master: every stage stops in order, and nothing it started is left running.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stage_stops_in_order_and_nothing_is_left_running() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    let worker = InProcessWorker::start(worker_config(master.grpc_addr, "worker-z"));
    let task = submit(&api, shell_task("sleep 30")).await;
    let id = task["task_id"].as_str().expect("task_id").to_string();
    wait_status(&api, &id, "running").await;

    let reports = master.shutdown().await;
    let order: Vec<&str> = reports.iter().map(|r| r.name).collect();
    assert_eq!(
        order,
        ["http server", "audit", "alerting", "task service", "telemetry manager", "history", "grpc server"],
        "ingress first (then the audit records it queued), storage last"
    );
    for r in &reports {
        assert!(r.stopped && r.left_running == 0, "stage {} left tasks running: {r:?}", r.name);
    }
    worker.kill();
}
