//! The audit trail: one record per mutating API call (who, when, what, of what, the answer).
//!
//! Every record goes through one bounded queue that one writer drains in batches into the
//! store's group commit, so the trail is in the order calls were recorded. Calls on the hot
//! path (task submit and cancel) do not wait for the write ([`AuditLog::record`]); rare
//! changes that must not be answered before their record is on disk (tokens, worker
//! revocations, join-token rotation) wait for it ([`AuditLog::record_durable`]).

use std::sync::Arc;

use cloudai_domain::time::unix_ms;
use cloudai_store::{AuditRecord, Store, StoreError};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Principal;

/// Records queued before callers wait for the writer.
const QUEUE: usize = 4096;
/// Most records written in one batch.
const BATCH: usize = 512;

/// One audited call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditEvent {
    pub actor: String,
    /// `task.submit`, `task.cancel`, `token.create`, `token.revoke`, `worker.revoke`, …
    pub action: &'static str,
    pub target: String,
    /// The HTTP status answered (or what the call would answer over HTTP).
    pub status: u16,
    pub detail: Option<String>,
}

impl AuditEvent {
    pub fn new(actor: &Principal, action: &'static str, target: impl Into<String>, status: u16) -> Self {
        Self { actor: actor.name.to_string(), action, target: target.into(), status, detail: None }
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    fn record(self) -> AuditRecord {
        AuditRecord {
            seq: 0,
            at_ms: unix_ms(),
            actor: self.actor,
            action: self.action.to_string(),
            target: self.target,
            status: self.status,
            detail: self.detail,
        }
    }
}

type Ack = oneshot::Sender<Result<(), Arc<StoreError>>>;

/// Handle to the audit trail; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    queue: mpsc::Sender<(AuditRecord, Option<Ack>)>,
}

impl AuditLog {
    /// Starts the writer: it stops at `shutdown`, after writing what is queued.
    pub fn start(
        store: Arc<dyn Store>,
        tracker: &tokio_util::task::TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tracker.spawn(write(store.clone(), rx, shutdown));
        Self { store, queue }
    }

    /// Queues a record: written within a batch, soon. Waits only when the writer is
    /// [`QUEUE`] records behind.
    pub async fn record(&self, event: AuditEvent) {
        if let Err(mpsc::error::SendError((record, _))) = self.queue.send((event.record(), None)).await {
            // Shutting down: the writer has stopped; do not lose the record.
            if let Err(e) = self.store.append_audit(vec![record]).await {
                tracing::error!(error = %format!("{e:#}"), "cannot record an audit event");
            }
        }
    }

    /// Records an event and returns once it is in the store (after every record queued
    /// before it).
    pub async fn record_durable(&self, event: AuditEvent) -> Result<(), Arc<StoreError>> {
        let (ack, written) = oneshot::channel();
        match self.queue.send((event.record(), Some(ack))).await {
            Ok(()) => written.await.unwrap_or_else(|_| Err(Arc::new(StoreError::Closed))),
            Err(mpsc::error::SendError((record, _))) => {
                self.store.append_audit(vec![record]).await.map_err(Arc::new)
            }
        }
    }

    /// A page of the trail, newest first, below `before` when given.
    pub async fn list(&self, before: Option<i64>, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.store.list_audit(before, limit).await
    }
}

async fn write(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<(AuditRecord, Option<Ack>)>,
    shutdown: CancellationToken,
) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let received = tokio::select! {
            n = rx.recv_many(&mut batch, BATCH) => n,
            _ = shutdown.cancelled() => {
                // Take no more; write what is queued.
                rx.close();
                while rx.recv_many(&mut batch, BATCH).await > 0 {
                    flush(&*store, &mut batch).await;
                }
                break;
            }
        };
        if received == 0 {
            break;
        }
        flush(&*store, &mut batch).await;
    }
    tracing::debug!("audit writer stopped");
}

async fn flush(store: &dyn Store, batch: &mut Vec<(AuditRecord, Option<Ack>)>) {
    let (records, acks): (Vec<_>, Vec<_>) = std::mem::take(batch).into_iter().unzip();
    let n = records.len();
    let result = store.append_audit(records).await.map_err(Arc::new);
    if let Err(e) = &result {
        tracing::error!(error = %format!("{e:#}"), records = n, "cannot write audit records");
    }
    for ack in acks.into_iter().flatten() {
        let _ = ack.send(result.clone());
    }
}
