//! The phases of a heartbeat run, shared by the load-generator threads and the coordinator
//! that measures the master between them.

use std::sync::Barrier;

/// Phase boundaries shared by the shards and the coordinator, in this order.
#[derive(Clone, Copy)]
pub enum Phase {
    /// Every worker has its certificate (at once without TLS).
    Joined,
    Registered,
    Go,
    Done,
}

const PHASES: [Phase; 4] = [Phase::Joined, Phase::Registered, Phase::Go, Phase::Done];

pub struct Phases([Barrier; 4]);

impl Phases {
    pub fn new(parties: usize) -> Self {
        Self(std::array::from_fn(|_| Barrier::new(parties)))
    }

    pub fn wait(&self, phase: Phase) {
        self.0[phase as usize].wait();
    }
}

/// A shard's way through the phases. Dropped early (an error), it passes the rest, so the
/// other threads and the coordinator are never left waiting.
pub struct PhaseGuard<'a> {
    phases: &'a Phases,
    passed: usize,
}

impl<'a> PhaseGuard<'a> {
    pub fn new(phases: &'a Phases) -> Self {
        Self { phases, passed: 0 }
    }

    /// Waits for every thread at `phase` (and at any phase before it not passed yet).
    pub fn reach(&mut self, phase: Phase) {
        while self.passed <= phase as usize {
            self.phases.wait(PHASES[self.passed]);
            self.passed += 1;
        }
    }
}

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        self.reach(Phase::Done);
    }
}
