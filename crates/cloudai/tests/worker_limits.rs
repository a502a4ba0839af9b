//! Workers the master no longer needs to know: a lost worker is forgotten after
//! `WORKER_FORGET_AFTER`, and no more than `MAX_WORKERS` are registered at once.

mod common;

use std::time::Duration;

use cloudai_domain::WorkerId;
use cloudai_master::WorkerLimits;
use cloudai_proto::v1 as pb;
use cloudai_store::{SqliteStore, Store, StoreConfig, TelemetryMinute};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_worker_is_forgotten_after_the_forget_delay() {
    let mut config = master_config(Duration::from_millis(300));
    config.tasks.loss_grace = Duration::from_millis(300);
    config.workers = WorkerLimits { forget_after: Duration::from_secs(2), ..WorkerLimits::default() };
    // Both have a stored minute of history from an earlier run.
    let database_url = config.database_url.clone();
    let minute_ago = cloudai_domain::time::unix_ms() / 60_000 * 60_000 - 60_000;
    let store = SqliteStore::open_url(&database_url, StoreConfig { init: true, ..StoreConfig::default() })
        .expect("store");
    let minutes = ["w-kept", "w-gone"].map(|w| TelemetryMinute {
        worker_id: WorkerId::parse(w).expect("id"),
        start_ms: minute_ago,
        data: vec![0],
    });
    store.append_telemetry_minutes(minutes.to_vec()).await.expect("minutes");
    store.close().await;
    drop(store);
    let master = start_master(config).await;
    let api = format!("http://{}", master.http_addr);
    let kept = InProcessWorker::start(worker_config(master.grpc_addr, "w-kept"));
    let gone = InProcessWorker::start(worker_config(master.grpc_addr, "w-gone"));
    wait_until(DEADLINE, "both registered", || async {
        let (_, w) = get_json(&format!("{api}/workers")).await;
        (w.as_object().map(|m| m.len()) == Some(2)).then_some(())
    })
    .await;
    gone.kill();
    // Inactive, then lost, then forgotten: gone from every list, while the live one stays.
    wait_until(DEADLINE, "w-gone forgotten", || async {
        let (_, w) = get_json(&format!("{api}/workers")).await;
        let w = w.as_object()?;
        (w.len() == 1 && w.contains_key("w-kept")).then_some(())
    })
    .await;
    let (status, _) = get_json(&format!("{api}/telemetry/w-gone")).await;
    assert_eq!(status, 404, "its telemetry is dropped too");
    let (status, _) = get_json(&format!("{api}/api/workers/w-gone")).await;
    assert_eq!(status, 404);
    let (_, all) = get_json(&format!("{api}/api/workers")).await;
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
    kept.stop().await;
    master.shutdown().await;

    // The forgotten worker's history left the store; the one that stopped cleanly keeps its.
    let store = SqliteStore::open_url(&database_url, StoreConfig::default()).expect("store");
    let stored = |w: &str| {
        let (store, id) = (&store, WorkerId::parse(w).expect("id"));
        async move { store.telemetry_minutes(&id, 0).await.expect("minutes").len() }
    };
    assert_eq!(stored("w-gone").await, 0, "forgotten: its minutes are deleted");
    assert!(stored("w-kept").await >= 1, "left cleanly: its minutes stay until the retention");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_past_max_workers_are_refused_until_one_leaves() {
    let mut config = master_config(Duration::from_secs(30));
    config.workers = WorkerLimits { max_workers: 2, ..WorkerLimits::default() };
    let master = start_master(config).await;
    let mut client =
        pb::master_service_client::MasterServiceClient::connect(format!("http://{}", master.grpc_addr))
            .await
            .expect("connect");
    let register = registration;
    client.register_worker(register("w1")).await.expect("first");
    client.register_worker(register("w2")).await.expect("second");
    let err = client.register_worker(register("w3")).await.expect_err("over the limit");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("MAX_WORKERS") && err.message().contains('2'), "{}", err.message());
    client.register_worker(register("w1")).await.expect("a registered worker may register again");
    let (_, workers) = get_json(&format!("http://{}/workers", master.http_addr)).await;
    assert_eq!(workers.as_object().map(|w| w.len()), Some(2), "the refused one holds nothing: {workers}");

    client.unregister_worker(pb::UnregisterWorkerRequest { worker_id: "w2".into() }).await.expect("leave");
    client.register_worker(register("w3")).await.expect("room again");
    master.shutdown().await;
}
