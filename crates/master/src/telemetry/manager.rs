//! The TelemetryManager: one async task per registered worker, each draining a
//! bounded channel. Whether a worker is alive is the fleet's to decide (`crate::fleet`);
//! this keeps the figures.
//!
//! `process_heartbeat` is called on the RPC path and never waits: it stamps the
//! heartbeat with a per-worker sequence number and `try_send`s it. When the channel
//! is full the heartbeat goes to a one-element overflow slot (replacing an older one
//! there), so the newest figures always win and a slow consumer never makes a worker
//! look dead. Sequence numbers let the worker task discard anything older than what
//! it already applied; everything not applied is counted as dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use cloudai_history::{History, HistoryConfig, MinuteBucket, Series};

use super::model::WorkerTelemetry;
use crate::events::ClusterEvent;
use crate::fleet::{Fleet, IdHasher, Update};
use crate::shutdown::Stage;
use cloudai_domain::time::unix_ms;
use cloudai_domain::{GpuInfo, GpuStats, HeartbeatSample, RunningTask, WorkerId, WorkerInfo};

#[derive(Clone, Debug)]
pub struct TelemetryConfig {
    /// A worker with no heartbeat for this long is marked inactive (by the fleet).
    pub inactivity_timeout: Duration,
    /// Capacity of each worker's heartbeat channel.
    pub channel_capacity: usize,
    /// Per-worker heartbeat rate limit (token bucket); `None` turns it off.
    pub rate_limit: Option<RateLimit>,
    /// How long raw samples and minute buckets are kept in memory.
    pub history: HistoryConfig,
}

/// A token bucket: `per_second` heartbeats on average, bursts of up to `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
    pub burst: f64,
}

impl Default for RateLimit {
    /// Far above any sane heartbeat interval (even 100 ms); stops a runaway worker.
    fn default() -> Self {
        Self { per_second: 10.0, burst: 20.0 }
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            inactivity_timeout: Duration::from_secs(30),
            channel_capacity: 10,
            rate_limit: Some(RateLimit::default()),
            history: HistoryConfig::default(),
        }
    }
}

struct Bucket {
    tokens: f64,
    refilled_ms: u64,
}

impl Bucket {
    /// Takes a token, or says how long until one is available.
    fn take(&mut self, limit: RateLimit, now_ms: u64) -> Result<(), Duration> {
        let elapsed = now_ms.saturating_sub(self.refilled_ms) as f64 / 1000.0;
        self.tokens = (self.tokens + elapsed * limit.per_second).min(limit.burst);
        self.refilled_ms = now_ms;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64((1.0 - self.tokens) / limit.per_second.max(1e-9)))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TelemetryError {
    #[error("worker {0} is not registered; register again")]
    UnknownWorker(WorkerId),
    #[error("the master is shutting down")]
    ShuttingDown,
    #[error("heartbeat rate limit exceeded; retry after {} ms", retry_after.as_millis().max(1))]
    RateLimited { retry_after: Duration },
}

/// A minute of a worker's history that just closed, for the store.
pub type ClosedMinute = (WorkerId, MinuteBucket);

/// A silent worker's open minute is closed this long after the minute ends.
const MINUTE_GRACE_MS: i64 = 10_000;

/// Called from a worker's task after each applied heartbeat.
pub type UpdateCallback = Arc<dyn Fn(&WorkerTelemetry) + Send + Sync>;

/// Cluster-wide counters.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct TelemetryStats {
    pub workers: usize,
    pub active_workers: usize,
    pub heartbeats_received: u64,
    pub heartbeats_dropped: u64,
    pub heartbeats_rejected: u64,
    pub heartbeats_rate_limited: u64,
    /// History minutes dropped because the store fell behind.
    pub history_minutes_dropped: u64,
}

struct Queued {
    seq: u64,
    /// Unix milliseconds; the history is kept on the master's clock, not the worker's.
    received_at_ms: i64,
    sample: HeartbeatSample,
}

