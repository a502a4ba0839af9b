//! The webhook against a hand-rolled HTTP/1.1 server on 127.0.0.1:0.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudai_alerts::{
    Alert, AlertEvent, AlertKey, AlertStatus, Severity, Webhook, WebhookConfig, WebhookHandle, WebhookStats,
};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

fn event(status: AlertStatus, worker: &str) -> AlertEvent {
    let alert = Alert {
        key: AlertKey { rule: "cpu_high".into(), worker_id: Some(worker.into()), gpu: None },
        status,
        severity: Severity::Warning,
        value: 95.0,
        threshold: 90.0,
        since_ms: 1,
        fired_at_ms: 2,
        resolved_at_ms: (status == AlertStatus::Resolved).then_some(3),
        message: "cpu usage high".into(),
    };
    AlertEvent { status, alert }
}

#[derive(Debug)]
struct Request {
    at: Instant,
    answered: u16,
    body: serde_json::Value,
}

/// Reads one request (headers, then `Content-Length` bytes of body).
async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((head, buf[head_end..head_end + len].to_vec()))
}

/// Answers 500 to the first `failures` requests, then 200; one request per connection.
async fn serve(listener: TcpListener, failures: usize, log: Arc<Mutex<Vec<Request>>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else { return };
        let Some((head, body)) = read_request(&mut stream).await else { continue };
        assert!(head.starts_with("POST /hook HTTP/1.1\r\n"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        let answered = if log.lock().len() < failures { 500 } else { 200 };
        log.lock().push(Request {
            at: Instant::now(),
            answered,
            body: serde_json::from_slice(&body).unwrap(),
        });
        let reply = format!("HTTP/1.1 {answered} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        let _ = stream.write_all(reply.as_bytes()).await;
        let _ = stream.shutdown().await;
    }
}

async fn wait_for(what: &str, handle: &WebhookHandle, done: impl Fn(&WebhookStats) -> bool) -> WebhookStats {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = handle.stats();
        if done(&stats) {
            return stats;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {stats:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_with_backoff_and_delivers_in_order() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap()).parse().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(serve(listener, 2, log.clone()));
    let config = WebhookConfig {
        max_queue: 10,
        initial_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(80),
        max_attempts: 5,
        timeout: Duration::from_secs(5),
    };
    let shutdown = CancellationToken::new();
    let hook = Webhook::spawn(url, config, shutdown.clone()).unwrap();
    hook.notify(&event(AlertStatus::Firing, "w1"));
    hook.notify(&event(AlertStatus::Resolved, "w1"));
    let stats = wait_for("two deliveries", &hook, |s| s.sent == 2).await;
    assert_eq!(stats, WebhookStats { sent: 2, failed: 0, dropped: 0, queued: 0 });

    let log: Vec<Request> = std::mem::take(&mut *log.lock());
    let seen: Vec<(u16, &str)> =
        log.iter().map(|r| (r.answered, r.body["status"].as_str().unwrap())).collect();
    assert_eq!(seen, [(500, "firing"), (500, "firing"), (200, "firing"), (200, "resolved")]);
    assert_eq!(log[0].body, serde_json::to_value(event(AlertStatus::Firing, "w1")).unwrap());
    assert_eq!(log[3].body["alert"]["resolved_at_ms"], 3);
    // Backoff 50 ms, then doubled but capped at 80 ms.
    assert!(log[1].at - log[0].at >= Duration::from_millis(50), "{:?}", log[1].at - log[0].at);
    assert!(log[2].at - log[1].at >= Duration::from_millis(80), "{:?}", log[2].at - log[1].at);

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), hook.stopped()).await.expect("task stops on shutdown");
}

/// A port nothing listens on.
async fn dead_url() -> reqwest::Url {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/hook").parse().unwrap()
}

#[tokio::test]
async fn notify_never_blocks_when_the_receiver_is_down() {
    let config = WebhookConfig {
        max_queue: 3,
        initial_backoff: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(3600),
        max_attempts: 10,
        timeout: Duration::from_secs(1),
    };
    let shutdown = CancellationToken::new();
    let hook = Webhook::spawn(dead_url().await, config, shutdown.clone()).unwrap();
    // One runtime thread: the sender cannot run during this loop, so the counts are exact.
    let started = Instant::now();
    for i in 0..100 {
        hook.notify(&event(AlertStatus::Firing, &format!("w{i}")));
    }
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(hook.stats(), WebhookStats { sent: 0, failed: 0, dropped: 97, queued: 3 });
    // The sender takes one and sits in its hour-long backoff; the queue stays bounded.
    wait_for("the sender to take an event", &hook, |s| s.queued == 2).await;
    hook.notify(&event(AlertStatus::Resolved, "w0"));
    hook.notify(&event(AlertStatus::Resolved, "w1"));
    assert_eq!(hook.stats(), WebhookStats { sent: 0, failed: 0, dropped: 98, queued: 3 });
    // Shutdown interrupts the backoff.
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), hook.stopped()).await.expect("task stops on shutdown");
}

#[tokio::test]
async fn gives_up_after_max_attempts_and_goes_on() {
    let config = WebhookConfig {
        max_queue: 10,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        max_attempts: 3,
        timeout: Duration::from_secs(1),
    };
    let hook = Webhook::spawn(dead_url().await, config, CancellationToken::new()).unwrap();
    hook.notify(&event(AlertStatus::Firing, "w1"));
    hook.notify(&event(AlertStatus::Resolved, "w1"));
    let stats = wait_for("both events given up", &hook, |s| s.failed == 2).await;
    assert_eq!(stats, WebhookStats { sent: 0, failed: 2, dropped: 0, queued: 0 });
}

#[tokio::test]
async fn https_is_refused_without_tls() {
    let url = "https://example.com/hook".parse().unwrap();
    let err = Webhook::spawn(url, WebhookConfig::default(), CancellationToken::new()).unwrap_err();
    assert_eq!(err.to_string(), r#"webhook url scheme "https" unsupported, only http"#);
}
