//! The master's one internal event stream.
//!
//! State changes are published once here; the scheduler, metrics, alerts and the
//! store writer subscribe. Publishing never blocks: a subscriber that falls behind
//! sees `Lagged` and must resynchronise from the source of truth.

use tokio::sync::broadcast;

use cloudai_domain::TaskStatus;

use cloudai_domain::{TaskId, WorkerId};

#[derive(Clone, Debug, PartialEq)]
pub enum ClusterEvent {
    /// A worker registered (for the first time, or again after a restart).
    WorkerRegistered { worker_id: WorkerId },
    /// A worker sent no heartbeat for the inactivity timeout.
    WorkerInactive { worker_id: WorkerId },
    /// An inactive worker's heartbeats resumed.
    WorkerActive { worker_id: WorkerId },
    /// A worker left cleanly.
    WorkerUnregistered { worker_id: WorkerId },
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
