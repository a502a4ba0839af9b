//! Configuration from flags, environment and `.env`; bad values are named.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;

async fn run_to_exit(
    args: &[&str],
    env: &[(&str, &str)],
    dir: Option<&std::path::Path>,
) -> (Option<i32>, String) {
    let mut p = Proc::spawn(args, env, dir);
    let code = p.wait_exit(Duration::from_secs(20)).await;
    // Let the stderr reader catch up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    (code, p.output())
}

#[tokio::test]
async fn bad_values_name_the_variable_and_exit_2() {
    let cases: &[(&[&str], &str, &str)] = &[
        (&["master"], "INACTIVITY_TIMEOUT", "soon"),
        (&["master"], "HTTP_PORT", "8080"),
        (&["master"], "GRPC_PORT", ":99999"),
        (&["master"], "TELEMETRY_CHANNEL_CAPACITY", "0"),
        (&["master"], "HEARTBEAT_RATE_LIMIT", "fast"),
        (&["master"], "PLACEMENT_POLICY", "random"),
        (&["master"], "HISTORY_WINDOW", "90s"),
        (&["master"], "HISTORY_RETENTION", "forever"),
        (&["worker"], "GRPC_COMPRESSION", "lz4"),
        (&["worker"], "HEARTBEAT_INTERVAL", "fast"),
        (&["worker"], "WORKER_CPUS", "-1"),
        (&["worker"], "WORKER_ID", "has spaces"),
        (&["worker"], "CLOUDAI_DRIVERS", "k8s"),
        (&["worker"], "MASTER_ADDR", "ftp://x"),
        (&["dev"], "CLOUDAI_SIMULATED_GPUS", "many"),
    ];
    for (args, var, value) in cases {
        let (code, out) = run_to_exit(args, &[(var, value)], None).await;
        assert_eq!(code, Some(2), "{var}={value}: {out}");
        assert!(out.contains(var), "{var}={value}: message must name the variable: {out}");
    }
}

#[tokio::test]
async fn dotenv_is_read_and_the_environment_wins() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(".env"),
        "HTTP_PORT=\"127.0.0.1:0\"\nGRPC_PORT=127.0.0.1:0\nINACTIVITY_TIMEOUT=bad\n",
    )
    .expect("write .env");
    // .env alone: its bad value is reported.
    let (code, out) = run_to_exit(&["master", "--no-console"], &[], Some(dir.path())).await;
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("INACTIVITY_TIMEOUT"), "{out}");

    // The environment overrides .env; .env still supplies the addresses.
    let data = dir.path().join("data");
    let data = data.display().to_string();
    let master = Proc::spawn(
        &["master", "--no-console"],
        &[("INACTIVITY_TIMEOUT", "3s"), ("CLOUDAI_DATA_DIR", &data), ("CLOUDAI_INSECURE", "true")],
        Some(dir.path()),
    );
    let http = master.wait_for_line("HTTP API listening on").await;
    assert!(http.starts_with("127.0.0.1:"), "{http}");
    assert_ne!(http, "127.0.0.1:0", "the real bound port is logged");
    let grpc = master.wait_for_line("gRPC listening on").await;
    assert!(grpc.starts_with("127.0.0.1:") && grpc != "127.0.0.1:0", "{grpc}");
    let (status, body) = get_json(&format!("http://{http}/health")).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("healthy")));
    drop(master);
}

#[tokio::test]
async fn sigterm_shuts_the_master_down_in_order_and_exits_0() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let mut master = Proc::spawn(
        &["master", "--no-console", "--http-port", "127.0.0.1:0", "--grpc-port", "127.0.0.1:0"],
        &[("CLOUDAI_DATA_DIR", &data), ("CLOUDAI_INSECURE", "true")],
        None,
    );
    let grpc = master.wait_for_line("gRPC listening on").await;
    let grpc: std::net::SocketAddr = grpc.parse().expect("grpc addr");
    let worker = InProcessWorker::start(worker_config(grpc, "worker-s"));
    master.wait_for_line("worker registered").await;

    master.signal(Signal::SIGTERM);
    let code = master.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0), "{}", master.output());
    let out = master.output();
    let order: Vec<usize> = ["http server stopped", "telemetry manager stopped", "grpc server stopped"]
        .iter()
        .map(|m| out.find(m).unwrap_or_else(|| panic!("missing {m:?} in:\n{out}")))
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "shutdown order HTTP → telemetry → gRPC:\n{out}");
    worker.kill();
}

#[tokio::test]
async fn a_second_master_on_the_same_data_folder_refuses_naming_the_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let loopback = ["--no-console", "--http-port", "127.0.0.1:0", "--grpc-port", "127.0.0.1:0"];
    let first = Proc::spawn(&[&["dev"][..], &loopback].concat(), &[("CLOUDAI_DATA_DIR", &data)], None);
    first.wait_for_line("HTTP API listening on").await;
    let (code, out) =
        run_to_exit(&[&["dev"][..], &loopback].concat(), &[("CLOUDAI_DATA_DIR", &data)], None).await;
    assert_ne!(code, Some(0), "{out}");
    let pid = first.child.id();
    assert!(out.contains("in use by another cloudai master") && out.contains(&format!("pid {pid}")), "{out}");
    drop(first);
}

#[tokio::test]
async fn a_truncated_database_is_refused_until_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    std::fs::write(dir.path().join("cloudai.db"), b"").expect("an empty database file");
    let args = ["master", "--no-console", "--http-port", "127.0.0.1:0", "--grpc-port", "127.0.0.1:0"];
    let (code, out) = run_to_exit(&args, &[("CLOUDAI_DATA_DIR", &data)], None).await;
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("exists but is empty") && out.contains("--init"), "{out}");

    let master = Proc::spawn(&[&args[..], &["--init"]].concat(), &[("CLOUDAI_DATA_DIR", &data)], None);
    master.wait_for_line("HTTP API listening on").await;
}
