//! The writer thread: owns the only write connection and group-commits.
//!
//! Callers queue operations on a bounded channel, each with a oneshot reply. The thread
//! takes everything queued (up to `max_batch_ops`) into ONE transaction, commits, then
//! answers every reply. While it commits, new operations pile up for the next batch, so
//! the batch grows with the load and the cost of a commit is shared.
//!
//! Durability: WAL with `synchronous=NORMAL`. A commit is in the WAL file (the OS page
//! cache) when it returns, so it survives the process being killed (SIGKILL, panic, OOM);
//! the WAL is fsynced at checkpoints, so an OS crash or power loss can lose the last
//! commits but never corrupts the database. That is what we promise.

use std::collections::BTreeMap;
use std::sync::Arc;

use cloudai_domain::{TaskEvent, TaskId, WorkerId};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::sync::{mpsc, oneshot};

use super::rows::TaskRow;
use super::{auth, logs};
use crate::{AuditRecord, LogChunk, StoreError, StoredToken, TelemetryMinute};

pub(crate) type Reply = oneshot::Sender<Result<(), StoreError>>;

pub(crate) enum WriteOp {
    InsertTask(Box<TaskRow>, TaskEvent),
    UpdateTask(Box<TaskRow>, TaskEvent),
    AppendLogs(Vec<LogChunk>),
    AppendMinutes(Vec<TelemetryMinute>),
    PruneMinutes { before_ms: i64 },
    ForgetWorkerMinutes(WorkerId),
    RequestCancel(TaskId),
    InsertToken(StoredToken),
    RevokeToken { id: String, at_ms: i64 },
    AppendAudit(Vec<AuditRecord>),
}

pub(crate) enum Msg {
    Op(WriteOp, Reply),
    /// Stop taking operations, finish the queued ones, close the connection, then answer.
    Shutdown(oneshot::Sender<()>),
}

pub(crate) struct WriterConfig {
    pub max_batch_ops: usize,
    pub max_log_bytes_per_task: u64,
}

/// Runs until every sender is dropped or a `Shutdown` arrives, and the queue is empty.
pub(crate) fn run(mut conn: Connection, mut rx: mpsc::Receiver<Msg>, config: WriterConfig) {
    let cap = config.max_batch_ops.max(1);
    let mut batch: Vec<(WriteOp, Reply)> = Vec::with_capacity(cap);
    let mut on_shutdown: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.blocking_recv() {
        take(first, &mut batch, &mut on_shutdown, &mut rx);
        while batch.len() < cap {
            let Ok(msg) = rx.try_recv() else { break };
            take(msg, &mut batch, &mut on_shutdown, &mut rx);
        }
        if !batch.is_empty() {
            commit_batch(&mut conn, &mut batch, &config);
        }
    }
    // Fold the WAL back into the database so the next start has nothing to replay.
    if let Err(e) = conn.execute_batch("PRAGMA optimize; PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::warn!(error = %e, "store checkpoint at close failed");
    }
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the store's write connection failed");
    }
    tracing::debug!("store writer stopped");
    for done in on_shutdown {
        let _ = done.send(());
    }
}

fn take(
    msg: Msg,
    batch: &mut Vec<(WriteOp, Reply)>,
    on_shutdown: &mut Vec<oneshot::Sender<()>>,
    rx: &mut mpsc::Receiver<Msg>,
) {
    match msg {
        Msg::Op(op, reply) => batch.push((op, reply)),
        Msg::Shutdown(done) => {
            // Senders now fail with Closed; what is already queued is still written.
            rx.close();
            on_shutdown.push(done);
        }
    }
}

/// Why a transaction did not commit.
enum TxError {
    /// BEGIN or COMMIT failed (lock held elsewhere past the busy timeout, I/O error): nothing
    /// was written, and retrying operation by operation would fail the same way.
    Tx(rusqlite::Error),
    /// One operation failed; the transaction was rolled back.
    Op(StoreError),
}

/// Commits the batch in one transaction. If an operation fails (disk full, a bad row),
/// retries each operation in its own transaction so the bad one fails alone.
fn commit_batch(conn: &mut Connection, batch: &mut Vec<(WriteOp, Reply)>, config: &WriterConfig) {
    let ops: Vec<&WriteOp> = batch.iter().map(|(op, _)| op).collect();
    match apply_in_tx(conn, &ops, config) {
        Ok(results) => {
            for ((_, reply), result) in batch.drain(..).zip(results) {
                // The caller may have gone away; the write is committed regardless.
                let _ = reply.send(result);
            }
        }
        Err(TxError::Tx(e)) => fail_all(batch.drain(..), e),
        Err(TxError::Op(e)) if batch.len() == 1 => {
            if let Some((_, reply)) = batch.pop() {
                let _ = reply.send(Err(e));
            }
        }
        Err(TxError::Op(e)) => {
            tracing::warn!(error = %e, ops = batch.len(), "group commit failed; retrying operations one by one");
            let mut rest = batch.drain(..);
            while let Some((op, reply)) = rest.next() {
                let result = match apply_in_tx(conn, &[&op], config) {
                    Ok(mut results) => results.pop().unwrap_or(Ok(())),
                    Err(TxError::Op(e)) => Err(e),
                    Err(TxError::Tx(e)) => {
                        fail_all(std::iter::once((op, reply)).chain(rest), e);
                        return;
                    }
                };
                let _ = reply.send(result);
            }
        }
    }
}

