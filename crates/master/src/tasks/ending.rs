//! A final transition on its way to the store. The actor keeps the task as it was (state,
//! reservation, place in the queue) until the write commits, and only then applies it and
//! answers whoever waits: a worker's final report, a user's cancel. If the write fails,
//! nothing changed, the waiters hear why, and they retry.

use std::sync::Arc;

use cloudai_domain::{Task, TaskId, TaskStatus};
use cloudai_store::StoreError;
use tokio::sync::oneshot;

use super::TaskError;

pub(super) struct Ending {
    /// The task in its final state, as handed to the store.
    pub task: Task,
    pub waiters: Vec<Waiter>,
}

pub(super) enum Waiter {
    /// A worker's final report: acknowledged on `Ok`.
    Report(oneshot::Sender<Result<(), TaskError>>),
    /// A user's cancel: answered with the task once it is durably cancelled.
    Cancel(oneshot::Sender<Result<Task, TaskError>>),
}

impl Waiter {
    /// The final state is durable.
    pub fn ended(self, task: &Task) {
        match self {
            Waiter::Report(tx) => {
                let _ = tx.send(Ok(()));
            }
            Waiter::Cancel(tx) => {
                let answer = match task.status() {
                    TaskStatus::Cancelled => Ok(task.clone()),
                    // It ended otherwise while the cancel waited.
                    status => Err(TaskError::Finished { task_id: task.task_id.clone(), status }),
                };
                let _ = tx.send(answer);
            }
        }
    }

    /// The write failed: nothing changed.
    pub fn failed(self, e: &Arc<StoreError>) {
        let error = TaskError::from(Arc::clone(e));
        match self {
            Waiter::Report(tx) => {
                let _ = tx.send(Err(error));
            }
            Waiter::Cancel(tx) => {
                let _ = tx.send(Err(error));
            }
        }
    }

    /// The transition does not apply to the task's state (as the actor answered before).
    pub fn ignored(self, task_id: &TaskId) {
        match self {
            Waiter::Report(tx) => {
                let _ = tx.send(Ok(()));
            }
            Waiter::Cancel(tx) => {
                let _ = tx.send(Err(TaskError::NotFound(task_id.to_string())));
            }
        }
    }
}
