//! The task actor's read model: every task whose latest state may not be in the store yet.
//!
//! The actor records each change here as it hands it to the persistence writer, and the
//! writer forgets a task once its final state is durable. A task that is not here is as the
//! store has it, so a read takes a task from here first and from the store otherwise, and
//! never sees a state older than the actor's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cloudai_domain::{Task, TaskId, TaskStatus};
use cloudai_store::TaskFilter;
use parking_lot::RwLock;

struct Entry {
    task: Task,
    /// The state the store holds for the task (its row's status).
    stored: TaskStatus,
}

#[derive(Clone, Default)]
pub struct LiveTasks {
    tasks: Arc<RwLock<HashMap<TaskId, Entry>>>,
}

impl LiveTasks {
    /// The actor changed `task`; `stored` is the state it had before (what the store has
    /// unless an earlier change of it is still here).
    pub fn changed(&self, task: &Task, stored: TaskStatus) {
        let mut tasks = self.tasks.write();
        match tasks.get_mut(&task.task_id) {
            Some(entry) => entry.task.clone_from(task),
            None => {
                tasks.insert(task.task_id.clone(), Entry { task: task.clone(), stored });
            }
        }
    }

    /// The writer made `task` (as of one change) durable.
    pub fn persisted(&self, task: &Task) {
        let mut tasks = self.tasks.write();
        let Some(entry) = tasks.get_mut(&task.task_id) else { return };
        entry.stored = task.status();
        // Its final state is in the store: nothing newer can come (the actor records a
        // final state only once it is durable, so the entry may still hold the one before).
        if task.status().is_final() {
            tasks.remove(&task.task_id);
        }
    }

    pub fn len(&self) -> usize {
        self.tasks.read().len()
    }

    pub fn get(&self, task_id: &TaskId) -> Option<Task> {
        self.tasks.read().get(task_id).map(|e| e.task.clone())
    }

    /// `stored` (the store's answer to `filter`) with every task held here as it is now:
    /// oldest first, the newest `filter.limit`.
    pub fn overlay(&self, stored: Vec<Task>, filter: &TaskFilter) -> Vec<Task> {
        let tasks = self.tasks.read();
        let mut out: Vec<Task> = stored.into_iter().filter(|t| !tasks.contains_key(&t.task_id)).collect();
        let matches = |t: &Task| {
            filter.status.is_none_or(|s| t.status() == s)
                && filter.worker_id.as_ref().is_none_or(|w| t.worker_id() == Some(w))
        };
        out.extend(tasks.values().map(|e| &e.task).filter(|t| matches(t)).cloned());
        drop(tasks);
        out.sort_by(|a, b| (a.created_at_ms, &a.task_id).cmp(&(b.created_at_ms, &b.task_id)));
        if let Some(limit) = filter.limit {
            let excess = out.len().saturating_sub(limit);
            out.drain(..excess);
        }
        out
    }

    /// The store's counts per status corrected by the changes not in it yet.
    pub fn overlay_counts(&self, mut counts: BTreeMap<TaskStatus, u64>) -> BTreeMap<TaskStatus, u64> {
        for entry in self.tasks.read().values() {
            if let Some(n) = counts.get_mut(&entry.stored) {
                *n = n.saturating_sub(1);
            }
            *counts.entry(entry.task.status()).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloudai_domain::{Outcome, TaskSpec};

    fn task(at_ms: i64) -> Task {
        let spec = TaskSpec::from_json(
            br#"{"driver": "process", "command": ["true"], "cpu_required": 1, "memory_required": 8}"#,
        )
        .expect("spec");
        Task::new(TaskId::generate(), spec, at_ms)
    }

    #[test]
    fn reads_see_the_actors_state_until_the_store_has_it() {
        let live = LiveTasks::default();
        let (a, mut b) = (task(1), task(2));
        let stored = vec![a.clone(), b.clone()];
        b.transition(TaskStatus::Cancelled, "cancelled by user", Outcome::default(), 3).expect("cancel");
        live.changed(&b, TaskStatus::Pending);
        let filter = TaskFilter::default();
        let listed: Vec<TaskStatus> =
            live.overlay(stored.clone(), &filter).iter().map(|t| t.status()).collect();
        assert_eq!(listed, [TaskStatus::Pending, TaskStatus::Cancelled]);
        let pending = TaskFilter { status: Some(TaskStatus::Pending), ..TaskFilter::default() };
        assert_eq!(live.overlay(stored.clone(), &pending).len(), 1, "the stale pending row is not listed");
        let counts = live.overlay_counts(BTreeMap::from([(TaskStatus::Pending, 2)]));
        assert_eq!(counts, BTreeMap::from([(TaskStatus::Pending, 1), (TaskStatus::Cancelled, 1)]));

        live.persisted(&b);
        assert!(live.get(&b.task_id).is_none(), "durable: read from the store again");
    }

    #[test]
    fn a_limit_keeps_the_newest() {
        let live = LiveTasks::default();
        let tasks: Vec<Task> = (0..4).map(task).collect();
        live.changed(&tasks[3], TaskStatus::Pending);
        let limited =
            live.overlay(tasks[1..].to_vec(), &TaskFilter { limit: Some(2), ..TaskFilter::default() });
        assert_eq!(limited.iter().map(|t| t.created_at_ms).collect::<Vec<_>>(), [2, 3]);
    }
}
