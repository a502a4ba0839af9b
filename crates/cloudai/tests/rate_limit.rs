//! A worker that floods the master with heartbeats is slowed down; others keep their rate.

mod common;

use std::time::{Duration, Instant};

use cloudai_master::telemetry::RateLimit;
use cloudai_proto::v1 as pb;
use common::*;

type Client = pb::master_service_client::MasterServiceClient<tonic::transport::Channel>;

async fn registered(addr: std::net::SocketAddr, id: &str) -> Client {
    let mut client = Client::connect(format!("http://{addr}")).await.expect("connect");
    let req = registration(id);
    client.register_worker(req).await.expect("register");
    client
}

fn heartbeat(id: &str) -> pb::Heartbeat {
    pb::Heartbeat { worker_id: id.into(), cpu_usage: 10.0, memory_usage: 20.0, ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_worker_is_limited_while_others_keep_their_rate() {
    let mut config = master_config(Duration::from_secs(5));
    config.telemetry.rate_limit = Some(RateLimit { per_second: 5.0, burst: 5.0 });
    let master = start_master(config).await;
    let mut flooder = registered(master.grpc_addr, "flooder").await;
    let mut steady = registered(master.grpc_addr, "steady").await;
    let window = Duration::from_secs(2);

    let flood = async {
        let (mut ok, mut limited, mut retry_hint) = (0u32, 0u32, None);
        let start = Instant::now();
        while start.elapsed() < window {
            match flooder.send_heartbeat(heartbeat("flooder")).await {
                Ok(_) => ok += 1,
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                    assert!(status.message().contains("retry after"), "{}", status.message());
                    retry_hint = status
                        .metadata()
                        .get("retry-after-ms")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    limited += 1;
                }
            }
        }
        (ok, limited, retry_hint)
    };
    // Three heartbeats a second: under the limit, all accepted while the other floods.
    let steady_beats = async {
        let mut refused = 0;
        for _ in 0..6 {
            if steady.send_heartbeat(heartbeat("steady")).await.is_err() {
                refused += 1;
            }
            tokio::time::sleep(Duration::from_millis(333)).await;
        }
        refused
    };
    let ((ok, limited, hint), refused) = tokio::join!(flood, steady_beats);
    assert_eq!(refused, 0, "the steady worker keeps its rate");
    assert!(limited > 100, "the flood is refused: {ok} accepted, {limited} limited");
    // Burst of 5 plus 5 per second over ~2 s, with slack for timing.
    assert!((8..=20).contains(&ok), "{ok} accepted");
    let hint: u64 = hint.expect("retry-after-ms metadata").parse().expect("a number");
    assert!((1..=1000).contains(&hint), "{hint}");
    let stats = master.telemetry.stats();
    assert_eq!(stats.heartbeats_rate_limited, u64::from(limited));
    let steady_id = cloudai_domain::WorkerId::parse("steady").expect("id");
    assert_eq!(master.telemetry.get_worker_telemetry(&steady_id).map(|t| t.heartbeats_received), Some(6));
    // A limited worker is still alive.
    let flooder_id = cloudai_domain::WorkerId::parse("flooder").expect("id");
    assert_eq!(master.telemetry.get_worker_telemetry(&flooder_id).map(|t| t.is_active), Some(true));
    master.shutdown().await;
}
