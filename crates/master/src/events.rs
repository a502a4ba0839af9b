//! The master's one internal event stream.
//!
//! State changes are published once here: worker lifecycle by the fleet, task ends by the
//! task actor; the task actor, alerting and the history restorer subscribe (through
//! `crate::fleet::Subscription`, which resyncs one that falls behind). Publishing never blocks.

use tokio::sync::broadcast;

use std::sync::Arc;

use cloudai_domain::{RunningTask, TaskStatus, WorkerInfo};

use cloudai_domain::{TaskId, WorkerId};

#[derive(Clone, Debug, PartialEq)]
pub enum ClusterEvent {
    /// A worker registered (for the first time, or again after a restart), with what it
    /// advertised and the tasks it runs.
    WorkerRegistered {
        worker_id: WorkerId,
        info: Arc<WorkerInfo>,
        running: Arc<Vec<RunningTask>>,
        /// What it holds besides: tasks ended there whose final report is on its way, or
        /// `None` from a worker that does not say (any task missing may still report).
        ending: Option<Arc<Vec<String>>>,
    },
    /// A worker says it cannot run tasks (`Some(reason)`), or that it can again (`None`).
    WorkerHealth { worker_id: WorkerId, unhealthy: Option<String> },
    /// A worker sent no heartbeat for the inactivity timeout.
    WorkerInactive { worker_id: WorkerId },
    /// An inactive (or lost) worker's heartbeats resumed.
    WorkerActive { worker_id: WorkerId },
    /// An inactive worker stayed silent past the loss grace, or did not come back after a
    /// master restart: its tasks go elsewhere.
    WorkerLost { worker_id: WorkerId },
    /// A worker left cleanly, or was forgotten after being lost for `WORKER_FORGET_AFTER`:
    /// subscribers drop what they keep about it in memory. A forgotten worker's stored
    /// history goes too; one that left keeps it (it may be a restart) until the retention.
    WorkerUnregistered { worker_id: WorkerId, forgotten: bool },
    /// A task reached a final state (completed, failed or cancelled); published once per task.
    TaskFinished { task_id: TaskId, status: TaskStatus },
}

#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<ClusterEvent>,
}

impl EventBus {
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self { tx }
    }

    pub fn publish(&self, event: ClusterEvent) {
        tracing::debug!(?event, "cluster event");
        // No subscriber is not an error: the event is simply not needed.
        let _ = self.tx.send(event);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ClusterEvent> {
        self.tx.subscribe()
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new(4096)
    }
}
