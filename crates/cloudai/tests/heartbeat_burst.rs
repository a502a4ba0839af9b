//! A heartbeat burst bigger than a worker's channel never blocks the RPC handler.

mod common;

use std::sync::Arc;
use std::time::Duration;

use cloudai_proto::v1 as pb;
use common::*;
use parking_lot::{Condvar, Mutex};

/// Blocks callers until opened.
#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    cv: Condvar,
}

impl Gate {
    fn wait(&self) {
        let mut open = self.open.lock();
        while !*open {
            self.cv.wait(&mut open);
        }
    }
    fn open(&self) {
        *self.open.lock() = true;
        self.cv.notify_all();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn burst_larger_than_the_channel_coalesces_and_keeps_the_latest() {
    let mut config = master_config(Duration::from_secs(30));
    config.telemetry.rate_limit = None; // this test is about the channel, not the limiter
    let master = start_master(config).await;
    let gate = Arc::new(Gate::default());
    // A consumer stuck on its first heartbeat: the channel (capacity 10) fills up.
    let stuck = gate.clone();
    master.telemetry.set_update_callback(Arc::new(move |_| stuck.wait()));

    let mut client =
        pb::master_service_client::MasterServiceClient::connect(format!("http://{}", master.grpc_addr))
            .await
            .expect("connect");
    client.register_worker(registration("bursty")).await.expect("register");

    const BURST: u32 = 100;
    let sending = async {
        for i in 1..=BURST {
            let hb = pb::Heartbeat {
                worker_id: "bursty".into(),
                cpu_usage: f64::from(i) / 2.0,
                memory_usage: 10.0,
                ..Default::default()
            };
            client.send_heartbeat(hb).await.expect("heartbeat accepted while the consumer is stuck");
        }
    };
    // If the handler waited on the stuck consumer, this would never finish.
    tokio::time::timeout(Duration::from_secs(30), sending).await.expect("heartbeat RPCs never block");

    let id = cloudai_domain::WorkerId::parse("bursty").expect("id");
    let before = master.telemetry.get_worker_telemetry(&id).expect("registered");
    assert_eq!(before.heartbeats_received, u64::from(BURST));
    assert!(before.heartbeats_dropped > 0, "the drop counter moves: {before:?}");

    gate.open();
    let latest = f64::from(BURST) / 2.0;
    let t = wait_until(DEADLINE, "the latest heartbeat to be stored", || async {
        master.telemetry.get_worker_telemetry(&id).filter(|t| t.cpu_usage == latest)
    })
    .await;
    assert!(t.heartbeats_dropped >= u64::from(BURST) - 10 - 2, "{t:?}");
    assert_eq!(master.telemetry.stats().heartbeats_dropped, t.heartbeats_dropped);
    master.shutdown().await;
}
