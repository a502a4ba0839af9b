//! The [`Scheduler`]: the public operations, each a few index updates.

use std::collections::HashMap;

use cloudai_domain::{Driver, TaskId, WorkerId};

use crate::error::SchedulerError;
use crate::queue::{Queue, Queued};
use crate::shape::{Blocked, Shape, cores, driver_mask, millicores};
use crate::workers::{Fleet, Registration};
use crate::{
    ClusterTotals, PendingReason, PendingTask, Placement, Policy, Released, WorkerResources, WorkerView,
};

/// What a placed task holds.
#[derive(Clone, Debug)]
struct Reservation {
    slot: u32,
    cpu_m: u64,
    memory_mb: u64,
    gpus: Vec<u32>,
}

/// Placement state of the cluster: workers, their reservations and the pending queue.
#[derive(Clone, Debug)]
pub struct Scheduler {
    policy: Policy,
    fleet: Fleet,
    queue: Queue,
    reservations: HashMap<TaskId, Reservation>,
    /// Shapes that found no room since room last grew.
    blocked: Blocked,
    /// Room grew since the last pass, so every pending task must be tried again.
    room_grew: bool,
}

impl Default for Scheduler {
    fn default() -> Self {
        Self::new(Policy::default())
    }
}

impl Scheduler {
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            fleet: Fleet::default(),
            queue: Queue::default(),
            reservations: HashMap::new(),
            blocked: Blocked::default(),
            room_grew: false,
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Registers a worker, or updates one that registers again. Reservations of tasks
    /// already on it are kept, even if its capacity shrank below them.
    pub fn upsert_worker(&mut self, worker: WorkerResources) -> Result<(), SchedulerError> {
        let cpu_m = millicores("cpu_cores", worker.cpu_cores)?;
        let mut devices = worker.gpus;
        devices.sort_unstable();
        devices.dedup();
        self.fleet.upsert(Registration {
            id: worker.worker_id,
            active: worker.active,
            mask: driver_mask(&worker.drivers),
            cpu_m,
            memory_mb: worker.memory_mb,
            devices,
        });
        self.room_grew = true;
        Ok(())
    }

    /// Only active workers get placements; an inactive one keeps its reservations.
    pub fn set_active(&mut self, worker_id: &WorkerId, active: bool) -> Result<(), SchedulerError> {
        let slot = self.slot(worker_id)?;
        self.fleet.set_active(slot, active);
        self.room_grew |= active;
        Ok(())
    }

    /// Forgets a worker and drops its reservations; returns the tasks that were on it
    /// (empty for an unknown worker).
    pub fn remove_worker(&mut self, worker_id: &WorkerId) -> Vec<TaskId> {
        let Some(worker) = self.fleet.slot_of(worker_id).and_then(|slot| self.fleet.remove(slot)) else {
            return Vec::new();
        };
        let mut tasks: Vec<TaskId> = worker.tasks.into_iter().collect();
        for task in &tasks {
            self.reservations.remove(task);
        }
        tasks.sort_unstable();
        tasks
    }

    /// Adds a task to the pending queue.
    pub fn enqueue(&mut self, task: PendingTask) -> Result<(), SchedulerError> {
        self.check_unknown(&task.task_id)?;
        let need = Shape { cpu_m: millicores("cpu", task.cpu)?, memory_mb: task.memory_mb, gpus: task.gpus };
        let queued = Queued { task_id: task.task_id, need, driver: task.driver };
        self.queue.push(task.priority, task.seq, queued);
        Ok(())
    }

    /// Takes a task out of the pending queue (cancelled); false if it was not pending.
    pub fn remove_pending(&mut self, task_id: &TaskId) -> bool {
        self.queue.remove(task_id).is_some()
    }

