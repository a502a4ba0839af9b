//! Keeps the telemetry history's minute tier in the store: closed minutes are written in
//! batches as they come, loaded back at start-up, and pruned past the retention.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cloudai_history::{MinuteBucket, decode_buckets, encode_buckets};
use cloudai_store::{Store, StoreError, TelemetryMinute};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::ids::WorkerId;
use crate::telemetry::{ClosedMinute, TelemetryManager};
use crate::time::unix_ms;

/// Most minutes written in one store call.
const BATCH: usize = 1024;
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Loads the minutes within `retention_ms` and hands them to the telemetry manager.
/// Unreadable rows are skipped with a warning: history is not worth refusing to start.
pub async fn load(
    store: &dyn Store,
    telemetry: &TelemetryManager,
    retention_ms: i64,
) -> Result<(), StoreError> {
    let rows = store.telemetry_minutes(unix_ms().saturating_sub(retention_ms)).await?;
    let count = rows.len();
    let mut by_worker: HashMap<WorkerId, Vec<MinuteBucket>> = HashMap::new();
    for row in rows {
        match decode_buckets(&row.data) {
            Ok(buckets) => by_worker.entry(row.worker_id).or_default().extend(buckets),
            Err(e) => {
                warn!(worker_id = %row.worker_id, start_ms = row.start_ms, error = %e, "skipping a stored history minute")
            }
        }
    }
    if count > 0 {
        info!(minutes = count, workers = by_worker.len(), "telemetry history restored");
    }
    telemetry.restore_history(by_worker);
    Ok(())
}

/// Writes closed minutes until `stop`, then writes what is still queued and returns.
pub fn spawn_writer(
    store: Arc<dyn Store>,
    mut minutes: mpsc::Receiver<ClosedMinute>,
    retention_ms: i64,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut prune = tokio::time::interval(PRUNE_EVERY);
        prune.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = prune.tick() => {
                    if let Err(e) = store.prune_telemetry_minutes(unix_ms().saturating_sub(retention_ms)).await {
                        warn!(error = %e, "cannot prune old history minutes");
                    }
                    continue;
                }
                n = minutes.recv_many(&mut batch, BATCH) => if n == 0 { break },
            }
            write(store.as_ref(), &mut batch).await;
        }
        // The telemetry manager flushed its open minutes before `stop`: take them all.
        while let Ok(minute) = minutes.try_recv() {
            batch.push(minute);
            if batch.len() >= BATCH {
                write(store.as_ref(), &mut batch).await;
            }
        }
        write(store.as_ref(), &mut batch).await;
    })
}

async fn write(store: &dyn Store, batch: &mut Vec<ClosedMinute>) {
    if batch.is_empty() {
        return;
    }
    let rows = batch
        .drain(..)
        .map(|(worker_id, bucket)| TelemetryMinute {
            worker_id,
            start_ms: bucket.start_ms,
            data: encode_buckets(std::slice::from_ref(&bucket)),
        })
        .collect::<Vec<_>>();
    let count = rows.len();
    if let Err(e) = store.append_telemetry_minutes(rows).await {
        warn!(error = %e, minutes = count, "cannot store history minutes; they stay in memory only");
    }
}