struct WorkerSlot {
    worker_id: WorkerId,
    /// The registered GPUs: heartbeats leave their uuids and models out.
    gpus: RwLock<Arc<WorkerInfo>>,
    /// Bumped with every change of `gpus` (while holding its write lock).
    gpus_version: AtomicU64,
    telemetry: Mutex<WorkerTelemetry>,
    tx: mpsc::Sender<Box<Queued>>,
    overflow: Mutex<Option<Box<Queued>>>,
    wake: Notify,
    next_seq: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    bucket: Mutex<Bucket>,
    history: Mutex<History>,
    history_restored: AtomicBool,
    /// Digest of the running tasks last passed on, and when.
    running_digest: AtomicU64,
    running_forwarded_ms: AtomicU64,
    cancel: CancellationToken,
}

/// How often an unchanged list of running tasks is passed on anyway.
pub const RUNNING_RECHECK: Duration = Duration::from_secs(10);

impl WorkerSlot {
    fn running_changed(&self, running: &[RunningTask], now_ms: u64) -> bool {
        use std::hash::{BuildHasher, Hash, Hasher};
        // Compared only with this worker's previous digest: a fixed seed is enough, and a
        // collision would only delay passing a change on until the next recheck.
        let mut h = foldhash::fast::FixedState::default().build_hasher();
        for t in running {
            t.task_id.hash(&mut h);
            t.status.hash(&mut h);
        }
        let digest = h.finish();
        let last = self.running_forwarded_ms.load(Ordering::Relaxed);
        let stale = now_ms.saturating_sub(last) >= RUNNING_RECHECK.as_millis() as u64;
        if self.running_digest.swap(digest, Ordering::Relaxed) != digest || stale {
            self.running_forwarded_ms.store(now_ms, Ordering::Relaxed);
            return !running.is_empty() || stale;
        }
        false
    }

    fn snapshot(&self, is_active: bool) -> WorkerTelemetry {
        self.with_current(is_active, WorkerTelemetry::clone)
    }

    /// Calls `f` on the latest figures, with the fleet's verdict and the counters filled in.
    fn with_current<R>(&self, is_active: bool, f: impl FnOnce(&WorkerTelemetry) -> R) -> R {
        let mut t = self.telemetry.lock();
        t.is_active = is_active;
        t.heartbeats_received = self.received.load(Ordering::Relaxed);
        t.heartbeats_dropped = self.dropped.load(Ordering::Relaxed);
        f(&t)
    }
}

