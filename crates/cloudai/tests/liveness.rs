//! Workers that die, come back, and a master that restarts.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

async fn is_active(api: &str, id: &str) -> Option<bool> {
    let (status, body) = get_json(&format!("{api}/telemetry/{id}")).await;
    (status == 200).then(|| body["is_active"].as_bool()).flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_turns_inactive_and_active_again_when_restarted() {
    let master = start_master(master_config(Duration::from_millis(1000))).await;
    let api = format!("http://{}", master.http_addr);
    let env = [
        ("MASTER_ADDR", format!("http://{}", master.grpc_addr)),
        ("WORKER_ID", "worker-k".to_string()),
        ("HEARTBEAT_INTERVAL", "200ms".to_string()),
        ("CLOUDAI_DRIVERS", "process".to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut events = master.events.subscribe();

    let worker = Proc::spawn(&["worker"], &env, None);
    wait_until(DEADLINE, "worker-k active", || async {
        is_active(&api, "worker-k").await.filter(|a| *a).map(|_| ())
    })
    .await;

    // SIGKILL: no chance to unregister.
    worker.signal(Signal::SIGKILL);
    drop(worker);
    wait_until(DEADLINE, "worker-k inactive", || async {
        is_active(&api, "worker-k").await.filter(|a| !*a).map(|_| ())
    })
    .await;
    let (_, summary) = get_json(&format!("{api}/workers")).await;
    assert_eq!(summary["worker-k"]["is_active"], false, "still listed, as inactive");

    let restarted = Proc::spawn(&["worker"], &env, None);
    wait_until(DEADLINE, "worker-k active again", || async {
        is_active(&api, "worker-k").await.filter(|a| *a).map(|_| ())
    })
    .await;

    // Both changes were published as events.
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e);
    }
    use cloudai_master::events::ClusterEvent::*;
    assert!(
        seen.iter().any(|e| matches!(e, WorkerInactive { worker_id } if worker_id.as_str() == "worker-k")),
        "{seen:?}"
    );
    assert!(seen.iter().any(|e| matches!(e, WorkerActive { .. } | WorkerRegistered { .. })), "{seen:?}");
    drop(restarted);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_register_again_by_themselves_after_a_master_restart() {
    let (http_port, grpc_port) = (free_port(), free_port());
    let data = tempfile::tempdir().expect("tempdir");
    let master_env = [
        ("HTTP_PORT", format!("127.0.0.1:{http_port}")),
        ("GRPC_PORT", format!("127.0.0.1:{grpc_port}")),
        ("INACTIVITY_TIMEOUT", "2s".to_string()),
        ("CLOUDAI_DATA_DIR", data.path().display().to_string()),
        // Plain HTTP without tokens, on loopback.
        ("CLOUDAI_INSECURE", "true".to_string()),
    ];
    let master_env: Vec<(&str, &str)> = master_env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let api = format!("http://127.0.0.1:{http_port}");

    let master = Proc::spawn(&["master", "--no-console"], &master_env, None);
    master.wait_for_line("gRPC listening on").await;
    let grpc: std::net::SocketAddr = format!("127.0.0.1:{grpc_port}").parse().expect("addr");
    let workers: Vec<_> =
        ["worker-a", "worker-b"].iter().map(|id| InProcessWorker::start(worker_config(grpc, id))).collect();
    let both_active = || async {
        let (_, body) = get_json(&format!("{api}/workers")).await;
        let map = body.as_object()?.clone();
        (map.len() == 2 && map.values().all(|w| w["is_active"] == true)).then_some(())
    };
    wait_until(DEADLINE, "both workers active", both_active).await;

    // The master dies hard and comes back empty-handed on the same ports.
    master.signal(Signal::SIGKILL);
    drop(master);
    let master = Proc::spawn(&["master", "--no-console"], &master_env, None);
    master.wait_for_line("HTTP API listening on").await;
    wait_until(DEADLINE, "both workers registered again", both_active).await;
    assert!(master.output().contains("worker registered"), "{}", master.output());

    for w in workers {
        w.stop().await;
    }
}
