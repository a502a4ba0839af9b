//! Idle, slow and too many HTTP connections: none of them can hold the master's descriptors,
//! and `/health` keeps answering.

mod common;

use std::time::{Duration, Instant};

use cloudai_master::HttpLimits;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEADER_TIMEOUT: Duration = Duration::from_secs(1);

async fn master_with(max_connections: usize) -> cloudai_master::Master {
    let mut config = master_config(Duration::from_secs(30));
    config.http = HttpLimits { header_timeout: HEADER_TIMEOUT, max_connections };
    start_master(config).await
}

/// Reads until the server closes; what it sent, and how long that took.
async fn read_to_close(stream: &mut TcpStream) -> (String, Duration) {
    let started = Instant::now();
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "the master kept the connection open for 10 s: {}", String::from_utf8_lossy(&seen));
    (String::from_utf8_lossy(&seen).into_owned(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_and_idle_connections_are_closed() {
    let master = master_with(64).await;
    let addr = master.http_addr;

    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut half = TcpStream::connect(addr).await.expect("connect");
    half.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n").await.expect("half a request");
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("a whole request");

    let (said, after) = read_to_close(&mut silent).await;
    assert!(after < HEADER_TIMEOUT * 4, "a silent connection is closed after the header timeout: {after:?}");
    assert!(!said.contains("200 OK"), "{said}");
    let (said, _) = read_to_close(&mut half).await;
    assert!(!said.contains("200 OK"), "a half-sent request is never answered: {said}");
    let (said, after) = read_to_close(&mut idle).await;
    assert!(said.starts_with("HTTP/1.1 200 OK") && said.contains("healthy"), "{said}");
    assert!(after < HEADER_TIMEOUT * 4, "an idle keep-alive connection is closed too: {after:?}");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_ones_get_503_and_health_recovers() {
    let master = master_with(20).await;
    let (addr, api) = (master.http_addr, format!("http://{}", master.http_addr));
    let mut hogs = Vec::new();
    for _ in 0..20 {
        hogs.push(TcpStream::connect(addr).await.expect("connect"));
    }
    // Let the master accept all of them before the next one.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = TcpStream::connect(addr).await.expect("connect");
    let (said, _) = read_to_close(&mut over).await;
    assert!(said.starts_with("HTTP/1.1 503"), "{said}");
    let body = said.split("\r\n\r\n").nth(1).unwrap_or_default();
    let body: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body: {e}: {said}"));
    assert!(body["error"].as_str().is_some_and(|e| e.contains("too many connections (limit 20)")), "{body}");

    // The hogs are closed by the header timeout; then the master answers again.
    for hog in &mut hogs {
        read_to_close(hog).await;
    }
    let (status, health) = get_json(&format!("{api}/health")).await;
    assert_eq!((status, health["status"].as_str()), (200, Some("healthy")));
    master.shutdown().await;
}