fn fail_all(replies: impl Iterator<Item = (WriteOp, Reply)>, e: rusqlite::Error) {
    tracing::warn!(error = %e, "write transaction failed");
    let e = Arc::new(e);
    for (_, reply) in replies {
        let _ = reply.send(Err(StoreError::Transaction(Arc::clone(&e))));
    }
}

/// Applies `ops` in one transaction. A refused operation (unknown or duplicate task) wrote
/// nothing and gets its own error; any other error aborts the whole transaction.
fn apply_in_tx(
    conn: &mut Connection,
    ops: &[&WriteOp],
    config: &WriterConfig,
) -> Result<Vec<Result<(), StoreError>>, TxError> {
    // IMMEDIATE: take the write lock up front (another process, e.g. the sqlite3 shell,
    // may hold it; busy_timeout then waits instead of failing mid-transaction).
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(TxError::Tx)?;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        match apply(&tx, op, config) {
            Ok(()) => results.push(Ok(())),
            Err(
                e @ (StoreError::NotFound(_)
                | StoreError::AlreadyExists(_)
                | StoreError::TokenExists(_)
                | StoreError::NoSuchToken(_)),
            ) => results.push(Err(e)),
            // Dropping `tx` rolls back.
            Err(e) => return Err(TxError::Op(e)),
        }
    }
    tx.commit().map_err(TxError::Tx)?;
    Ok(results)
}

fn apply(tx: &Transaction<'_>, op: &WriteOp, config: &WriterConfig) -> Result<(), StoreError> {
    match op {
        WriteOp::InsertTask(row, event) => {
            let inserted = row.with_params(|params| {
                tx.prepare_cached(
                    "INSERT INTO tasks (task_id, status, worker_id, priority, spec, gpu_indices, attempt, \
                     pending_reason, exit_code, error, created_at_ms, updated_at_ms, started_at_ms, \
                     finished_at_ms, submitted_by) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15) \
                     ON CONFLICT (task_id) DO NOTHING",
                )?
                .execute(params)
            })?;
            if inserted == 0 {
                return Err(StoreError::AlreadyExists(row.task_id.clone()));
            }
            insert_event(tx, event)
        }
        WriteOp::UpdateTask(row, event) => {
            let updated = row.with_params(|params| {
                tx.prepare_cached(
                    "UPDATE tasks SET status = ?2, worker_id = ?3, priority = ?4, spec = ?5, gpu_indices = ?6, \
                     attempt = ?7, pending_reason = ?8, exit_code = ?9, error = ?10, created_at_ms = ?11, \
                     updated_at_ms = ?12, started_at_ms = ?13, finished_at_ms = ?14, submitted_by = ?15 \
                     WHERE task_id = ?1",
                )?
                .execute(params)
            })?;
            if updated == 0 {
                return Err(StoreError::NotFound(row.task_id.clone()));
            }
            insert_event(tx, event)
        }
        WriteOp::AppendLogs(chunks) => {
            // Group per task, keeping each task's order; tasks are independent.
            let mut by_task: BTreeMap<&TaskId, Vec<&LogChunk>> = BTreeMap::new();
            for c in chunks {
                by_task.entry(&c.task_id).or_default().push(c);
            }
            for (task_id, chunks) in by_task {
                logs::append(tx, task_id, &chunks, config.max_log_bytes_per_task)?;
            }
            Ok(())
        }
        WriteOp::AppendMinutes(minutes) => {
            let mut insert = tx.prepare_cached(
                "INSERT INTO telemetry_minutes (worker_id, start_ms, data) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (worker_id, start_ms) DO UPDATE SET data = excluded.data",
            )?;
            for m in minutes {
                insert.execute(params![m.worker_id.as_str(), m.start_ms, m.data])?;
            }
            Ok(())
        }
        WriteOp::PruneMinutes { before_ms } => {
            tx.prepare_cached("DELETE FROM telemetry_minutes WHERE start_ms < ?1")?
                .execute(params![before_ms])?;
            Ok(())
        }
        // Not part of a task's row (UpdateTask leaves the column alone): set once, by the cancel.
        WriteOp::RequestCancel(task_id) => {
            let updated = tx
                .prepare_cached("UPDATE tasks SET cancel_requested = 1 WHERE task_id = ?1")?
                .execute(params![task_id.as_str()])?;
            if updated == 0 {
                return Err(StoreError::NotFound(task_id.clone()));
            }
            Ok(())
        }
        WriteOp::InsertToken(token) => auth::insert_token(tx, token),
        WriteOp::RevokeToken { id, at_ms } => auth::revoke_token(tx, id, *at_ms),
        WriteOp::AppendAudit(records) => auth::append_audit(tx, records),
        WriteOp::ForgetWorkerMinutes(worker_id) => {
            tx.prepare_cached("DELETE FROM telemetry_minutes WHERE worker_id = ?1")?
                .execute(params![worker_id.as_str()])?;
            Ok(())
        }
    }
}

fn insert_event(tx: &Transaction<'_>, e: &TaskEvent) -> Result<(), StoreError> {
    tx.prepare_cached(
        "INSERT INTO task_events (task_id, time_ms, from_status, to_status, reason, worker_id) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        e.task_id.as_str(),
        e.time_ms,
        e.from.map(|s| s.as_str()),
        e.to.as_str(),
        e.reason,
        e.worker_id.as_ref().map(|w| w.as_str()),
    ])?;
    Ok(())
}
