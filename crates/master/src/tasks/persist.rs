//! Ordered, batched persistence of task transitions, off the scheduler's loop.
//!
//! The actor hands every transition here and goes on. Ops of one task are written in
//! order; ops of different tasks are written concurrently, so the store's group commit
//! puts them in one transaction. A final transition is `settle`d: its result goes back to
//! the actor, which applies the transition only once it is durable (and answers the
//! worker's report or the user's cancel then), so a failed write changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use cloudai_domain::{Task, TaskEvent, TaskId};
use cloudai_store::{Store, StoreError};

use super::live::LiveTasks;
use tokio::sync::mpsc;

pub struct PersistOp {
    pub task: Task,
    pub event: TaskEvent,
    /// Send the write's result back to the actor (final transitions).
    pub settle: bool,
}

/// The result of a settled op's write.
pub struct Settled {
    pub task_id: TaskId,
    pub result: Result<(), Arc<StoreError>>,
}

/// Most ops taken from the queue per round.
const BATCH: usize = 1024;

/// `settled` is unbounded: the actor sends here with a bounded channel, so a bounded way
/// back could deadlock; it holds at most one entry per task being ended.
pub async fn run(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<PersistOp>,
    live: LiveTasks,
    settled: mpsc::UnboundedSender<Settled>,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut by_task: HashMap<TaskId, Vec<PersistOp>> = HashMap::new();
        for op in batch.drain(..) {
            by_task.entry(op.task.task_id.clone()).or_default().push(op);
        }
        let writes = by_task.into_values().map(|ops| {
            let (store, live, settled) = (store.clone(), live.clone(), settled.clone());
            async move {
                for op in ops {
                    let result = store.update_task(&op.task, &op.event).await.map_err(Arc::new);
                    match &result {
                        Ok(()) => live.persisted(&op.task),
                        // Reads keep the actor's state; a settled op is retried by its caller.
                        Err(e) => {
                            tracing::error!(task_id = %op.task.task_id, error = %format!("{e:#}"), disk_full = e.is_disk_full(), "cannot persist task transition");
                        }
                    }
                    if op.settle {
                        let _ = settled.send(Settled { task_id: op.task.task_id.clone(), result });
                    }
                }
            }
        });
        futures::future::join_all(writes).await;
    }
}
