//! The fleet: the one owner of every worker's lifecycle.
//!
//! Registration, heartbeats (as liveness), silence, loss and leaving go through here, and
//! every change is published once on the event stream as a typed [`ClusterEvent`]. The task
//! actor, alerting and the history restorer subscribe; one that falls behind resyncs from
//! [`Fleet::snapshot`] through [`crate::events::Subscription`], never from a copy of its own.
//!
//! The heartbeat path only stamps an atomic and reads an atomic tag; the state's lock is
//! taken when the state changes.

mod state;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cloudai_domain::{RunningTask, WorkerId, WorkerInfo};
use parking_lot::{Mutex, RwLock};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

pub use state::{IllegalTransition, Signal, WorkerState};

use crate::events::{ClusterEvent, EventBus};

#[derive(Clone, Debug)]
pub struct FleetConfig {
    /// A worker with no heartbeat for this long is inactive.
    pub inactivity_timeout: Duration,
    /// An inactive worker is lost (its tasks go elsewhere) after this long.
    pub loss_grace: Duration,
    /// After a master restart, how long a worker that held tasks has to register again.
    pub restart_grace: Duration,
    /// A lost worker silent this long is forgotten, as if it had left.
    pub forget_after: Duration,
    /// Most workers registered at once; past it, new ones are refused.
    pub max_workers: usize,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            inactivity_timeout: Duration::from_secs(30),
            loss_grace: Duration::from_secs(30),
            restart_grace: Duration::from_secs(30),
            forget_after: Duration::from_secs(24 * 3600),
            max_workers: 100_000,
        }
    }
}