    /// Records a task a worker already runs (reconciliation after a master restart). CPU
    /// and memory are recorded even beyond the worker's free room: the task is running
    /// whatever the books say. GPUs must be the worker's and not held by another task.
    pub fn reserve(
        &mut self,
        worker_id: &WorkerId,
        task_id: TaskId,
        cpu: f64,
        memory_mb: u64,
        gpu_indices: &[u32],
    ) -> Result<(), SchedulerError> {
        let slot = self.slot(worker_id)?;
        self.check_unknown(&task_id)?;
        let cpu_m = millicores("cpu", cpu)?;
        self.fleet.check_gpus(slot, gpu_indices)?;
        self.fleet.hold(slot, &task_id, cpu_m, memory_mb, gpu_indices);
        let mut gpus = gpu_indices.to_vec();
        gpus.sort_unstable();
        self.reservations.insert(task_id, Reservation { slot, cpu_m, memory_mb, gpus });
        Ok(())
    }

    /// Frees what a placed task held (it ended, or goes back to pending); `None` if the
    /// task held nothing.
    pub fn release(&mut self, task_id: &TaskId) -> Option<Released> {
        let r = self.reservations.remove(task_id)?;
        let worker_id = self.fleet.get(r.slot)?.id.clone();
        self.fleet.unplace(r.slot, task_id, r.cpu_m, r.memory_mb, &r.gpus);
        self.room_grew = true;
        Some(Released {
            task_id: task_id.clone(),
            worker_id,
            cpu: cores(r.cpu_m),
            memory_mb: r.memory_mb,
            gpu_indices: r.gpus,
        })
    }

    /// Places as many pending tasks as fit now, in priority order, and reserves their
    /// resources. A task that does not fit is passed over, so smaller tasks behind it may
    /// use room it cannot (backfill); a task that fits is always placed before any task
    /// after it in the queue.
    pub fn schedule(&mut self) -> Vec<Placement> {
        let fresh = self.queue.take_fresh();
        let mut pass = Pass {
            policy: self.policy,
            fleet: &mut self.fleet,
            blocked: &mut self.blocked,
            reservations: &mut self.reservations,
            placed: Vec::new(),
            keys: Vec::new(),
        };
        if std::mem::take(&mut self.room_grew) {
            pass.blocked.clear();
            for (key, task) in self.queue.iter() {
                pass.try_place(*key, task);
            }
        } else {
            // Every older task already failed with at least this much room.
            for key in fresh {
                if let Some(task) = self.queue.get_key(&key) {
                    pass.try_place(key, task);
                }
            }
        }
        let Pass { placed, keys, .. } = pass;
        for key in &keys {
            self.queue.remove_key(key);
        }
        placed
    }

    /// Why a pending task waits; `None` if it is not pending. Meaningful after a pass: a
    /// task enqueued since the last [`Scheduler::schedule`] reads as `NoRoom`.
    pub fn pending_reason(&self, task_id: &TaskId) -> Option<PendingReason> {
        let task = self.queue.get(task_id)?;
        if self.fleet.could_ever_fit(task.driver, task.need) {
            return Some(PendingReason::NoRoom);
        }
        Some(PendingReason::NeverFits(self.never_fits(task.driver, task.need)))
    }

    fn never_fits(&self, driver: Driver, need: Shape) -> String {
        let Some(max) = self.fleet.largest(driver) else {
            return format!("no worker runs the {driver} driver");
        };
        let cpu = cores(need.cpu_m);
        if need.gpus > max.gpus {
            return format!("needs {}; the largest known {driver} worker has {}", gpus(need.gpus), max.gpus);
        }
        if need.cpu_m > max.cpu_m {
            let have = cores(max.cpu_m);
            return format!("needs {cpu} cores; the largest known {driver} worker has {have}");
        }
        if need.memory_mb > max.memory_mb {
            let have = max.memory_mb;
            return format!(
                "needs {} MB of memory; the largest known {driver} worker has {have} MB",
                need.memory_mb
            );
        }
        format!(
            "needs {cpu} cores, {} MB of memory and {} on one worker; no known {driver} worker has all of them",
            need.memory_mb,
            gpus(need.gpus)
        )
    }

