//! Ordered, batched persistence of task transitions, off the scheduler's loop.
//!
//! The actor hands every transition here and goes on. Ops of one task are written in
//! order; ops of different tasks are written concurrently, so the store's group commit
//! puts them in one transaction. A final transition carries a `done` sender so the
//! worker's report is acknowledged only once the outcome is durable.

use std::collections::HashMap;
use std::sync::Arc;

use cloudai_domain::{Task, TaskEvent, TaskId};
use cloudai_store::Store;

use super::live::LiveTasks;
use tokio::sync::{mpsc, oneshot};

pub struct PersistOp {
    pub task: Task,
    pub event: TaskEvent,
    pub done: Option<oneshot::Sender<()>>,
}

/// Most ops taken from the queue per round.
const BATCH: usize = 1024;

pub async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<PersistOp>, live: LiveTasks) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let mut by_task: HashMap<TaskId, Vec<PersistOp>> = HashMap::new();
        for op in batch.drain(..) {
            by_task.entry(op.task.task_id.clone()).or_default().push(op);
        }
        let writes = by_task.into_values().map(|ops| {
            let (store, live) = (store.clone(), live.clone());
            async move {
                for op in ops {
                    match store.update_task(&op.task, &op.event).await {
                        Ok(()) => live.persisted(&op.task),
                        // Reads keep the actor's state.
                        Err(e) => {
                            tracing::error!(task_id = %op.task.task_id, error = %format!("{e:#}"), "cannot persist task transition");
                        }
                    }
                    if let Some(done) = op.done {
                        let _ = done.send(());
                    }
                }
            }
        });
        futures::future::join_all(writes).await;
    }
}
