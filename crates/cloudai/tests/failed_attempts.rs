//! The limit on failed token attempts is the operator's to set: a `cloudai master` started
//! with a higher `--max-failed-token-attempts` (MAX_FAILED_TOKEN_ATTEMPTS) still serves the
//! right token after more bad ones than the default allows, and still limits past its own
//! bound. Found by schemathesis, whose auth probes (one bad token per operation) locked the
//! fuzzer's valid admin token out with 429 while the limit was fixed at 10.

mod common;

use common::*;

/// A `cloudai master` process on free loopback ports, and its admin token and CA.
async fn master(extra: &[&str]) -> (Proc, String, reqwest::Client, String) {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let (http, grpc) = (free_port(), free_port());
    let (http_addr, grpc_addr) = (format!("127.0.0.1:{http}"), format!("127.0.0.1:{grpc}"));
    let data = dir.join("data");
    let mut args = vec!["master", "--http-port", &http_addr, "--grpc-port", &grpc_addr, "--no-console"];
    let data_arg = data.to_str().expect("utf-8 path").to_string();
    args.extend(["--data-dir", &data_arg]);
    args.extend(extra);
    let proc = Proc::spawn(&args, &[], Some(&dir));
    proc.wait_for_line("HTTP API listening").await;
    let admin = std::fs::read_to_string(data.join("admin.token")).expect("admin.token");
    let ca = std::fs::read_to_string(data.join("pki/ca.crt")).expect("ca.crt");
    (proc, admin.trim().to_string(), tls_client(&ca), format!("https://localhost:{http}"))
}

async fn status(client: &reqwest::Client, url: &str, token: &str) -> u16 {
    let resp = client.get(url).bearer_auth(token).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    resp.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_raises_the_limit_on_failed_token_attempts() {
    let (_master, admin, client, base) = master(&["--max-failed-token-attempts", "30"]).await;
    let url = format!("{base}/api/tasks");
    let guess = format!("cai_{}_{}", &admin[4..16], "0".repeat(64));
    // Twice the default's bound of bad tokens, as a fuzzer probing every operation sends.
    for _ in 0..20 {
        assert_eq!(status(&client, &url, &guess).await, 401);
    }
    assert_eq!(status(&client, &url, &admin).await, 200, "the right token still works");
    for _ in 20..30 {
        assert_eq!(status(&client, &url, &guess).await, 401);
    }
    assert_eq!(status(&client, &url, &guess).await, 429, "past the raised bound, the address is limited");
    assert_eq!(status(&client, &url, &admin).await, 429);
}

#[tokio::test]
async fn the_limit_must_be_at_least_one() {
    let out = std::process::Command::new(bin())
        .args(["master", "--max-failed-token-attempts", "0"])
        .env("XDG_CONFIG_HOME", tempfile::tempdir().expect("tempdir").path())
        .output()
        .expect("run cloudai");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--max-failed-token-attempts"), "{stderr}");
}
