//! The webhook notifier: one background task drains a bounded queue and POSTs each event,
//! retrying with exponential backoff. Callers only ever take a short lock to enqueue, so
//! alerting never holds up telemetry.

use std::collections::VecDeque;
use std::error::Error as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::alert::AlertEvent;

#[derive(Debug, Clone, PartialEq)]
pub struct WebhookConfig {
    /// Events waiting beyond this drop the oldest first.
    pub max_queue: usize,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Attempts per event, the first included.
    pub max_attempts: u32,
    /// Per attempt.
    pub timeout: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_queue: 1000,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_attempts: 5,
            timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhook url scheme {0:?} unsupported, only http")]
    UnsupportedScheme(String),
    #[error("cannot build the webhook http client")]
    Client(#[source] reqwest::Error),
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct WebhookStats {
    /// Events delivered (a 2xx answer).
    pub sent: u64,
    /// Events given up on after `max_attempts`.
    pub failed: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
    /// Events waiting now.
    pub queued: u64,
}

#[derive(Debug)]
struct Shared {
    queue: Mutex<VecDeque<AlertEvent>>,
    wake: Notify,
    max_queue: usize,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    /// Cancelled when the background task has exited.
    stopped: CancellationToken,
}

/// Cheap to clone; all clones feed the same background task.
#[derive(Debug, Clone)]
pub struct WebhookHandle {
    shared: Arc<Shared>,
}

pub struct Webhook;

impl Webhook {
    /// Starts the background task on the current tokio runtime. It stops when `shutdown` is
    /// cancelled, abandoning queued events (see [`WebhookHandle::stopped`]).
    pub fn spawn(
        url: reqwest::Url,
        config: WebhookConfig,
        shutdown: CancellationToken,
    ) -> Result<WebhookHandle, WebhookError> {
        if url.scheme() != "http" {
            return Err(WebhookError::UnsupportedScheme(url.scheme().to_owned()));
        }
        let client =
            reqwest::Client::builder().timeout(config.timeout).build().map_err(WebhookError::Client)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            max_queue: config.max_queue.max(1),
            sent: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            stopped: CancellationToken::new(),
        });
        let sender = Sender { shared: shared.clone(), client, url, config, shutdown };
        tokio::spawn(sender.run());
        Ok(WebhookHandle { shared })
    }
}

impl WebhookHandle {
    /// Enqueues an event; never blocks nor awaits. A full queue drops its oldest event.
    pub fn notify(&self, event: &AlertEvent) {
        let s = &self.shared;
        {
            let mut queue = s.queue.lock();
            if queue.len() >= s.max_queue {
                queue.pop_front();
                s.dropped.fetch_add(1, Ordering::Relaxed);
            }
            queue.push_back(event.clone());
        }
        s.wake.notify_one();
    }

    pub fn stats(&self) -> WebhookStats {
        let s = &self.shared;
        WebhookStats {
            sent: s.sent.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            queued: s.queue.lock().len() as u64,
        }
    }

    /// Resolves once the background task has exited (after shutdown), for ordered shutdown.
    pub async fn stopped(&self) {
        self.shared.stopped.cancelled().await;
    }
}

struct Sender {
    shared: Arc<Shared>,
    client: reqwest::Client,
    url: reqwest::Url,
    config: WebhookConfig,
    shutdown: CancellationToken,
}

/// `reqwest::Error`'s message leaves out its causes (connection refused, ...).
fn chain(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl Sender {
    async fn run(self) {
        // Dropped however the task ends, so `stopped()` never hangs.
        let _stopped = self.shared.stopped.clone().drop_guard();
        loop {
            let next = self.shared.queue.lock().pop_front();
            let Some(event) = next else {
                // A notify() since the last pop left a permit, so no event is missed.
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = self.shared.wake.notified() => continue,
                }
            };
            if !self.deliver(&event).await {
                return;
            }
        }
    }

    /// Returns false when shutdown interrupted it.
    async fn deliver(&self, event: &AlertEvent) -> bool {
        let key = event.alert.key.to_string();
        let mut backoff = self.config.initial_backoff;
        let attempts = self.config.max_attempts.max(1);
        for attempt in 1..=attempts {
            let send =
                async { self.client.post(self.url.clone()).json(event).send().await?.error_for_status() };
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                r = send => r,
            };
            match result {
                Ok(_) => {
                    self.shared.sent.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(e) => tracing::warn!(
                    alert = %key, attempt, max_attempts = attempts, error = %chain(&e),
                    "webhook delivery failed"
                ),
            }
            if attempt == attempts {
                break;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = backoff.saturating_mul(2).min(self.config.max_backoff);
        }
        self.shared.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(alert = %key, attempts, "webhook gave up on alert event");
        true
    }
}
