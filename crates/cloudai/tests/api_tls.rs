//! The HTTP API of a secure master is HTTPS with a certificate from the cluster CA: a client
//! that trusts the CA gets in, one that does not fails the handshake, and plain HTTP is not
//! served. Checked with curl, as a user would.

mod common;

use std::process::Command;

use cloudai_master::{MasterConfig, Security, TlsConfig};
use common::*;

fn curl(args: &[&str]) -> (i32, String) {
    let out = Command::new("curl").args(["-sS", "--max-time", "10"]).args(args).output().expect("curl runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_client_trusting_the_cluster_ca_gets_through() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut config = MasterConfig::new(dir.path());
    config.security = Security::Tls(TlsConfig::new(dir.path()));
    let master = start_master(config).await;
    let port = master.http_addr.port();
    let ca = dir.path().join("pki/ca.crt");
    let url = format!("https://localhost:{port}/health");

    let answer = tokio::task::spawn_blocking({
        let (ca, url) = (ca.clone(), url.clone());
        move || curl(&["--cacert", ca.to_str().expect("path"), &url])
    })
    .await
    .expect("curl");
    assert_eq!(answer.0, 0, "with the CA: {}", answer.1);
    assert!(answer.1.contains("healthy"), "{}", answer.1);

    // Without the CA, curl refuses the certificate (exit 60: peer certificate not trusted).
    let refused = tokio::task::spawn_blocking({
        let url = url.clone();
        move || curl(&[&url])
    })
    .await
    .expect("curl");
    assert_eq!(refused.0, 60, "without the CA: {}", refused.1);

    // The address in the certificate works as well as the name.
    let by_ip = format!("https://127.0.0.1:{port}/health");
    let answer = tokio::task::spawn_blocking(move || curl(&["--cacert", ca.to_str().expect("path"), &by_ip]))
        .await
        .expect("curl");
    assert_eq!(answer.0, 0, "by address: {}", answer.1);

    // Plain HTTP on the same port gets no answer a client could mistake for the API.
    let plain = tokio::task::spawn_blocking(move || curl(&[&format!("http://localhost:{port}/health")]))
        .await
        .expect("curl");
    assert_ne!(plain.0, 0, "plain HTTP must fail: {}", plain.1);
    master.shutdown().await;
}