    pub fn is_pending(&self, task_id: &TaskId) -> bool {
        self.queue.contains(task_id)
    }

    /// Where a placed task is and what it holds.
    pub fn reservation(&self, task_id: &TaskId) -> Option<Released> {
        let r = self.reservations.get(task_id)?;
        Some(Released {
            task_id: task_id.clone(),
            worker_id: self.fleet.get(r.slot)?.id.clone(),
            cpu: cores(r.cpu_m),
            memory_mb: r.memory_mb,
            gpu_indices: r.gpus.clone(),
        })
    }

    pub fn worker(&self, worker_id: &WorkerId) -> Option<WorkerView> {
        self.fleet.get(self.fleet.slot_of(worker_id)?).map(|w| w.view())
    }

    /// Every known worker, in no particular order.
    pub fn workers(&self) -> impl Iterator<Item = WorkerView> + '_ {
        self.fleet.iter().map(|w| w.view())
    }

    pub fn pending_len(&self) -> usize {
        self.queue.len()
    }

    pub fn placed_len(&self) -> usize {
        self.reservations.len()
    }

    /// Cluster totals; walks the fleet once (metrics scrape rate, not the hot path).
    pub fn totals(&self) -> ClusterTotals {
        let (mut capacity, mut active_capacity, mut reserved) =
            (Shape::default(), Shape::default(), Shape::default());
        let mut active_workers = 0;
        for w in self.fleet.iter() {
            capacity.add(w.capacity);
            reserved.add(w.reserved);
            if w.active {
                active_workers += 1;
                active_capacity.add(w.capacity);
            }
        }
        ClusterTotals {
            workers: self.fleet.len(),
            active_workers,
            pending_tasks: self.queue.len(),
            placed_tasks: self.reservations.len(),
            capacity: capacity.to_resources(),
            active_capacity: active_capacity.to_resources(),
            reserved: reserved.to_resources(),
        }
    }

    fn slot(&self, worker_id: &WorkerId) -> Result<u32, SchedulerError> {
        self.fleet.slot_of(worker_id).ok_or_else(|| SchedulerError::UnknownWorker(worker_id.clone()))
    }

    fn check_unknown(&self, task_id: &TaskId) -> Result<(), SchedulerError> {
        if self.queue.contains(task_id) {
            return Err(SchedulerError::AlreadyPending(task_id.clone()));
        }
        if let Some(r) = self.reservations.get(task_id)
            && let Some(w) = self.fleet.get(r.slot)
        {
            return Err(SchedulerError::AlreadyPlaced { task_id: task_id.clone(), worker_id: w.id.clone() });
        }
        Ok(())
    }
}

fn gpus(n: u32) -> String {
    if n == 1 { "1 GPU".to_string() } else { format!("{n} GPUs") }
}

/// One scheduling pass over (part of) the queue.
struct Pass<'a> {
    policy: Policy,
    fleet: &'a mut Fleet,
    blocked: &'a mut Blocked,
    reservations: &'a mut HashMap<TaskId, Reservation>,
    placed: Vec<Placement>,
    keys: Vec<crate::queue::QueueKey>,
}

impl Pass<'_> {
    fn try_place(&mut self, key: crate::queue::QueueKey, task: &Queued) {
        if self.blocked.is_blocked(task.driver, task.need) {
            return;
        }
        let Some(slot) = self.fleet.find_room(task.driver, task.need, self.policy) else {
            self.blocked.add(task.driver, task.need);
            return;
        };
        let Some(worker_id) = self.fleet.get(slot).map(|w| w.id.clone()) else { return };
        let gpus = self.fleet.place(slot, &task.task_id, task.need);
        let reservation =
            Reservation { slot, cpu_m: task.need.cpu_m, memory_mb: task.need.memory_mb, gpus: gpus.clone() };
        self.reservations.insert(task.task_id.clone(), reservation);
        self.keys.push(key);
        self.placed.push(Placement { task_id: task.task_id.clone(), worker_id, gpu_indices: gpus });
    }
}
