//! A loopback TCP proxy that counts the bytes each way (`bench heartbeats --count-bytes`).
//! It forwards bytes as they are, so it counts TLS records as well as h2c frames.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes seen by the counting proxy, each way.
#[derive(Default)]
pub struct WireBytes {
    up: AtomicU64,
    down: AtomicU64,
}

impl WireBytes {
    pub fn snapshot(&self) -> (u64, u64) {
        (self.up.load(Ordering::Relaxed), self.down.load(Ordering::Relaxed))
    }
}

/// Accepts loopback connections and forwards each to `target`, counting bytes.
pub async fn counting_proxy(target: String) -> anyhow::Result<(String, Arc<WireBytes>)> {
    let authority =
        target.split_once("://").map_or(target.as_str(), |(_, rest)| rest).trim_end_matches('/').to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let bytes = Arc::new(WireBytes::default());
    let counters = bytes.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (authority, counters) = (authority.clone(), counters.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&authority).await else { return };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::join!(
                    pump(client_read, server_write, &counters.up),
                    pump(server_read, client_write, &counters.down)
                );
            });
        }
    });
    Ok((format!("http://{addr}"), bytes))
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: &AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}