struct Inner {
    config: TelemetryConfig,
    workers: RwLock<HashMap<WorkerId, Arc<WorkerSlot>, IdHasher>>,
    fleet: Fleet,
    callback: RwLock<Option<UpdateCallback>>,
    epoch: Instant,
    cancel: CancellationToken,
    tracker: TaskTracker,
    started: AtomicBool,
    /// A new worker's history starts as a clone of this (its config validated once).
    empty_history: History,
    /// Closed minutes for the store writer; never waited on (a full queue drops, counted).
    closed_minutes: mpsc::Sender<ClosedMinute>,
    minutes_dropped: AtomicU64,
    received: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    limited: AtomicU64,
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Hands a closed minute to the store writer without waiting.
    fn persist_minute(&self, worker_id: &WorkerId, bucket: Option<MinuteBucket>) {
        let Some(bucket) = bucket else { return };
        if self.closed_minutes.try_send((worker_id.clone(), bucket)).is_err() {
            self.minutes_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Closes a worker's open minute if it ended before `due_ms` (`i64::MAX`: now, whatever
    /// its end) and hands it to the store writer.
    fn close_minute(&self, slot: &WorkerSlot, due_ms: i64) {
        let closed = slot.history.lock().tick(due_ms);
        if closed.is_some() {
            self.persist_minute(&slot.worker_id, closed);
        }
    }

    fn slot(&self, worker_id: &WorkerId) -> Option<Arc<WorkerSlot>> {
        self.workers.read().get(worker_id).cloned()
    }

    fn is_active(&self, worker_id: &WorkerId) -> bool {
        self.fleet.state(worker_id).is_some_and(|s| s.is_active())
    }
}

/// Handle to the telemetry state; cheap to clone.
#[derive(Clone)]
pub struct TelemetryManager {
    inner: Arc<Inner>,
}

impl TelemetryManager {
    /// `closed_minutes` receives every worker's history minutes as they close. Fails only on
    /// an invalid history configuration.
    pub fn new(
        config: TelemetryConfig,
        fleet: Fleet,
        closed_minutes: mpsc::Sender<ClosedMinute>,
        stage: &Stage,
    ) -> Result<Self, cloudai_history::HistoryError> {
        let empty_history = History::new(config.history.clone())?;
        let config = TelemetryConfig { channel_capacity: config.channel_capacity.max(1), ..config };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                workers: RwLock::new(HashMap::default()),
                fleet,
                callback: RwLock::new(None),
                epoch: Instant::now(),
                cancel: stage.token(),
                tracker: stage.tracker().clone(),
                started: AtomicBool::new(false),
                empty_history,
                closed_minutes,
                minutes_dropped: AtomicU64::new(0),
                received: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                rejected: AtomicU64::new(0),
                limited: AtomicU64::new(0),
            }),
        })
    }

    /// Starts closing silent workers' history minutes and following the fleet. Idempotent.
    pub fn start(&self) {
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let inner = Arc::clone(&self.inner);
        self.inner.tracker.spawn(minute_closer(inner));
        self.follow_fleet();
    }

    /// Whether a registered worker still waits for its stored minutes (see `restore_history`).
    pub fn needs_history(&self, worker_id: &WorkerId) -> bool {
        let slot = self.inner.workers.read().get(worker_id).cloned();
        slot.is_some_and(|slot| !slot.history_restored.load(Ordering::Acquire))
    }

    /// Gives a registered worker its stored minute buckets back (after a master restart, or
    /// when it registers again after leaving); closed minutes it already holds win.
    /// `false` if the worker is not registered.
    pub fn restore_history(&self, worker_id: &WorkerId, buckets: Vec<MinuteBucket>) -> bool {
        let Some(slot) = self.inner.workers.read().get(worker_id).cloned() else { return false };
        // Once per registration of a new slot: a second restore would count the open
        // minute's stored part twice, and the slot's history is otherwise kept in memory.
        if !slot.history_restored.swap(true, Ordering::AcqRel) {
            slot.history.lock().restore(buckets);
        }
        true
    }

    /// A worker's history between two unix-ms times, aggregated per `step_ms` (0: as stored).
    /// `None` if the worker is not registered.
    pub fn history(
        &self,
        worker_id: &WorkerId,
        since_ms: i64,
        until_ms: i64,
        step_ms: u64,
    ) -> Option<Series> {
        let slot = self.inner.workers.read().get(worker_id).cloned()?;
        let series = slot.history.lock().query(since_ms, until_ms, step_ms);
        Some(series)
    }

    /// Sets the hook called after every applied heartbeat (store writer, history, alerts).
    pub fn set_update_callback(&self, callback: UpdateCallback) {
        *self.inner.callback.write() = Some(callback);
    }

    /// Gives a registering worker its slot (kept when it registers again), before the fleet
    /// announces it, so its first heartbeat finds the slot.
    pub fn attach(&self, info: Arc<WorkerInfo>) -> Result<(), TelemetryError> {
        let inner = &self.inner;
        if inner.cancel.is_cancelled() {
            return Err(TelemetryError::ShuttingDown);
        }
        let worker_id = info.worker_id.clone();
        let mut workers = inner.workers.write();
        if let Some(slot) = workers.get(&worker_id) {
            let mut gpus = slot.gpus.write();
            *gpus = info;
            slot.gpus_version.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let (tx, rx) = mpsc::channel(inner.config.channel_capacity);
        let slot = Arc::new(WorkerSlot {
            worker_id: worker_id.clone(),
            gpus: RwLock::new(info),
            gpus_version: AtomicU64::new(0),
            telemetry: Mutex::new(WorkerTelemetry::empty(worker_id.clone())),
            tx,
            overflow: Mutex::new(None),
            wake: Notify::new(),
            next_seq: AtomicU64::new(0),
            received: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            running_digest: AtomicU64::new(0),
            running_forwarded_ms: AtomicU64::new(0),
            bucket: Mutex::new(Bucket {
                tokens: inner.config.rate_limit.map_or(0.0, |l| l.burst),
                refilled_ms: inner.now_ms(),
            }),
            history: Mutex::new(inner.empty_history.clone()),
            history_restored: AtomicBool::new(false),
            cancel: inner.cancel.child_token(),
        });
        workers.insert(worker_id.clone(), Arc::clone(&slot));
        let span = tracing::info_span!("worker", worker_id = %worker_id);
        inner.tracker.spawn(worker_loop(Arc::clone(inner), slot, rx).instrument(span));
        Ok(())
    }

    /// Drops the slot of every worker the fleet forgets (it left, or stayed lost past
    /// `WORKER_FORGET_AFTER`), so telemetry holds no worker the fleet does not.
    fn follow_fleet(&self) {
        let mut updates = self.inner.fleet.subscribe("telemetry");
        let manager = self.clone();
        let cancel = self.inner.cancel.clone();
        self.inner.tracker.spawn(async move {
            loop {
                let update = tokio::select! {
                    _ = cancel.cancelled() => break,
                    update = updates.recv() => update,
                };
                match update {
                    Some(Update::Event(ClusterEvent::WorkerUnregistered { worker_id, forgotten: false })) => {
                        manager.detach(&worker_id)
                    }
                    Some(Update::Event(ClusterEvent::WorkerUnregistered { worker_id, forgotten: true })) => {
                        manager.forget(&worker_id)
                    }
                    Some(Update::Event(_)) => {}
                    // A worker between its slot and its registration may be dropped here; its
                    // next heartbeat is refused and it registers again.
                    Some(Update::Resync(snapshot)) => {
                        let known: std::collections::HashSet<WorkerId> =
                            snapshot.workers.iter().map(|(info, _)| info.worker_id.clone()).collect();
                        let gone: Vec<WorkerId> = manager
                            .inner
                            .workers
                            .read()
                            .keys()
                            .filter(|id| !known.contains(*id))
                            .cloned()
                            .collect();
                        for worker_id in gone {
                            manager.detach(&worker_id);
                        }
                    }
                    None => break,
                }
            }
        });
    }

    /// Drops a worker that left, keeping its open minute (all there is of that minute).
    pub fn detach(&self, worker_id: &WorkerId) {
        let Some(slot) = self.inner.workers.write().remove(worker_id) else { return };
        slot.cancel.cancel();
        self.inner.close_minute(&slot, i64::MAX);
    }

    /// Drops a worker the fleet forgot, open minute and all: its stored history is being
    /// deleted, and a minute queued now would be written back after the deletion.
    fn forget(&self, worker_id: &WorkerId) {
        if let Some(slot) = self.inner.workers.write().remove(worker_id) {
            slot.cancel.cancel();
        }
    }

    /// Hands a heartbeat to the worker's task. Never blocks and never waits.
    ///
    /// Returns the ids of the worker's running tasks when they are worth passing on to
    /// the task service: when they changed, and at least every [`RUNNING_RECHECK`]
    /// otherwise, so the steady state costs the task service nothing.
    /// `came_back`: the fleet just saw this worker return from silence.
    pub fn process_heartbeat(
        &self,
        sample: HeartbeatSample,
        came_back: bool,
    ) -> Result<Option<Vec<String>>, TelemetryError> {
        let inner = &self.inner;
        let Some(slot) = inner.slot(&sample.worker_id) else {
            return Err(self.reject(sample.worker_id));
        };
        let now = inner.now_ms();
        if let Some(limit) = inner.config.rate_limit
            && let Err(retry_after) = slot.bucket.lock().take(limit, now)
        {
            // A flooding worker is slowed down (the fleet still counts it alive).
            inner.limited.fetch_add(1, Ordering::Relaxed);
            return Err(TelemetryError::RateLimited { retry_after });
        }
        slot.received.fetch_add(1, Ordering::Relaxed);
        inner.received.fetch_add(1, Ordering::Relaxed);
        // A worker back from silence may run tasks that moved elsewhere meanwhile.
        let forward_running = (slot.running_changed(&sample.running_tasks, now) || came_back)
            .then(|| sample.running_tasks.iter().map(|t| t.task_id.clone()).collect());
        let queued = Box::new(Queued {
            seq: slot.next_seq.fetch_add(1, Ordering::Relaxed),
            received_at_ms: unix_ms(),
            sample,
        });
        match slot.tx.try_send(queued) {
            Ok(()) => Ok(forward_running),
            Err(mpsc::error::TrySendError::Full(queued)) => {
                // Coalesce: the newest heartbeat waits in the overflow slot.
                if slot.overflow.lock().replace(queued).is_some() {
                    slot.dropped.fetch_add(1, Ordering::Relaxed);
                    inner.dropped.fetch_add(1, Ordering::Relaxed);
                }
                slot.wake.notify_one();
                Ok(forward_running)
            }
            Err(mpsc::error::TrySendError::Closed(queued)) => {
                Err(TelemetryError::UnknownWorker(queued.sample.worker_id))
            }
        }
    }

    /// Counts a heartbeat from a worker that is not registered.
    pub fn reject(&self, worker_id: WorkerId) -> TelemetryError {
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        TelemetryError::UnknownWorker(worker_id)
    }

    pub fn get_worker_telemetry(&self, worker_id: &WorkerId) -> Option<WorkerTelemetry> {
        let slot = self.inner.slot(worker_id)?;
        Some(slot.snapshot(self.inner.is_active(worker_id)))
    }

    pub fn get_all_worker_telemetry(&self) -> HashMap<WorkerId, WorkerTelemetry> {
        let mut all = HashMap::new();
        self.for_each_worker(|info, t| {
            all.insert(info.worker_id.clone(), t.clone());
        });
        all
    }

    /// A registered worker's registration (the fleet's).
    pub fn get_worker_info(&self, worker_id: &WorkerId) -> Option<Arc<WorkerInfo>> {
        self.inner.fleet.info(worker_id)
    }

    /// The most memory any registered worker has (MB), or `None` with no worker; cheap.
    pub fn largest_worker_memory_mb(&self) -> Option<u64> {
        self.inner.fleet.largest_memory_mb()
    }

    /// Every registered worker with its latest telemetry, sorted by id.
    pub fn list_workers(&self) -> Vec<(Arc<WorkerInfo>, WorkerTelemetry)> {
        let mut all = Vec::new();
        for (info, state) in self.inner.fleet.snapshot().workers {
            if let Some(slot) = self.inner.slot(&info.worker_id) {
                all.push((info, slot.snapshot(state.is_active())));
            }
        }
        all.sort_by(|a, b| a.0.worker_id.cmp(&b.0.worker_id));
        all
    }

    /// Calls `f` with every registered worker's registration and latest figures, in no order,
    /// without copying them (each worker's figures are locked only during its call).
    pub fn for_each_worker(&self, mut f: impl FnMut(&WorkerInfo, &WorkerTelemetry)) {
        for (info, state) in self.inner.fleet.snapshot().workers {
            if let Some(slot) = self.inner.slot(&info.worker_id) {
                slot.with_current(state.is_active(), |t| f(&info, t));
            }
        }
    }

    pub fn stats(&self) -> TelemetryStats {
        let inner = &self.inner;
        let (workers, active_workers) = inner.fleet.counts();
        TelemetryStats {
            workers,
            active_workers,
            heartbeats_received: inner.received.load(Ordering::Relaxed),
            heartbeats_dropped: inner.dropped.load(Ordering::Relaxed),
            heartbeats_rejected: inner.rejected.load(Ordering::Relaxed),
            heartbeats_rate_limited: inner.limited.load(Ordering::Relaxed),
            history_minutes_dropped: inner.minutes_dropped.load(Ordering::Relaxed),
        }
    }

    /// Closes every worker's open history minute and queues it for the store: call once the
    /// telemetry stage has stopped, so a restart keeps what the minute held.
    pub fn close_open_minutes(&self) {
        let slots: Vec<_> = self.inner.workers.read().values().cloned().collect();
        for slot in slots {
            self.inner.close_minute(&slot, i64::MAX);
        }
    }
}