impl FleetConfig {
    /// How often the checker looks: often enough to be within ~10% of the timeout.
    fn check_interval(&self) -> Duration {
        (self.inactivity_timeout / 10).clamp(Duration::from_millis(20), Duration::from_secs(1))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FleetError {
    #[error("worker {0} is not registered; register again")]
    UnknownWorker(WorkerId),
    #[error("the master is shutting down")]
    ShuttingDown,
    #[error("{limit} workers are registered, the most this master takes (MAX_WORKERS)")]
    Full { limit: usize },
}

/// Every worker's registration and state, as of one moment.
#[derive(Clone, Debug, Default)]
pub struct FleetSnapshot {
    pub workers: Vec<(Arc<WorkerInfo>, WorkerState)>,
}

/// A tag of the state, readable without the state's lock.
const TAG_ACTIVE: u8 = 0;
const TAG_OTHER: u8 = 1;

struct Member {
    info: RwLock<Arc<WorkerInfo>>,
    state: Mutex<WorkerState>,
    tag: AtomicU8,
    /// Milliseconds on the fleet's clock at the latest heartbeat's arrival.
    last_seen_ms: AtomicU64,
    /// The worker said it cannot run tasks; why is in `unhealthy_reason`.
    unhealthy: std::sync::atomic::AtomicBool,
    unhealthy_reason: Mutex<Option<String>>,
}

impl Member {
    fn set(&self, state: WorkerState) {
        let tag = if matches!(state, WorkerState::Active { .. }) { TAG_ACTIVE } else { TAG_OTHER };
        self.tag.store(tag, Ordering::Release);
    }
}

/// Hashes worker ids on every heartbeat (here and in telemetry): foldhash is several times
/// cheaper than SipHash on short keys and still seeded per process, so ids cannot be chosen
/// to collide.
pub(crate) type IdHasher = foldhash::fast::RandomState;

struct Inner {
    config: FleetConfig,
    members: RwLock<HashMap<WorkerId, Arc<Member>, IdHasher>>,
    /// Members' memory sizes with their counts, changed under the `members` write lock, so
    /// the largest is read without a pass over the fleet (every submission asks).
    memory_mb: Mutex<std::collections::BTreeMap<u64, usize>>,
    /// Workers that held tasks before a master restart and have not registered since, with
    /// the time they are lost at.
    awaited: Mutex<HashMap<WorkerId, u64>>,
    events: EventBus,
    epoch: Instant,
    cancel: CancellationToken,
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Removes a member and tells the subscribers, which drop what they keep about it;
    /// `forgotten` when it went silent rather than leaving.
    fn forget(&self, worker_id: &WorkerId, forgotten: bool) -> bool {
        let member = {
            let mut members = self.members.write();
            let Some(member) = members.remove(worker_id) else { return false };
            self.uncount_memory(member.info.read().memory_mb);
            member
        };
        self.signal(worker_id, &member, Signal::Leave, self.now_ms());
        self.events.publish(ClusterEvent::WorkerUnregistered { worker_id: worker_id.clone(), forgotten });
        true
    }

    fn uncount_memory(&self, memory_mb: u64) {
        let mut sizes = self.memory_mb.lock();
        if let Some(n) = sizes.get_mut(&memory_mb) {
            *n -= 1;
            if *n == 0 {
                sizes.remove(&memory_mb);
            }
        }
    }

    fn count_memory(&self, memory_mb: u64) {
        *self.memory_mb.lock().entry(memory_mb).or_insert(0) += 1;
    }

    fn member(&self, worker_id: &WorkerId) -> Option<Arc<Member>> {
        self.members.read().get(worker_id).cloned()
    }

    /// Applies `signal` to a member's state and publishes what changed: `(before, after)`.
    fn signal(
        &self,
        worker_id: &WorkerId,
        member: &Member,
        signal: Signal,
        now_ms: u64,
    ) -> Option<(WorkerState, WorkerState)> {
        let mut state = member.state.lock();
        let before = *state;
        // A heartbeat may have arrived since the checker looked: it is stamped before the lock.
        let silent_ms = now_ms.saturating_sub(member.last_seen_ms.load(Ordering::Relaxed));
        if matches!(signal, Signal::Silent { .. })
            && silent_ms <= self.config.inactivity_timeout.as_millis() as u64
        {
            return None;
        }
        let after = match before.next(signal, now_ms) {
            Ok(Some(after)) => after,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(worker_id = %worker_id, error = %e, "ignored");
                return None;
            }
        };
        *state = after;
        member.set(after);
        drop(state);
        let worker_id = worker_id.clone();
        let event = match (before, after) {
            (WorkerState::Inactive { .. } | WorkerState::Lost { .. }, WorkerState::Active { .. }) => {
                info!(worker_id = %worker_id, "worker active again");
                ClusterEvent::WorkerActive { worker_id }
            }
            (_, WorkerState::Inactive { .. }) => {
                warn!(worker_id = %worker_id, silent_ms, "worker inactive");
                ClusterEvent::WorkerInactive { worker_id }
            }
            (_, WorkerState::Lost { .. }) => {
                warn!(worker_id = %worker_id, "worker lost: its tasks go elsewhere");
                ClusterEvent::WorkerLost { worker_id }
            }
            // Registration and leaving publish with their data; a first heartbeat is no news.
            _ => return Some((before, after)),
        };
        self.events.publish(event);
        Some((before, after))
    }
}

/// Handle to the fleet; cheap to clone.
#[derive(Clone)]
pub struct Fleet {
    inner: Arc<Inner>,
}

impl Fleet {
    pub fn new(config: FleetConfig, events: EventBus) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                members: RwLock::new(HashMap::default()),
                memory_mb: Mutex::new(std::collections::BTreeMap::new()),
                awaited: Mutex::new(HashMap::new()),
                events,
                epoch: Instant::now(),
                cancel: CancellationToken::new(),
            }),
        }
    }

    /// Starts the liveness checker on `tracker`; it ends when `stop` fires.
    pub fn start(&self, tracker: &TaskTracker, stop: CancellationToken) {
        let inner = Arc::clone(&self.inner);
        tracker.spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = checker(&inner) => {}
            }
            inner.cancel.cancel();
        });
    }

    /// Registers a worker, or refreshes its registration; `true` if it was not a member.
    /// `ending`: the tasks it ended whose reports are on their way, when it says.
    pub fn register(
        &self,
        info: Arc<WorkerInfo>,
        running: Vec<RunningTask>,
        ending: Option<Vec<String>>,
    ) -> Result<bool, FleetError> {
        let inner = &self.inner;
        if inner.cancel.is_cancelled() {
            return Err(FleetError::ShuttingDown);
        }
        let now = inner.now_ms();
        let worker_id = info.worker_id.clone();
        let (member, is_new) = {
            let mut members = inner.members.write();
            match members.get(&worker_id) {
                Some(member) => {
                    let before = std::mem::replace(&mut *member.info.write(), Arc::clone(&info));
                    inner.uncount_memory(before.memory_mb);
                    inner.count_memory(info.memory_mb);
                    (Arc::clone(member), false)
                }
                None if members.len() >= inner.config.max_workers => {
                    return Err(FleetError::Full { limit: inner.config.max_workers });
                }
                None => {
                    let member = Arc::new(Member {
                        info: RwLock::new(Arc::clone(&info)),
                        state: Mutex::new(WorkerState::Registered { at_ms: now }),
                        tag: AtomicU8::new(TAG_OTHER),
                        last_seen_ms: AtomicU64::new(now),
                        unhealthy: Default::default(),
                        unhealthy_reason: Mutex::new(None),
                    });
                    members.insert(worker_id.clone(), Arc::clone(&member));
                    inner.count_memory(info.memory_mb);
                    (member, true)
                }
            }
        };
        member.last_seen_ms.store(now, Ordering::Relaxed);
        inner.signal(&worker_id, &member, Signal::Register, now);
        inner.awaited.lock().remove(&worker_id);
        info!(worker_id = %worker_id, new = is_new, "worker registered");
        let (running, ending) = (Arc::new(running), ending.map(Arc::new));
        inner.events.publish(ClusterEvent::WorkerRegistered { worker_id, info, running, ending });
        Ok(is_new)
    }

    /// A heartbeat arrived: the worker is alive. Cheap unless its state changes; `true` when
    /// the worker came back from silence.
    pub fn heartbeat(&self, worker_id: &WorkerId, unhealthy: Option<&str>) -> Result<bool, FleetError> {
        let inner = &self.inner;
        let Some(member) = inner.member(worker_id) else {
            return Err(FleetError::UnknownWorker(worker_id.clone()));
        };
        let now = inner.now_ms();
        member.last_seen_ms.store(now, Ordering::Relaxed);
        if member.unhealthy.load(Ordering::Relaxed) != unhealthy.is_some() {
            self.set_health(worker_id, &member, unhealthy);
        }
        if member.tag.load(Ordering::Acquire) == TAG_ACTIVE {
            return Ok(false);
        }
        let changed = inner.signal(worker_id, &member, Signal::Heartbeat, now);
        Ok(changed.is_some_and(|(before, _)| {
            matches!(before, WorkerState::Inactive { .. } | WorkerState::Lost { .. })
        }))
    }

    /// The worker's own word on whether it can run tasks changed: published once per change.
    fn set_health(&self, worker_id: &WorkerId, member: &Member, unhealthy: Option<&str>) {
        let mut reason = member.unhealthy_reason.lock();
        if reason.is_some() == unhealthy.is_some() {
            return; // another heartbeat got here first
        }
        *reason = unhealthy.map(str::to_owned);
        member.unhealthy.store(unhealthy.is_some(), Ordering::Relaxed);
        match unhealthy {
            Some(why) => {
                warn!(worker_id = %worker_id, reason = why, "worker unhealthy: no tasks go there until it recovers")
            }
            None => info!(worker_id = %worker_id, "worker healthy again"),
        }
        let unhealthy = reason.clone();
        drop(reason);
        self.inner.events.publish(ClusterEvent::WorkerHealth { worker_id: worker_id.clone(), unhealthy });
    }

    /// Why the worker cannot run tasks, when it said so in its latest heartbeat.
    pub fn unhealthy(&self, worker_id: &WorkerId) -> Option<String> {
        self.inner.member(worker_id).and_then(|m| m.unhealthy_reason.lock().clone())
    }

    /// A worker left cleanly: it is forgotten. `false` if it was not registered.
    pub fn leave(&self, worker_id: &WorkerId) -> bool {
        let left = self.inner.forget(worker_id, false);
        if left {
            info!(worker_id = %worker_id, "worker unregistered");
        }
        left
    }

    /// After a master restart: a worker that held tasks is lost unless it registers within the
    /// restart grace.
    pub fn expect(&self, worker_id: WorkerId) {
        let inner = &self.inner;
        if inner.members.read().contains_key(&worker_id) {
            return;
        }
        let lost_at = inner.now_ms().saturating_add(inner.config.restart_grace.as_millis() as u64);
        inner.awaited.lock().entry(worker_id).or_insert(lost_at);
    }

    /// The least time after a worker's last heartbeat before its tasks may run elsewhere;
    /// workers are told at registration, so they stop their tasks before it when cut off.
    pub fn loss_after(&self) -> Duration {
        let config = &self.inner.config;
        config.inactivity_timeout + config.loss_grace
    }

    pub fn info(&self, worker_id: &WorkerId) -> Option<Arc<WorkerInfo>> {
        self.inner.member(worker_id).map(|m| Arc::clone(&m.info.read()))
    }

    pub fn state(&self, worker_id: &WorkerId) -> Option<WorkerState> {
        self.inner.member(worker_id).map(|m| *m.state.lock())
    }

    pub fn is_registered(&self, worker_id: &WorkerId) -> bool {
        self.inner.members.read().contains_key(worker_id)
    }

    /// Every member's registration and state.
    pub fn snapshot(&self) -> FleetSnapshot {
        let members: Vec<Arc<Member>> = self.inner.members.read().values().cloned().collect();
        let workers = members.iter().map(|m| (Arc::clone(&m.info.read()), *m.state.lock())).collect();
        FleetSnapshot { workers }
    }

    /// The most memory any registered worker has (MB), or `None` with no worker.
    pub fn largest_memory_mb(&self) -> Option<u64> {
        self.inner.memory_mb.lock().keys().next_back().copied()
    }

    /// (members, active members).
    pub fn counts(&self) -> (usize, usize) {
        let members = self.inner.members.read();
        let active = members.values().filter(|m| m.state.lock().is_active()).count();
        (members.len(), active)
    }
}

