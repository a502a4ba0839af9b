//! The pending queue: higher priority first, then the caller's sequence number (FIFO).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use cloudai_domain::{Driver, TaskId};

use crate::shape::Shape;

/// Sort key; `uniq` keeps keys distinct when a caller reuses a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct QueueKey {
    priority: Reverse<i32>,
    seq: u64,
    uniq: u64,
}

#[derive(Clone, Debug)]
pub(crate) struct Queued {
    pub task_id: TaskId,
    pub need: Shape,
    pub driver: Driver,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Queue {
    order: BTreeMap<QueueKey, Queued>,
    keys: HashMap<TaskId, QueueKey>,
    /// Enqueued since the last pass, so a pass with no new room tries only these.
    fresh: Vec<QueueKey>,
    next_uniq: u64,
}

impl Queue {
    pub fn contains(&self, task_id: &TaskId) -> bool {
        self.keys.contains_key(task_id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// The caller checks that the task is not queued already.
    pub fn push(&mut self, priority: i32, seq: u64, task: Queued) {
        let key = QueueKey { priority: Reverse(priority), seq, uniq: self.next_uniq };
        self.next_uniq += 1;
        self.keys.insert(task.task_id.clone(), key);
        self.order.insert(key, task);
        self.fresh.push(key);
        // Enqueue and cancel without a pass in between must not grow this list forever.
        if self.fresh.len() > 2 * self.order.len() + 64 {
            let order = &self.order;
            self.fresh.retain(|k| order.contains_key(k));
        }
    }

    pub fn get(&self, task_id: &TaskId) -> Option<&Queued> {
        self.order.get(self.keys.get(task_id)?)
    }

    pub fn get_key(&self, key: &QueueKey) -> Option<&Queued> {
        self.order.get(key)
    }

    pub fn remove(&mut self, task_id: &TaskId) -> Option<Queued> {
        let key = self.keys.remove(task_id)?;
        self.order.remove(&key)
    }

    pub fn remove_key(&mut self, key: &QueueKey) {
        if let Some(q) = self.order.remove(key) {
            self.keys.remove(&q.task_id);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&QueueKey, &Queued)> {
        self.order.iter()
    }

    /// The tasks enqueued since the last call, in queue order.
    pub fn take_fresh(&mut self) -> Vec<QueueKey> {
        let mut fresh = std::mem::take(&mut self.fresh);
        fresh.sort_unstable();
        fresh
    }
}
