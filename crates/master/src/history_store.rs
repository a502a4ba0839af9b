//! Keeps the telemetry history's minute tier in the store: closed minutes are written in
//! batches as they come, read back for each worker as it registers, and pruned past the
//! retention.

use std::sync::Arc;
use std::time::Duration;

use cloudai_history::{MinuteBucket, decode_buckets, encode_buckets};
use cloudai_store::{Store, TelemetryMinute};
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::events::ClusterEvent;
use crate::fleet::{Subscription, Update};
use crate::shutdown::Stage;
use crate::telemetry::{ClosedMinute, TelemetryManager};
use cloudai_domain::WorkerId;
use cloudai_domain::time::unix_ms;

/// Most minutes written in one store call.
const BATCH: usize = 1024;
/// Closed minutes waiting for the store; past this the TelemetryManager drops (and counts) them.
const QUEUE: usize = 65_536;

/// The queue from the TelemetryManager to [`spawn_writer`].
pub fn minutes_channel() -> (mpsc::Sender<ClosedMinute>, mpsc::Receiver<ClosedMinute>) {
    mpsc::channel(QUEUE)
}
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Gives every worker that registers its stored minutes back, and deletes those of a
/// worker the fleet forgot. They are read then, one worker at a time, so a master with many
/// workers starts at once and holds history only for the workers that are there.
pub fn spawn_restorer(
    store: Arc<dyn Store>,
    telemetry: TelemetryManager,
    mut events: Subscription,
    retention_ms: i64,
    stage: &Stage,
) {
    let stop = stage.token();
    stage.spawn(async move {
        loop {
            let update = tokio::select! {
                _ = stop.cancelled() => break,
                update = events.recv() => update,
            };
            let workers = match update {
                Some(Update::Event(ClusterEvent::WorkerRegistered { worker_id, .. })) => vec![worker_id],
                Some(Update::Event(ClusterEvent::WorkerUnregistered { worker_id, forgotten: true })) => {
                    if let Err(e) = store.forget_worker_minutes(&worker_id).await {
                        warn!(worker_id = %worker_id, error = %e, "cannot delete a forgotten worker's history");
                    }
                    continue;
                }
                Some(Update::Event(_)) => continue,
                // Registrations were missed: every worker there now (each restored once).
                Some(Update::Resync(fleet)) => {
                    fleet.workers.iter().map(|(info, _)| info.worker_id.clone()).collect()
                }
                None => break,
            };
            for worker_id in workers {
                restore(store.as_ref(), &telemetry, &worker_id, retention_ms).await;
            }
        }
    })
}

/// Unreadable rows are skipped with a warning: history is not worth more.
async fn restore(store: &dyn Store, telemetry: &TelemetryManager, worker_id: &WorkerId, retention_ms: i64) {
    // A worker registering again while its slot is kept already has its history.
    if !telemetry.needs_history(worker_id) {
        return;
    }
    let rows = match store.telemetry_minutes(worker_id, unix_ms().saturating_sub(retention_ms)).await {
        Ok(rows) => rows,
        Err(e) => {
            warn!(worker_id = %worker_id, error = %e, "cannot read stored history minutes");
            return;
        }
    };
    // Applied even when empty: the worker is then marked as restored.
    let mut buckets: Vec<MinuteBucket> = Vec::with_capacity(rows.len());
    for row in &rows {
        match decode_buckets(&row.data) {
            Ok(decoded) => buckets.extend(decoded),
            Err(e) => {
                warn!(worker_id = %worker_id, start_ms = row.start_ms, error = %e, "skipping a stored history minute")
            }
        }
    }
    if telemetry.restore_history(worker_id, buckets) && !rows.is_empty() {
        debug!(worker_id = %worker_id, minutes = rows.len(), "history minutes restored");
    }
}

/// Writes closed minutes until `stop`, then writes what is still queued and returns.
pub fn spawn_writer(
    store: Arc<dyn Store>,
    mut minutes: mpsc::Receiver<ClosedMinute>,
    retention_ms: i64,
    stage: &Stage,
) {
    let stop = stage.token();
    stage.spawn(async move {
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
        // The telemetry stage, stopped before this one, queued every open minute: take them all.
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