/// A pause of the checker this long is the master's own stall, not normal scheduling delay:
/// a quarter of the inactivity timeout (a shorter one could not make a worker look silent).
fn stall_threshold(config: &FleetConfig) -> Duration {
    (config.inactivity_timeout / 4).max(Duration::from_millis(200))
}

impl Inner {
    /// Moves every worker's last heartbeat and loss deadline `stalled_ms` later (no later
    /// than `now`), so time the master did not run never counts as a worker's silence.
    fn forgive(&self, stalled_ms: u64, now: u64) {
        let members: Vec<Arc<Member>> = self.members.read().values().cloned().collect();
        for member in members {
            let _ = member.last_seen_ms.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |seen| {
                Some(seen.saturating_add(stalled_ms).min(now))
            });
            let mut state = member.state.lock();
            if let WorkerState::Inactive { since_ms, lost_at_ms } = *state {
                *state =
                    WorkerState::Inactive { since_ms, lost_at_ms: lost_at_ms.saturating_add(stalled_ms) };
            }
        }
        for lost_at in self.awaited.lock().values_mut() {
            *lost_at = lost_at.saturating_add(stalled_ms);
        }
    }
}

async fn checker(inner: &Inner) {
    let timeout_ms = inner.config.inactivity_timeout.as_millis() as u64;
    let loss_grace_ms = inner.config.loss_grace.as_millis() as u64;
    let forget_ms = inner.config.forget_after.as_millis() as u64;
    let interval = inner.config.check_interval();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stall_after_ms = stall_threshold(&inner.config).as_millis() as u64;
    let mut last_check = inner.now_ms();
    loop {
        tick.tick().await;
        let now = inner.now_ms();
        // The master itself did not run (paused, swapped out, a stopped VM): the silence it
        // would see is its own, so it gives every worker that time back, as after a restart.
        let stalled = now.saturating_sub(last_check).saturating_sub(interval.as_millis() as u64);
        last_check = now;
        if stalled >= stall_after_ms {
            warn!(
                stalled_ms = stalled,
                "the master was not running; workers get that time back before any is marked inactive"
            );
            inner.forgive(stalled, now);
        }
        let members: Vec<(WorkerId, Arc<Member>)> =
            inner.members.read().iter().map(|(id, m)| (id.clone(), Arc::clone(m))).collect();
        for (worker_id, member) in members {
            let state = *member.state.lock();
            let signal = match state {
                WorkerState::Registered { .. } | WorkerState::Active { .. }
                    if now.saturating_sub(member.last_seen_ms.load(Ordering::Relaxed)) > timeout_ms =>
                {
                    Signal::Silent { loss_grace_ms }
                }
                WorkerState::Inactive { lost_at_ms, .. } if lost_at_ms <= now => Signal::LossDue,
                WorkerState::Lost { .. }
                    if now.saturating_sub(member.last_seen_ms.load(Ordering::Relaxed)) >= forget_ms =>
                {
                    info!(worker_id = %worker_id, "worker forgotten: silent past WORKER_FORGET_AFTER");
                    inner.forget(&worker_id, true);
                    continue;
                }
                _ => continue,
            };
            inner.signal(&worker_id, &member, signal, now);
        }
        let due: Vec<WorkerId> = {
            let mut awaited = inner.awaited.lock();
            let due: Vec<WorkerId> =
                awaited.iter().filter(|(_, at)| **at <= now).map(|(id, _)| id.clone()).collect();
            for id in &due {
                awaited.remove(id);
            }
            due
        };
        for worker_id in due {
            warn!(worker_id = %worker_id, "worker did not come back after the master restarted: its tasks go elsewhere");
            inner.events.publish(ClusterEvent::WorkerLost { worker_id });
        }
    }
}

