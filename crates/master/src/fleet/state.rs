//! A worker's lifecycle as a state machine: pure, so every transition is tested alone.
//!
//! ```text
//!   register ──▶ Registered ──heartbeat──▶ Active ◀──heartbeat── Inactive / Lost
//!                    │                       │                      ▲     │
//!                    └──────── silent ───────┴──────── silent ──────┘     │ loss due
//!                                                                Inactive ─▶ Lost
//!   any but Left ──leave──▶ Left          any (Left too) ──register──▶ Registered
//! ```

/// Where a worker is in its lifecycle, with what that state needs. Times are the fleet's
/// clock in milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Registered (or registered again); no heartbeat since.
    Registered { at_ms: u64 },
    /// Heartbeating.
    Active { since_ms: u64 },
    /// Silent past the inactivity timeout; its tasks are given up at `lost_at_ms`.
    Inactive { since_ms: u64, lost_at_ms: u64 },
    /// Silent past the loss grace: its tasks went elsewhere.
    Lost { since_ms: u64 },
    /// Left the cluster cleanly.
    Left { at_ms: u64 },
}

/// What happens to a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    Register,
    Heartbeat,
    /// No heartbeat for the inactivity timeout; its tasks are lost after `loss_grace_ms`.
    Silent {
        loss_grace_ms: u64,
    },
    /// The loss deadline passed.
    LossDue,
    Leave,
}

/// A signal the state cannot take (e.g. a heartbeat from a worker that left).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {state} worker cannot take {signal:?}")]
pub struct IllegalTransition {
    pub state: &'static str,
    pub signal: Signal,
}

impl WorkerState {
    /// The state after `signal` at `now_ms`: `Ok(None)` when nothing changes.
    pub fn next(self, signal: Signal, now_ms: u64) -> Result<Option<WorkerState>, IllegalTransition> {
        use WorkerState::*;
        let next = match (self, signal) {
            (_, Signal::Register) => Registered { at_ms: now_ms },
            (Active { .. }, Signal::Heartbeat) => return Ok(None),
            (Registered { .. } | Inactive { .. } | Lost { .. }, Signal::Heartbeat) => {
                Active { since_ms: now_ms }
            }
            (Registered { .. } | Active { .. }, Signal::Silent { loss_grace_ms }) => {
                Inactive { since_ms: now_ms, lost_at_ms: now_ms.saturating_add(loss_grace_ms) }
            }
            (Inactive { .. }, Signal::LossDue) => Lost { since_ms: now_ms },
            (Registered { .. } | Active { .. } | Inactive { .. } | Lost { .. }, Signal::Leave) => {
                Left { at_ms: now_ms }
            }
            (state, signal) => return Err(IllegalTransition { state: state.name(), signal }),
        };
        Ok(Some(next))
    }

    /// Registered and heard from within the inactivity timeout.
    pub fn is_active(self) -> bool {
        matches!(self, WorkerState::Registered { .. } | WorkerState::Active { .. })
    }

    pub fn name(self) -> &'static str {
        match self {
            WorkerState::Registered { .. } => "registered",
            WorkerState::Active { .. } => "active",
            WorkerState::Inactive { .. } => "inactive",
            WorkerState::Lost { .. } => "lost",
            WorkerState::Left { .. } => "left",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::WorkerState::*;
    use super::*;

    const SILENT: Signal = Signal::Silent { loss_grace_ms: 30 };

    fn every_state() -> [WorkerState; 5] {
        [
            Registered { at_ms: 1 },
            Active { since_ms: 1 },
            Inactive { since_ms: 1, lost_at_ms: 31 },
            Lost { since_ms: 1 },
            Left { at_ms: 1 },
        ]
    }

    #[test]
    fn registering_starts_over_from_any_state() {
        for state in every_state() {
            assert_eq!(state.next(Signal::Register, 5), Ok(Some(Registered { at_ms: 5 })), "{state:?}");
        }
    }

    #[test]
    fn heartbeats_make_a_worker_active_and_bring_it_back() {
        assert_eq!(Registered { at_ms: 1 }.next(Signal::Heartbeat, 5), Ok(Some(Active { since_ms: 5 })));
        assert_eq!(Active { since_ms: 1 }.next(Signal::Heartbeat, 5), Ok(None), "no change, no event");
        let inactive = Inactive { since_ms: 1, lost_at_ms: 31 };
        assert_eq!(inactive.next(Signal::Heartbeat, 5), Ok(Some(Active { since_ms: 5 })));
        assert_eq!(Lost { since_ms: 1 }.next(Signal::Heartbeat, 5), Ok(Some(Active { since_ms: 5 })));
    }

    #[test]
    fn silence_makes_a_worker_inactive_then_lost() {
        let inactive = Inactive { since_ms: 5, lost_at_ms: 35 };
        assert_eq!(Active { since_ms: 1 }.next(SILENT, 5), Ok(Some(inactive)));
        assert_eq!(Registered { at_ms: 1 }.next(SILENT, 5), Ok(Some(inactive)), "registered, then silent");
        assert_eq!(inactive.next(Signal::LossDue, 35), Ok(Some(Lost { since_ms: 35 })));
    }

    #[test]
    fn any_present_worker_can_leave() {
        for state in every_state().into_iter().filter(|s| !matches!(s, Left { .. })) {
            assert_eq!(state.next(Signal::Leave, 9), Ok(Some(Left { at_ms: 9 })), "{state:?}");
        }
    }

    #[test]
    fn illegal_transitions_are_rejected() {
        let left = Left { at_ms: 1 };
        for signal in [Signal::Heartbeat, SILENT, Signal::LossDue, Signal::Leave] {
            let err = left.next(signal, 5).expect_err("a worker that left takes only a registration");
            assert_eq!(err.state, "left");
        }
        for state in [Inactive { since_ms: 1, lost_at_ms: 31 }, Lost { since_ms: 1 }] {
            assert!(state.next(SILENT, 5).is_err(), "{state:?} is already silent");
        }
        for state in [Registered { at_ms: 1 }, Active { since_ms: 1 }, Lost { since_ms: 1 }] {
            assert!(state.next(Signal::LossDue, 5).is_err(), "{state:?} is not losing its tasks");
        }
    }

    #[test]
    fn only_registered_and_active_workers_count_as_active() {
        let active: Vec<bool> = every_state().iter().map(|s| s.is_active()).collect();
        assert_eq!(active, [true, true, false, false, false]);
    }
}
