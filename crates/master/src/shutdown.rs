//! Shutdown as one tree: a root token, and per stage a child token and a tracker of every
//! task that stage spawned. Stages stop one after another, in the order they were made,
//! under one deadline; a stage that overruns is reported and left, so the later ones still
//! stop (and cancelling the root stops everything at once).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

/// What a stage gets once the deadline has passed.
const STAGE_FLOOR: Duration = Duration::from_millis(200);

/// One stage: its token tells its tasks to stop, its tracker knows when they have.
#[derive(Clone)]
pub struct Stage {
    name: &'static str,
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Stage {
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    pub fn spawn<F>(&self, task: F)
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task);
    }

    /// Tasks of this stage still running.
    pub fn running(&self) -> usize {
        self.tracker.len()
    }
}

/// How one stage stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StageReport {
    pub name: &'static str,
    /// Every task of the stage ended before the deadline.
    pub stopped: bool,
    /// Tasks still running when the stage was left.
    pub left_running: usize,
}

/// The master's stages, in shutdown order.
pub struct Shutdown {
    root: CancellationToken,
    stages: Vec<Stage>,
}

impl Shutdown {
    pub fn new() -> Self {
        Self { root: CancellationToken::new(), stages: Vec::new() }
    }

    /// Adds the next stage to stop.
    pub fn stage(&mut self, name: &'static str) -> Stage {
        let stage = Stage { name, token: self.root.child_token(), tracker: TaskTracker::new() };
        self.stages.push(stage.clone());
        stage
    }

    /// Stops every stage in order under one deadline. `after_stage` runs once a stage has
    /// stopped (or overrun), with the time left, for work that needs its tasks gone (e.g.
    /// flushing what they left behind).
    pub async fn run<F, Fut>(self, deadline: Duration, mut after_stage: F) -> Vec<StageReport>
    where
        F: FnMut(&'static str, Instant) -> Fut,
        Fut: Future<Output = ()>,
    {
        let until = Instant::now() + deadline;
        let mut reports = Vec::with_capacity(self.stages.len());
        for stage in &self.stages {
            stage.token.cancel();
            stage.tracker.close();
            // Past the deadline, a stage still gets a moment to end what it can.
            let until = until.max(Instant::now() + STAGE_FLOOR);
            let stopped = tokio::time::timeout_at(until, stage.tracker.wait()).await.is_ok();
            let left_running = stage.tracker.len();
            if stopped {
                info!("{} stopped", stage.name);
            } else {
                warn!(left_running, "{} did not stop in time", stage.name);
            }
            let _ = tokio::time::timeout_at(until, after_stage(stage.name, until)).await;
            reports.push(StageReport { name: stage.name, stopped, left_running });
        }
        self.root.cancel();
        reports
    }
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stages_stop_in_order_and_an_overrunning_one_does_not_hold_up_the_rest() {
        let mut shutdown = Shutdown::new();
        let first = shutdown.stage("first");
        let stuck = shutdown.stage("stuck");
        let last = shutdown.stage("last");
        let order = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        for stage in [&first, &last] {
            let (token, order, name) = (stage.token(), order.clone(), stage.name);
            stage.spawn(async move {
                token.cancelled().await;
                order.lock().push(name);
            });
        }
        stuck.spawn(std::future::pending::<()>());
        let reports = shutdown.run(Duration::from_millis(300), |_, _| async {}).await;
        let names: Vec<_> = reports.iter().map(|r| (r.name, r.stopped)).collect();
        assert_eq!(names, [("first", true), ("stuck", false), ("last", true)]);
        assert_eq!(*order.lock(), ["first", "last"]);
        assert_eq!(reports[1].left_running, 1);
    }
}