/// What a subscriber gets: the next event, or, after it fell behind, the whole fleet.
#[derive(Debug)]
pub enum Update {
    Event(ClusterEvent),
    /// Events were missed: take every worker's registration and state from here.
    Resync(FleetSnapshot),
}

/// A subscription to the event stream that resyncs from the fleet after a lag, so no
/// subscriber keeps a catch-up copy of its own.
pub struct Subscription {
    events: tokio::sync::broadcast::Receiver<ClusterEvent>,
    fleet: Fleet,
    name: &'static str,
}

impl Fleet {
    /// Subscribes `name` (for the log line when it lags); call before the events it needs.
    pub fn subscribe(&self, name: &'static str) -> Subscription {
        Subscription { events: self.inner.events.subscribe(), fleet: self.clone(), name }
    }
}

impl Subscription {
    /// The next update; `None` once the stream has closed.
    pub async fn recv(&mut self) -> Option<Update> {
        use tokio::sync::broadcast::error::RecvError;
        match self.events.recv().await {
            Ok(event) => Some(Update::Event(event)),
            Err(RecvError::Lagged(missed)) => {
                warn!(
                    subscriber = self.name,
                    missed, "lagged behind cluster events; resyncing from the fleet"
                );
                Some(Update::Resync(self.fleet.snapshot()))
            }
            Err(RecvError::Closed) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str, memory_mb: u64) -> Arc<WorkerInfo> {
        Arc::new(WorkerInfo {
            worker_id: WorkerId::parse(id).expect("id"),
            hostname: id.into(),
            cpu_cores: 4.0,
            memory_mb,
            gpus: Vec::new(),
            labels: Default::default(),
            version: "test".into(),
            drivers: vec![cloudai_domain::Driver::Process],
            registered_at: 0,
        })
    }

    #[test]
    fn the_largest_memory_follows_registrations_and_leaves() {
        let fleet = Fleet::new(FleetConfig::default(), EventBus::new(16));
        assert_eq!(fleet.largest_memory_mb(), None);
        fleet.register(info("a", 4096), Vec::new(), None).expect("register");
        fleet.register(info("b", 8192), Vec::new(), None).expect("register");
        fleet.register(info("c", 8192), Vec::new(), None).expect("register");
        assert_eq!(fleet.largest_memory_mb(), Some(8192));
        fleet.leave(&WorkerId::parse("b").expect("id"));
        assert_eq!(fleet.largest_memory_mb(), Some(8192), "c still has 8192");
        // Registering again with less memory replaces the old figure.
        fleet.register(info("c", 1024), Vec::new(), None).expect("register");
        assert_eq!(fleet.largest_memory_mb(), Some(4096));
        fleet.leave(&WorkerId::parse("a").expect("id"));
        fleet.leave(&WorkerId::parse("c").expect("id"));
        assert_eq!(fleet.largest_memory_mb(), None);
    }

    #[test]
    fn a_stall_of_the_master_is_not_a_workers_silence() {
        let config = FleetConfig { inactivity_timeout: Duration::from_secs(10), ..FleetConfig::default() };
        let fleet = Fleet::new(config, EventBus::new(16));
        let id = WorkerId::parse("a").expect("id");
        fleet.register(info("a", 4096), Vec::new(), None).expect("register");
        let inner = &fleet.inner;
        let member = inner.member(&id).expect("member");
        // Last heard at 1 s; the master then did not run for 18 s, and looks at 20 s.
        member.last_seen_ms.store(1_000, Ordering::Relaxed);
        *member.state.lock() = WorkerState::Inactive { since_ms: 12_000, lost_at_ms: 40_000 };
        inner.forgive(18_000, 20_000);
        assert_eq!(member.last_seen_ms.load(Ordering::Relaxed), 19_000, "silent 1 s, not 19 s");
        assert_eq!(*member.state.lock(), WorkerState::Inactive { since_ms: 12_000, lost_at_ms: 58_000 });
        // Never past now: a worker heard during the stall is not heard in the future.
        member.last_seen_ms.store(19_500, Ordering::Relaxed);
        inner.forgive(18_000, 20_000);
        assert_eq!(member.last_seen_ms.load(Ordering::Relaxed), 20_000);
        assert_eq!(stall_threshold(&inner.config), Duration::from_millis(2_500));
    }
}
