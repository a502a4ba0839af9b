//! Why a task is stopped, as its supervisor receives it.

use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// The master asked (CancelTask): report `cancelled` with this reason.
    Cancel(String),
    /// The worker shuts down: report the attempt interrupted, to run again elsewhere.
    Shutdown,
    /// The worker lost contact with the master (the reason says for how long): report the
    /// attempt interrupted once it can.
    Fenced(String),
    /// The master no longer wants the task here: report nothing.
    Stale,
}

impl StopReason {
    /// When several stops arrive, the strongest decides what is reported.
    fn rank(&self) -> u8 {
        match self {
            StopReason::Shutdown => 0,
            StopReason::Fenced(_) => 1,
            StopReason::Cancel(_) => 2,
            StopReason::Stale => 3,
        }
    }
}

#[derive(Debug)]
pub(crate) struct StopRequest {
    pub reason: StopReason,
    /// Time between terminate and kill.
    pub grace: Duration,
}

/// The reason that decides the report when `new` arrives after `current`.
pub(crate) fn strongest(current: Option<StopReason>, new: StopReason) -> StopReason {
    match current {
        Some(current) if current.rank() >= new.rank() => current,
        _ => new,
    }
}
