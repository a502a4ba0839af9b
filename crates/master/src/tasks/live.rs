//! The task actor's read model: every task whose latest state may not be in the store yet.
//!
//! The actor records each change here as it hands it to the persistence writer, and the
//! writer forgets a task once its final state is durable. A task that is not here is as the
//! store has it, so a read takes a task from here first and from the store otherwise, and
//! never sees a state older than the actor's.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cloudai_domain::{Task, TaskId, TaskStatus};
use cloudai_store::{TaskCursor, TaskFilter};
use parking_lot::RwLock;

/// One page of a task listing.
#[derive(Debug, Default)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Where the next page starts (pass as the listing's `after`); `None` on the last page.
    pub next: Option<TaskId>,
}

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
        self.read(task_id, Task::clone)
    }

    /// `f` of the task as held here, without copying it (a spec may hold a big env).
    pub fn read<T>(&self, task_id: &TaskId, f: impl FnOnce(&Task) -> T) -> Option<T> {
        self.tasks.read().get(task_id).map(|e| f(&e.task))
    }

    /// One page of a listing: `stored` is the store's answer to `filter` when asked for
    /// `asked` rows; each stored task held here is replaced by its state now, and those held
    /// here that match now are added, within the part of the listing the store's rows cover.
    pub fn overlay(&self, stored: Vec<Task>, filter: &TaskFilter, asked: Option<usize>) -> TaskPage {
        // A full answer may have more rows past its last: the page covers up to that row only.
        let bound =
            if asked.is_some_and(|n| stored.len() >= n) { stored.last().map(TaskCursor::of) } else { None };
        let forward = !filter.newest_first;
        let in_range = |c: &TaskCursor| {
            let past_after = filter.after.as_ref().is_none_or(|a| if forward { c > a } else { c < a });
            let within = bound.as_ref().is_none_or(|b| if forward { c <= b } else { c >= b });
            past_after && within
        };
        let matches = |t: &Task| {
            filter.status.is_none_or(|s| t.status() == s)
                && filter.worker_id.as_ref().is_none_or(|w| t.worker_id() == Some(w))
        };
        let tasks = self.tasks.read();
        let mut out: Vec<Task> = stored.into_iter().filter(|t| !tasks.contains_key(&t.task_id)).collect();
        out.extend(
            tasks.values().map(|e| &e.task).filter(|t| matches(t) && in_range(&TaskCursor::of(t))).cloned(),
        );
        drop(tasks);
        out.sort_by_cached_key(TaskCursor::of);
        if !forward {
            out.reverse();
        }
        let next = match filter.limit {
            Some(limit) if out.len() > limit => {
                out.truncate(limit);
                out.last().map(|t| t.task_id.clone())
            }
            // Everything up to the bound is here; the next page starts past it.
            _ => bound.map(|b| b.task_id),
        };
        TaskPage { tasks: out, next }
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
            live.overlay(stored.clone(), &filter, None).tasks.iter().map(|t| t.status()).collect();
        assert_eq!(listed, [TaskStatus::Pending, TaskStatus::Cancelled]);
        let pending = TaskFilter { status: Some(TaskStatus::Pending), ..TaskFilter::default() };
        let page = live.overlay(stored.clone(), &pending, None);
        assert_eq!(page.tasks.len(), 1, "the stale pending row is not listed");
        let counts = live.overlay_counts(BTreeMap::from([(TaskStatus::Pending, 2)]));
        assert_eq!(counts, BTreeMap::from([(TaskStatus::Pending, 1), (TaskStatus::Cancelled, 1)]));

        live.persisted(&b);
        assert!(live.get(&b.task_id).is_none(), "durable: read from the store again");
    }

    #[test]
    fn a_page_covers_what_the_store_returned_and_says_where_to_go_on() {
        let live = LiveTasks::default();
        let mut tasks: Vec<Task> = (0..6).map(task).collect();
        // Task 1 was cancelled in memory (its row still says pending); task 4 is pending.
        tasks[1]
            .transition(TaskStatus::Cancelled, "cancelled by user", Outcome::default(), 9)
            .expect("cancel");
        live.changed(&tasks[1], TaskStatus::Pending);
        live.changed(&tasks[4], TaskStatus::Pending);
        let pending =
            TaskFilter { status: Some(TaskStatus::Pending), limit: Some(2), ..TaskFilter::default() };
        // The store was asked for 3 pending rows and returned 0, 1, 2 (1 is stale).
        let stored = vec![tasks[0].clone(), tasks[1].clone(), tasks[2].clone()];
        let page = live.overlay(stored, &pending, Some(3));
        let at = |p: &TaskPage| p.tasks.iter().map(|t| t.created_at_ms).collect::<Vec<_>>();
        assert_eq!(at(&page), [0, 2], "task 4 lies past the store's last row: the next page has it");
        assert_eq!(page.next.as_ref(), Some(&tasks[2].task_id));
        // The next page: the store returned 3 (and 4, which is held here) — fewer than asked.
        let after = TaskFilter { after: Some(TaskCursor::of(&tasks[2])), ..pending.clone() };
        let page = live.overlay(vec![tasks[3].clone(), tasks[4].clone()], &after, Some(3));
        assert_eq!(at(&page), [3, 4]);
        assert_eq!(page.next, None, "the last page");
        // Newest first walks the other way.
        let newest = TaskFilter { newest_first: true, limit: Some(1), ..TaskFilter::default() };
        let page = live.overlay(vec![tasks[5].clone(), tasks[4].clone()], &newest, Some(2));
        assert_eq!(at(&page), [5]);
        assert_eq!(page.next.as_ref(), Some(&tasks[5].task_id));
    }
}
