//! A worker cut off from the master, as the master sees it: a `keep` task waits for its
//! worker up to `max_disconnect_secs`, and a result an earlier attempt finished during the
//! partition is kept when the next attempt has not started, discarded (and said so) when it has.

mod common;

use std::time::Duration;

use cloudai_proto::v1::TaskStatus as Wire;
use common::*;
use serde_json::json;

/// Inactive after 300 ms of silence, lost 300 ms later.
async fn master_quick_to_lose_workers() -> cloudai_master::Master {
    let mut config = master_config(Duration::from_millis(300));
    config.tasks.loss_grace = Duration::from_millis(300);
    start_master(config).await
}

/// Heartbeats for `worker` every 100 ms, so the master keeps it active.
fn keep_beating(worker: &RawWorker) -> tokio::task::JoinHandle<()> {
    let (client, id) = (worker.client.clone(), worker.id.clone());
    tokio::spawn(async move {
        loop {
            let hb = cloudai_proto::v1::Heartbeat { worker_id: id.clone(), ..Default::default() };
            let _ = client.clone().send_heartbeat(hb).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn events(api: &str, id: &str) -> Vec<String> {
    let (_, events) = get_json(&format!("{api}/api/tasks/{id}/events")).await;
    events.as_array().expect("events").iter().map(|e| e["reason"].as_str().unwrap_or("").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_task_waits_for_its_worker_up_to_max_disconnect() {
    let master = master_quick_to_lose_workers().await;
    let api = format!("http://{}", master.http_addr);
    let mut cut_off = RawWorker::join(master.grpc_addr, "cut-off").await;
    let mut task = shell_task("sleep 100");
    task["on_disconnect"] = json!("keep");
    task["max_disconnect_secs"] = json!(3);
    let id = submit(&api, task).await["task_id"].as_str().expect("id").to_owned();
    assert_eq!(get_task(&api, &id).await["on_disconnect"], "keep");
    let (started, attempt) = cut_off.next_start().await;
    assert_eq!((started.as_str(), attempt), (id.as_str(), 1));
    cut_off.report(&id, 1, Wire::Running, None, String::new()).await.expect("running");

    // The worker falls silent (it sends no heartbeat): lost after 0.6 s, but the task is kept.
    let submitted = std::time::Instant::now();
    let mut other = RawWorker::join(master.grpc_addr, "other").await;
    let beating = keep_beating(&other);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let t = get_task(&api, &id).await;
    assert_eq!((t["status"].as_str(), t["worker_id"].as_str()), (Some("running"), Some("cut-off")), "{t}");

    // At its max_disconnect it runs elsewhere, and not before.
    let (moved, attempt) = other.next_start().await;
    assert_eq!((moved.as_str(), attempt), (id.as_str(), 2));
    assert!(submitted.elapsed() >= Duration::from_millis(2500), "moved after {:?}", submitted.elapsed());
    beating.abort();
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_finished_during_a_partition_is_kept_when_no_newer_attempt_started() {
    let master = master_quick_to_lose_workers().await;
    let api = format!("http://{}", master.http_addr);
    let mut cut_off = RawWorker::join(master.grpc_addr, "cut-off").await;
    let id = submit(&api, shell_task("true")).await["task_id"].as_str().expect("id").to_owned();
    let _ = cut_off.next_start().await;
    cut_off.report(&id, 1, Wire::Running, None, String::new()).await.expect("running");

    // Lost while running; nowhere else to go, so it waits in the queue.
    wait_until(DEADLINE, "the task back in the queue", || async {
        (get_task(&api, &id).await["status"] == "pending").then_some(())
    })
    .await;
    // The partition heals and the worker tells how attempt 1 ended.
    cut_off.report(&id, 1, Wire::Completed, Some(0), String::new()).await.expect("accepted");
    let done = wait_status(&api, &id, "completed").await;
    assert_eq!(done["worker_id"], "cut-off", "{done}");
    let reasons = events(&api, &id).await;
    assert!(
        reasons.iter().any(|r| r == "attempt 1 completed on worker cut-off during the partition; kept"),
        "{reasons:?}"
    );
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_result_is_discarded_and_said_so_when_the_newer_attempt_runs() {
    let master = master_quick_to_lose_workers().await;
    let api = format!("http://{}", master.http_addr);
    let mut cut_off = RawWorker::join(master.grpc_addr, "cut-off").await;
    let id = submit(&api, shell_task("true")).await["task_id"].as_str().expect("id").to_owned();
    let _ = cut_off.next_start().await;
    cut_off.report(&id, 1, Wire::Running, None, String::new()).await.expect("running");

    let mut rescuer = RawWorker::join(master.grpc_addr, "rescuer").await;
    // The rescuer keeps heartbeating; the cut-off worker does not.
    let beating = keep_beating(&rescuer);
    let (moved, attempt) = rescuer.next_start().await;
    assert_eq!((moved.as_str(), attempt), (id.as_str(), 2));
    rescuer.report(&id, 2, Wire::Running, None, String::new()).await.expect("running");

    cut_off.report(&id, 1, Wire::Completed, Some(0), String::new()).await.expect("answered");
    let reasons = events(&api, &id).await;
    let said =
        "attempt 1 completed on worker cut-off during the partition; discarded, attempt 2 already running";
    assert!(reasons.iter().any(|r| r == said), "{reasons:?}");
    let t = get_task(&api, &id).await;
    assert_eq!((t["status"].as_str(), t["worker_id"].as_str()), (Some("running"), Some("rescuer")), "{t}");
    rescuer.report(&id, 2, Wire::Completed, Some(0), String::new()).await.expect("completed");
    wait_status(&api, &id, "completed").await;
    beating.abort();
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_attempt_runs_again_without_spending_a_retry_and_keeps_its_place() {
    let master = master_quick_to_lose_workers().await;
    let api = format!("http://{}", master.http_addr);
    let mut worker = RawWorker::join(master.grpc_addr, "w").await;
    let beating = keep_beating(&worker);
    let mut first = shell_task("true");
    first["max_retries"] = json!(0);
    first["cpu_required"] = json!(4);
    let id = submit(&api, first).await["task_id"].as_str().expect("id").to_owned();
    let _ = worker.next_start().await;
    // Submitted later, waiting behind it.
    let mut later = shell_task("true");
    later["cpu_required"] = json!(4);
    let later = submit(&api, later).await["task_id"].as_str().expect("id").to_owned();

    use cloudai_proto::v1 as pb;
    let interrupted = pb::TaskStatusReport {
        worker_id: "w".into(),
        task_id: id.clone(),
        attempt: 1,
        timestamp_ms: cloudai_domain::time::unix_ms(),
        update: Some(pb::task_status_report::Update::Interrupted(pb::Interrupted {
            cause: pb::Interruption::Environment.into(),
            message: "cannot create working folder: Read-only file system".into(),
        })),
    };
    worker.client.clone().report_task_status(interrupted).await.expect("accepted");
    // With no retry left it still runs again, before the task submitted after it.
    let (next, attempt) = worker.next_start().await;
    assert_eq!((next.as_str(), attempt), (id.as_str(), 2), "not {later}");
    let reasons = events(&api, &id).await;
    assert!(
        reasons.iter().any(|r| r.starts_with("attempt 1 interrupted on worker w (environment)")
            && r.ends_with("queued again (not counted as a retry)")),
        "{reasons:?}"
    );
    beating.abort();
    master.shutdown().await;
}
