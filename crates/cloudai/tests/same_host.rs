//! `cloudai dev` serves this machine only, and a master on a loopback address serves only
//! requests that name this machine and come from no web page but its own (DNS rebinding).

mod common;

use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One raw HTTP/1.1 request with the given extra header lines: (status, body).
async fn raw_get(addr: std::net::SocketAddr, path: &str, headers: &str) -> (u16, serde_json::Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.expect("read");
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or_default())
}

#[tokio::test]
async fn a_loopback_master_refuses_other_hosts_and_web_pages() {
    let master = start_master(master_config(Duration::from_secs(30))).await;
    let addr = master.http_addr;
    let port = addr.port();
    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), "[::1]".to_string()] {
        let (status, _) = raw_get(addr, "/api/tasks", &format!("Host: {host}\r\n")).await;
        assert_eq!(status, 200, "{host}");
    }
    // A domain pointed at 127.0.0.1 by its owner (DNS rebinding).
    let (status, body) = raw_get(addr, "/api/tasks", "Host: rebind.example\r\n").await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("DNS rebinding")), "{body}");
    // A page on another site, or on another local port, calling the API from a browser.
    for origin in ["http://evil.example", "http://localhost:3000"] {
        let headers = format!("Host: localhost:{port}\r\nOrigin: {origin}\r\n");
        let (status, body) = raw_get(addr, "/api/tasks", &headers).await;
        assert_eq!(status, 403, "{origin}: {body}");
        assert!(body["error"].as_str().is_some_and(|e| e.contains("Origin")), "{body}");
    }
    let own = format!("Host: localhost:{port}\r\nOrigin: http://localhost:{port}\r\n");
    assert_eq!(raw_get(addr, "/health", &own).await.0, 200, "its own origin is served");
    master.shutdown().await;
}

#[tokio::test]
async fn cloudai_dev_listens_on_loopback_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    // All interfaces become 127.0.0.1.
    let dev = Proc::spawn(
        &["dev", "--no-console", "--http-port", ":0", "--grpc-port", "0.0.0.0:0"],
        &[("CLOUDAI_DATA_DIR", &data)],
        None,
    );
    // (What follows each line's text: the address.)
    let http = dev.wait_for_line("HTTP API listening on").await;
    assert!(http.trim().starts_with("127.0.0.1:"), "{http}");
    let grpc = dev.wait_for_line("gRPC listening on").await;
    assert!(grpc.trim().starts_with("127.0.0.1:"), "{grpc}");
    drop(dev);

    // Any other address is refused, saying why.
    let mut dev = Proc::spawn(
        &["dev", "--no-console", "--http-port", "192.0.2.1:0"],
        &[("CLOUDAI_DATA_DIR", &data)],
        None,
    );
    let code = dev.wait_exit(Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = dev.output();
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("HTTP_PORT 192.0.2.1:0 is not a loopback address"), "{out}");
}
