//! Tasks survive lost workers and master crashes.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use serde_json::json;

fn env_pairs(pairs: &[(&str, String)]) -> Vec<(String, String)> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
}

/// A `cloudai worker` process's environment: process driver, 200 ms heartbeats.
fn worker_env(master: &cloudai_master::Master, id: &str, data: &std::path::Path) -> Vec<(String, String)> {
    env_pairs(&[
        ("MASTER_ADDR", format!("http://{}", master.grpc_addr)),
        ("WORKER_ID", id.into()),
        ("HEARTBEAT_INTERVAL", "200ms".into()),
        ("CLOUDAI_DRIVERS", "process".into()),
        ("WORKER_DATA_DIR", data.display().to_string()),
    ])
}

/// Inactive after 1.5 s, tasks lost 1 s later: short, but with room for a slow CI machine to
/// stall a healthy worker's heartbeats.
async fn master_quick_to_lose_workers() -> cloudai_master::Master {
    let mut config = master_config(Duration::from_millis(1500));
    config.tasks.loss_grace = Duration::from_millis(1000);
    start_master(config).await
}

fn as_refs(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_task_runs_again_on_another_worker() {
    let master = master_quick_to_lose_workers().await;
    let api = format!("http://{}", master.http_addr);
    let data = tempfile::tempdir().expect("tempdir");
    let env = worker_env(&master, "doomed", data.path());
    let doomed = Proc::spawn(&["worker"], &as_refs(&env), None);
    doomed.wait_for_line("registered with master").await;

    let task = submit(&api, shell_task("echo run on $CLOUDAI_TASK_ID; sleep 2; echo finished")).await;
    let id = task["task_id"].as_str().expect("id");
    let running = wait_status(&api, id, "running").await;
    assert_eq!(running["worker_id"], "doomed");

    let rescuer = InProcessWorker::start(sized_worker(master.grpc_addr, "rescuer", 2.0, None));
    doomed.signal(Signal::SIGKILL);
    drop(doomed);

    let done = wait_status(&api, id, "completed").await;
    assert_eq!(done["worker_id"], "rescuer", "{done}");
    assert_eq!(done["attempt"], 2);
    // One log for both attempts, the second one announced.
    let output = task_output(&api, id).await;
    let second = output.find("[cloudai] attempt 2 on worker rescuer").unwrap_or_else(|| panic!("{output}"));
    assert!(output[second..].contains("finished"), "{output}");
    let (_, events) = get_json(&format!("{api}/api/tasks/{id}/events")).await;
    let reasons: Vec<&str> =
        events.as_array().expect("events").iter().filter_map(|e| e["reason"].as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("worker lost")), "{reasons:?}");
    rescuer.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_survive_a_master_killed_with_sigkill() {
    let (http_port, grpc_port) = (free_port(), free_port());
    let data = tempfile::tempdir().expect("tempdir");
    let env = env_pairs(&[
        ("HTTP_PORT", format!("127.0.0.1:{http_port}")),
        ("GRPC_PORT", format!("127.0.0.1:{grpc_port}")),
        ("INACTIVITY_TIMEOUT", "2s".into()),
        ("TASK_LOSS_GRACE", "2s".into()),
        ("CLOUDAI_DATA_DIR", data.path().display().to_string()),
        // Plain HTTP without tokens, on loopback.
        ("CLOUDAI_INSECURE", "true".into()),
    ]);
    let api = format!("http://127.0.0.1:{http_port}");
    let master = Proc::spawn(&["master", "--no-console"], &as_refs(&env), None);
    master.wait_for_line("HTTP API listening on").await;
    let grpc: std::net::SocketAddr = format!("127.0.0.1:{grpc_port}").parse().expect("addr");
    let worker = InProcessWorker::start(sized_worker(grpc, "steady", 1.0, None));

    // One runs (1 CPU), the others wait their turn.
    let mut ids = Vec::new();
    for i in 0..4 {
        let t = submit(
            &api,
            json!({
                "driver":"process","command":["sh","-c",format!("sleep 1; echo task {i} done")],
                "cpu_required":1,"memory_required":16
            }),
        )
        .await;
        ids.push(t["task_id"].as_str().expect("id").to_string());
    }
    wait_status(&api, &ids[0], "running").await;

    master.signal(Signal::SIGKILL);
    drop(master);
    // Down for a moment: the running task finishes meanwhile; its report waits for the master.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let master = Proc::spawn(&["master", "--no-console"], &as_refs(&env), None);
    master.wait_for_line("HTTP API listening on").await;

    let (_, all) = get_json(&format!("{api}/api/tasks")).await;
    assert_eq!(all["tasks"].as_array().map(Vec::len), Some(4), "every task is still there: {all}");
    for (i, id) in ids.iter().enumerate() {
        let done = wait_status(&api, id, "completed").await;
        assert_eq!(done["attempt"], 1, "no task ran twice: {done}");
        assert_eq!(task_output(&api, id).await, format!("task {i} done\n"));
    }
    worker.stop().await;
    drop(master);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_comes_back_is_told_to_stop_its_stale_copy() {
    let master = master_quick_to_lose_workers().await;
    let api = format!("http://{}", master.http_addr);
    let data = tempfile::tempdir().expect("tempdir");
    let mut env = worker_env(&master, "sleepy", data.path());
    env.push(("RUST_LOG".into(), "info".into()));
    let sleepy = Proc::spawn(&["worker"], &as_refs(&env), None);
    sleepy.wait_for_line("registered with master").await;
    let task = submit(&api, shell_task("sleep 8; echo done")).await;
    let id = task["task_id"].as_str().expect("id").to_string();
    wait_status(&api, &id, "running").await;

    // The worker freezes (its task keeps running), is declared lost, the task moves.
    sleepy.signal(Signal::SIGSTOP);
    let rescuer = InProcessWorker::start(sized_worker(master.grpc_addr, "rescuer", 2.0, None));
    wait_until(DEADLINE, "the task to run again elsewhere", || async {
        let t = get_task(&api, &id).await;
        (t["worker_id"] == "rescuer" && t["status"] == "running").then_some(())
    })
    .await;
    sleepy.signal(Signal::SIGCONT);
    // Its copy stops: told so by the master as stale, or first by itself, having been out of
    // contact longer than the master waits before running the task elsewhere.
    wait_until(DEADLINE, "the stale copy to stop", || async {
        let out = sleepy.output();
        (out.contains("stale") || out.contains("out of contact with the master")).then_some(())
    })
    .await;

    let done = wait_status(&api, &id, "completed").await;
    assert_eq!((done["worker_id"].as_str(), done["attempt"].as_u64()), (Some("rescuer"), Some(2)), "{done}");
    // Give the stale copy time to report; the task still completed exactly once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, events) = get_json(&format!("{api}/api/tasks/{id}/events")).await;
    let ended = events.as_array().expect("events").iter().filter(|e| e["to"] == "completed").count();
    assert_eq!(ended, 1, "{events}");
    // Only the second attempt's output: the stale copy's never reached the log.
    assert_eq!(task_output(&api, &id).await, "[cloudai] attempt 2 on worker rescuer\ndone\n");
    rescuer.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_acknowledged_before_a_restart_is_still_carried_out_after_it() {
    let mut config = master_config(Duration::from_millis(500));
    config.tasks.loss_grace = Duration::from_millis(500);
    config.tasks.restart_grace = Duration::from_secs(1);
    let master = start_master(config.clone()).await;
    let api = format!("http://{}", master.http_addr);
    // A worker that runs the task and then stops answering (its link is gone).
    let mut worker = RawWorker::join(master.grpc_addr, "w-cut-off").await;
    let task = submit(
        &api,
        json!({"driver": "process", "command": ["sleep", "600"], "cpu_required": 1, "memory_required": 8}),
    )
    .await;
    let id = task["task_id"].as_str().expect("id").to_string();
    let (started, attempt) = worker.next_start().await;
    assert_eq!(started, id);
    worker
        .report(&id, attempt, cloudai_proto::v1::TaskStatus::Running, None, String::new())
        .await
        .expect("running");
    wait_status(&api, &id, "running").await;

    let resp = http_client().delete(format!("{api}/api/tasks/{id}")).send().await.expect("DELETE");
    assert_eq!(resp.status().as_u16(), 202, "accepted: the worker is to stop it");
    master.shutdown().await;
    drop(worker);

    // The worker never comes back; a new one does. The task must not run again.
    let master = start_master(config).await;
    let api = format!("http://{}", master.http_addr);
    let spare = InProcessWorker::start(worker_config(master.grpc_addr, "w-spare"));
    let ended = wait_status(&api, &id, "cancelled").await;
    assert_eq!(ended["attempt"], 1, "never started a second time: {ended}");
    let (_, on_spare) = get_json(&format!("{api}/api/workers/w-spare/tasks")).await;
    assert!(
        on_spare["tasks"].as_array().is_none_or(Vec::is_empty),
        "nothing ran on the new worker: {on_spare}"
    );
    spare.stop().await;
    master.shutdown().await;
}
