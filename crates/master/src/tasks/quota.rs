//! Pending tasks per submitter, for the bound on them. A submission reserves its place
//! before it is written (so concurrent submissions cannot overshoot); the actor gives the
//! place back when the task leaves pending (placed, or ended) and takes one when a lost
//! task comes back to pending.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

#[derive(Clone, Default)]
pub(crate) struct PendingQuota {
    counts: Arc<Mutex<HashMap<String, usize>>>,
}

impl PendingQuota {
    /// Takes a place for `submitter` unless it already has `limit` pending tasks.
    pub fn try_reserve(&self, submitter: &str, limit: usize) -> bool {
        let mut counts = self.counts.lock();
        let n = counts.entry(submitter.to_string()).or_default();
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    /// A task of `submitter` became pending without a reservation (restored, or lost).
    pub fn add(&self, submitter: Option<&str>) {
        if let Some(s) = submitter {
            *self.counts.lock().entry(s.to_string()).or_default() += 1;
        }
    }

    /// A task of `submitter` is no longer pending (or its submission failed).
    pub fn release(&self, submitter: Option<&str>) {
        let Some(s) = submitter else { return };
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(s) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(s);
            }
        }
    }

    #[cfg(test)]
    pub fn pending(&self, submitter: &str) -> usize {
        self.counts.lock().get(submitter).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_come_back_when_released() {
        let quota = PendingQuota::default();
        assert!(quota.try_reserve("ci", 2) && quota.try_reserve("ci", 2));
        assert!(!quota.try_reserve("ci", 2), "a third is over the limit");
        assert!(quota.try_reserve("alice", 2), "another submitter has its own places");
        quota.release(Some("ci"));
        assert_eq!(quota.pending("ci"), 1);
        assert!(quota.try_reserve("ci", 2));
        quota.add(Some("ci"));
        assert_eq!(quota.pending("ci"), 3, "a lost task back in pending counts even past the limit");
        quota.release(None);
        assert_eq!(quota.pending("ci"), 3);
    }
}
