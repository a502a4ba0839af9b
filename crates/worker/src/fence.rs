//! Self-fencing: a worker cut off from the master stops its tasks before the master hands
//! them to another worker, so a task never runs twice at once.
//!
//! The guarantee rests on one measurement. The master re-queues a silent worker's tasks no
//! sooner than `loss_after` (it says how long at registration) after the last heartbeat it
//! *received*. That heartbeat left this worker no earlier than the *send time* of the last
//! heartbeat the master acknowledged, so a deadline counted from that send time, on this
//! worker's own clock, is never made late by the round trip, however long it took. Clocks are
//! not synchronised: only their rates are assumed to differ by at most [`MAX_DRIFT`].

use std::time::Duration;

/// Largest difference in clock rate assumed between master and worker (5 %: far beyond
/// the few hundred ppm of real clocks, to cover a VM's stolen time too).
pub const MAX_DRIFT: f64 = 0.05;

/// Time allowed for the stop itself to begin (the timer firing late, signals delivered).
const MARGIN: Duration = Duration::from_secs(1);

/// When a worker stops its tasks, derived from the master's deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FencePolicy {
    /// Silence after which this worker begins stopping its tasks, counted from the send time
    /// of the last heartbeat the master acknowledged.
    pub fence_after: Duration,
    /// Time between SIGTERM and SIGKILL when it does.
    pub stop_grace: Duration,
}

impl FencePolicy {
    /// The policy for a master that re-queues after `loss_after`, for tasks that get up to
    /// `stop_grace` to exit. The worker is done stopping within `(1 - MAX_DRIFT) * loss_after`
    /// of the last acknowledged send, by its clock; when `stop_grace` and the margin do not fit
    /// into that, both shrink to a quarter of it each, so fencing never waits less than half.
    pub fn new(loss_after: Duration, stop_grace: Duration) -> Self {
        let budget = loss_after.mul_f64(1.0 - MAX_DRIFT);
        let stop_grace = stop_grace.min(budget / 4);
        let margin = MARGIN.min(budget / 4);
        Self { fence_after: budget - stop_grace - margin, stop_grace }
    }

    /// Latest time, after the last acknowledged send, by which every task has exited.
    pub fn stopped_by(&self) -> Duration {
        self.fence_after + self.stop_grace
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The master's re-queue time, in real time, for a worker whose last acknowledged
    /// heartbeat was sent at real time 0 and arrived `transit` later, when the master's
    /// clock runs `master_rate` times real time.
    fn master_requeues_at(loss_after: Duration, transit: Duration, master_rate: f64) -> f64 {
        transit.as_secs_f64() + loss_after.as_secs_f64() / master_rate
    }

    /// When the worker has stopped everything, in real time, when its clock runs
    /// `worker_rate` times real time and the stop begins as late as the margin allows.
    fn worker_done_at(policy: FencePolicy, loss_after: Duration, worker_rate: f64) -> f64 {
        let late = MARGIN.min(loss_after.mul_f64(1.0 - MAX_DRIFT) / 4);
        (policy.stopped_by() + late).as_secs_f64() / worker_rate
    }

    #[test]
    fn a_worker_always_stops_before_the_master_requeues() {
        let losses = [0.2, 1.0, 5.0, 12.0, 25.0, 60.0, 600.0].map(Duration::from_secs_f64);
        let graces = [0.0, 0.5, 3.0, 10.0, 30.0, 120.0].map(Duration::from_secs_f64);
        let transits = [0.0, 0.001, 0.5, 9.0, 60.0].map(Duration::from_secs_f64);
        // Either clock fast or slow by up to the bound, both together worst of all.
        let rates = [(1.0, 1.0), (1.0 + MAX_DRIFT / 2.0, 1.0 - MAX_DRIFT / 2.0), (1.0, 1.0 - MAX_DRIFT)];
        for loss in losses {
            for grace in graces {
                let policy = FencePolicy::new(loss, grace);
                for transit in transits {
                    for (master_rate, worker_rate) in rates {
                        let requeue = master_requeues_at(loss, transit, master_rate);
                        let done = worker_done_at(policy, loss, worker_rate);
                        assert!(
                            done <= requeue + 1e-9,
                            "loss {loss:?} grace {grace:?} transit {transit:?} rates {master_rate}/{worker_rate}: \
                             worker done at {done:.3}s, master re-queues at {requeue:.3}s"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn a_long_grace_shrinks_instead_of_fencing_at_once() {
        let policy = FencePolicy::new(Duration::from_secs(4), Duration::from_secs(10));
        assert_eq!(policy.stop_grace, Duration::from_millis(950));
        assert!(policy.fence_after >= Duration::from_millis(1900), "{policy:?}");
    }

    #[test]
    fn defaults_leave_a_short_partition_alone() {
        // 30 s inactivity + 30 s loss grace, 10 s stop grace: a 40 s cut does not fence.
        let policy = FencePolicy::new(Duration::from_secs(60), Duration::from_secs(10));
        assert_eq!(policy.fence_after, Duration::from_secs(46));
    }
}