/// What a worker's task remembers between heartbeats.
#[derive(Default)]
struct Applied {
    /// Sequence number of the latest applied heartbeat.
    seq: Option<u64>,
    /// The registration version every GPU name in the current figures was copied from;
    /// `None` when some came with the heartbeat itself (or none was applied yet).
    names_from: Option<u64>,
}

async fn worker_loop(inner: Arc<Inner>, slot: Arc<WorkerSlot>, mut rx: mpsc::Receiver<Box<Queued>>) {
    let mut applied = Applied::default();
    // Made once, not per heartbeat: each new one registers and unregisters a waiter (a lock).
    let mut cancelled = std::pin::pin!(slot.cancel.cancelled());
    let mut woken = std::pin::pin!(slot.wake.notified());
    loop {
        let rearm = tokio::select! {
            biased;
            _ = &mut cancelled => break,
            msg = rx.recv() => match msg {
                Some(q) => {
                    apply(&inner, &slot, &mut applied, *q);
                    false
                }
                None => break,
            },
            _ = &mut woken => true,
        };
        if rearm {
            woken.set(slot.wake.notified());
        }
        let overflow = slot.overflow.lock().take();
        if let Some(q) = overflow {
            apply(&inner, &slot, &mut applied, *q);
        }
    }
}

fn apply(inner: &Inner, slot: &WorkerSlot, applied: &mut Applied, q: Queued) {
    if applied.seq.is_some_and(|last| q.seq < last) {
        // Older than what is already applied (it sat in the channel behind the overflow).
        slot.dropped.fetch_add(1, Ordering::Relaxed);
        inner.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    applied.seq = Some(q.seq);
    let Queued { received_at_ms, sample, .. } = q;
    let closed = slot.history.lock().append(&history_sample(received_at_ms, &sample));
    if closed.is_some() {
        inner.persist_minute(&sample.worker_id, closed);
    }
    let mut gpus = sample.gpus;
    {
        let mut t = slot.telemetry.lock();
        let registered = slot.gpus.read();
        let version = slot.gpus_version.load(Ordering::Relaxed);
        let reuse = applied.names_from == Some(version);
        applied.names_from = name_gpus(&mut gpus, &mut t.gpus, &registered.gpus, reuse).then_some(version);
        drop(registered);
        t.cpu_usage = sample.cpu_usage;
        t.memory_usage = sample.memory_usage;
        t.gpu_usage = sample.gpu_usage;
        t.memory_used_mb = sample.memory_used_mb;
        t.memory_total_mb = sample.memory_total_mb;
        t.gpus = gpus;
        t.running_tasks = sample.running_tasks;
        t.last_update = received_at_ms.div_euclid(1000);
        t.sample_time_ms = sample.timestamp_ms;
    }
    let callback = inner.callback.read().clone();
    if let Some(callback) = callback {
        callback(&slot.snapshot(inner.is_active(&slot.worker_id)));
    }
}

/// Heartbeats leave GPU uuids and models out: they come from the registration. With `reuse`
/// (every name in `previous` was copied from this same registration) they are moved from the
/// previous figures, neither compared nor copied: the steady state reads no name at all, and
/// those live in memory the heartbeat would otherwise touch only for this. Returns whether
/// every name now in `gpus` came from the registration.
fn name_gpus(gpus: &mut [GpuStats], previous: &mut [GpuStats], registered: &[GpuInfo], reuse: bool) -> bool {
    let mut all_registered = true;
    for g in gpus.iter_mut() {
        if !(g.uuid.is_empty() && g.model.is_empty()) {
            all_registered = false;
            continue;
        }
        let kept = if reuse { previous.iter_mut().find(|p| p.index == g.index) } else { None };
        if let Some(p) = kept.filter(|p| !(p.uuid.is_empty() && p.model.is_empty())) {
            g.uuid = std::mem::take(&mut p.uuid);
            g.model = std::mem::take(&mut p.model);
            continue;
        }
        let Some(registered) = registered.iter().find(|i| i.index == g.index) else { continue };
        g.uuid.clone_from(&registered.uuid);
        g.model.clone_from(&registered.model);
    }
    all_registered
}

fn history_sample(at_ms: i64, s: &HeartbeatSample) -> cloudai_history::Sample {
    cloudai_history::Sample {
        timestamp_ms: at_ms,
        cpu: s.cpu_usage,
        memory: s.memory_usage,
        gpu: s.gpu_usage,
        memory_used_mb: s.memory_used_mb as f64,
        memory_total_mb: s.memory_total_mb as f64,
        gpus: s.gpus.iter().map(|g| (g.index, g.utilization_percent, g.memory_used_mb as f64)).collect(),
    }
}

/// Closes the open minute of workers that went silent, so it reaches the store.
fn close_silent_minutes(inner: &Inner) {
    let due = unix_ms().saturating_sub(MINUTE_GRACE_MS);
    let slots: Vec<_> = inner.workers.read().values().cloned().collect();
    for slot in slots {
        inner.close_minute(&slot, due);
    }
}

/// Every 10 s: closes the open minute of workers that went silent, so it reaches the store.
async fn minute_closer(inner: Arc<Inner>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = inner.cancel.cancelled() => break,
            _ = tick.tick() => close_silent_minutes(&inner),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventBus;
    use crate::fleet::FleetConfig;
    use crate::shutdown::Shutdown;

    fn info(uuid: &str, model: &str) -> Arc<WorkerInfo> {
        Arc::new(WorkerInfo {
            worker_id: WorkerId::parse("w1").expect("id"),
            hostname: "w1".into(),
            cpu_cores: 8.0,
            memory_mb: 1024,
            gpus: vec![GpuInfo { index: 0, uuid: uuid.into(), model: model.into(), memory_total_mb: 80 }],
            labels: Default::default(),
            version: "test".into(),
            drivers: Vec::new(),
            registered_at: 0,
        })
    }

    fn heartbeat(cpu: f64, names: Option<(&str, &str)>) -> HeartbeatSample {
        let (uuid, model) = names.unwrap_or_default();
        HeartbeatSample {
            worker_id: WorkerId::parse("w1").expect("id"),
            timestamp_ms: 0,
            cpu_usage: cpu,
            memory_usage: 0.0,
            gpu_usage: 0.0,
            memory_used_mb: 0,
            memory_total_mb: 0,
            gpus: vec![GpuStats {
                index: 0,
                uuid: uuid.into(),
                model: model.into(),
                utilization_percent: cpu,
                memory_used_mb: 1,
                memory_total_mb: 80,
                temperature_c: None,
                power_watts: None,
                energy_mj: None,
                sm_clock_mhz: None,
                mem_clock_mhz: None,
                xid_errors: None,
            }],
            running_tasks: Vec::new(),
        }
    }

    /// Sends a heartbeat and waits until it is applied; returns the GPU's (uuid, model).
    async fn names_after(
        telemetry: &TelemetryManager,
        cpu: f64,
        names: Option<(&str, &str)>,
    ) -> (String, String) {
        let id = WorkerId::parse("w1").expect("id");
        telemetry.process_heartbeat(heartbeat(cpu, names), false).expect("accepted");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let t = telemetry.get_worker_telemetry(&id).expect("registered");
            if t.cpu_usage == cpu {
                return (t.gpus[0].uuid.clone(), t.gpus[0].model.clone());
            }
            assert!(Instant::now() < deadline, "heartbeat with cpu {cpu} never applied");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn gpu_names_follow_the_registration_and_the_heartbeat() {
        let mut shutdown = Shutdown::new();
        let stage = shutdown.stage("telemetry");
        let fleet = Fleet::new(FleetConfig::default(), EventBus::default());
        let (minutes, _rx) = mpsc::channel(16);
        let config = TelemetryConfig { rate_limit: None, ..TelemetryConfig::default() };
        let telemetry = TelemetryManager::new(config, fleet.clone(), minutes, &stage).expect("manager");
        let named = |u: &str, m: &str| (u.to_string(), m.to_string());
        let register = |info: Arc<WorkerInfo>| {
            telemetry.attach(Arc::clone(&info)).expect("slot");
            fleet.register(info, Vec::new(), None).expect("registered");
        };
        register(info("GPU-a", "A100"));
        assert_eq!(names_after(&telemetry, 1.0, None).await, named("GPU-a", "A100"));
        // The steady state moves the names along.
        assert_eq!(names_after(&telemetry, 2.0, None).await, named("GPU-a", "A100"));
        assert_eq!(names_after(&telemetry, 3.0, None).await, named("GPU-a", "A100"));
        // A new registration's names win from the next heartbeat on.
        register(info("GPU-b", "H100"));
        assert_eq!(names_after(&telemetry, 4.0, None).await, named("GPU-b", "H100"));
        assert_eq!(names_after(&telemetry, 5.0, None).await, named("GPU-b", "H100"));
        // Names a heartbeat carries are shown as sent, and not kept past it.
        assert_eq!(names_after(&telemetry, 6.0, Some(("GPU-x", "X"))).await, named("GPU-x", "X"));
        assert_eq!(names_after(&telemetry, 7.0, None).await, named("GPU-b", "H100"));
        assert_eq!(names_after(&telemetry, 8.0, None).await, named("GPU-b", "H100"));
        shutdown.run(Duration::from_secs(5), |_, _| async {}).await;
    }
}
