//! `bench heartbeats` against an in-process master over mTLS: every simulated worker joins,
//! heartbeats on a connection of its own, and the master accepts each as itself.

use std::time::Duration;

use clap::Parser;
use cloudai_bench::heartbeats::{self, HeartbeatArgs};
use cloudai_master::{Master, MasterConfig, Security, TlsConfig};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: HeartbeatArgs,
}

fn args(flags: &[&str]) -> HeartbeatArgs {
    let argv = ["bench"].iter().chain(flags).copied();
    Cli::try_parse_from(argv).expect("flags").args
}

/// A TLS master (its CA made in a fresh data folder) on loopback, and the folder.
async fn tls_master() -> (Master, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tmp");
    let mut config = MasterConfig::new(dir.path());
    config.security = Security::Tls(TlsConfig::new(dir.path()));
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    (Master::start(config, http, grpc).await.expect("master starts"), dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_workers_join_and_heartbeat_over_mtls() {
    let (master, dir) = tls_master().await;
    let address = format!("https://127.0.0.1:{}", master.grpc_addr.port());
    // The master's own secret file, the CA fingerprint read beside it.
    let token_file = dir.path().join("pki/join.token");
    let flags = [
        "--master",
        &address,
        "--join-token-file",
        token_file.to_str().expect("utf-8 path"),
        "--workers",
        "20",
        "--interval",
        "200ms",
        "--duration",
        "1s",
        "--settle",
        "100ms",
    ];
    let result = tokio::time::timeout(Duration::from_secs(60), heartbeats::run(args(&flags)))
        .await
        .expect("within a minute")
        .expect("bench runs");
    assert_eq!(result["tls"], true, "{result}");
    assert_eq!(result["connections"], 20, "one connection per worker: {result}");
    assert_eq!(result["join_errors"], 0, "{result}");
    assert_eq!(result["register_errors"], 0, "{result}");
    assert_eq!(result["errors"], 0, "{result}");
    assert!(result["heartbeats_sent"].as_u64().is_some_and(|n| n >= 20), "{result}");
    assert!(result["join_p99_ms"].as_f64().is_some(), "{result}");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_address_needs_the_join_token_and_a_token_needs_https() {
    let without = heartbeats::run(args(&["--master", "https://127.0.0.1:1", "--workers", "1"]))
        .await
        .expect_err("no token");
    assert!(format!("{without:#}").contains("--join-token"), "{without:#}");
    let token = format!("cloudai-join.{}.{}", "ab".repeat(32), "cd".repeat(32));
    let plain = heartbeats::run(args(&["--master", "http://127.0.0.1:1", "--join-token", &token]))
        .await
        .expect_err("token over plain text");
    assert!(format!("{plain:#}").contains("https://"), "{plain:#}");
}
