//! The fleet: every known worker, what it holds, and the indices that find room.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use cloudai_domain::{Driver, TaskId, WorkerId};

use crate::error::SchedulerError;
use crate::index::ShapeIndex;
use crate::largest::Largest;
use crate::shape::{Shape, mask_drivers};
use crate::{Policy, WorkerView};

#[derive(Clone, Debug)]
pub(crate) struct Worker {
    pub id: WorkerId,
    pub active: bool,
    pub mask: u8,
    /// Capacity; `gpus` is the number of devices listed.
    pub capacity: Shape,
    /// Sorted, distinct device indices.
    pub devices: Vec<u32>,
    /// Held by tasks; may exceed capacity after a re-register shrank it.
    pub reserved: Shape,
    pub gpu_owner: BTreeMap<u32, TaskId>,
    /// Listed devices no task holds.
    pub free_gpus: BTreeSet<u32>,
    pub tasks: HashSet<TaskId>,
}

impl Worker {
    pub fn room(&self) -> Shape {
        let mut room = self.capacity.saturating_sub(self.reserved);
        room.gpus = self.free_gpus.len() as u32;
        room
    }

    fn schedulable(&self) -> bool {
        self.active && self.mask != 0
    }

    pub fn view(&self) -> WorkerView {
        WorkerView {
            worker_id: self.id.clone(),
            active: self.active,
            drivers: mask_drivers(self.mask),
            capacity: self.capacity.to_resources(),
            reserved: self.reserved.to_resources(),
            free: self.room().to_resources(),
            free_gpu_indices: self.free_gpus.iter().copied().collect(),
            tasks: self.tasks.len(),
        }
    }
}

/// New facts about a worker, already validated and converted.
pub(crate) struct Registration {
    pub id: WorkerId,
    pub active: bool,
    pub mask: u8,
    pub cpu_m: u64,
    pub memory_mb: u64,
    pub devices: Vec<u32>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Fleet {
    /// Slots are reused after removal; the indices refer to workers by slot.
    slots: Vec<Option<Worker>>,
    vacant: Vec<u32>,
    by_id: HashMap<WorkerId, u32>,
    /// Active workers by free room: where to place.
    room: ShapeIndex,
    /// All workers by capacity: whether a task could ever fit.
    capacity: ShapeIndex,
    largest: Largest,
}

impl Fleet {
    pub fn slot_of(&self, id: &WorkerId) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    pub fn get(&self, slot: u32) -> Option<&Worker> {
        self.slots.get(slot as usize)?.as_ref()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Worker> {
        self.slots.iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn find_room(&self, driver: Driver, need: Shape, policy: Policy) -> Option<u32> {
        self.room.find(driver, need, policy)
    }

    pub fn could_ever_fit(&self, driver: Driver, need: Shape) -> bool {
        self.capacity.find(driver, need, Policy::BinPack).is_some()
    }

    pub fn largest(&self, driver: Driver) -> Option<Shape> {
        self.largest.of(driver)
    }

    /// Runs `change` on a worker with it taken out of every index, then puts it back, so
    /// no index can keep a stale key.
    fn update<R>(&mut self, slot: u32, change: impl FnOnce(&mut Worker) -> R) -> Option<R> {
        let w = self.slots.get_mut(slot as usize)?.as_mut()?;
        if w.schedulable() {
            self.room.remove(w.mask, w.room(), slot);
        }
        self.capacity.remove(w.mask, w.capacity, slot);
        self.largest.remove(w.mask, w.capacity);
        let out = change(w);
        if w.schedulable() {
            self.room.insert(w.mask, w.room(), slot);
        }
        self.capacity.insert(w.mask, w.capacity, slot);
        self.largest.add(w.mask, w.capacity);
        Some(out)
    }

    /// Like [`Fleet::update`] for changes of free room or activity only (the hot path).
    fn update_room<R>(&mut self, slot: u32, change: impl FnOnce(&mut Worker) -> R) -> Option<R> {
        let w = self.slots.get_mut(slot as usize)?.as_mut()?;
        if w.schedulable() {
            self.room.remove(w.mask, w.room(), slot);
        }
        let out = change(w);
        if w.schedulable() {
            self.room.insert(w.mask, w.room(), slot);
        }
        Some(out)
    }

    pub fn upsert(&mut self, r: Registration) {
        if let Some(slot) = self.slot_of(&r.id) {
            self.update(slot, |w| {
                w.active = r.active;
                w.mask = r.mask;
                w.capacity = Shape { cpu_m: r.cpu_m, memory_mb: r.memory_mb, gpus: r.devices.len() as u32 };
                w.free_gpus = r.devices.iter().copied().filter(|g| !w.gpu_owner.contains_key(g)).collect();
                w.devices = r.devices;
            });
            return;
        }
        let slot = self.vacant.pop().unwrap_or(self.slots.len() as u32);
        let worker = Worker {
            id: r.id.clone(),
            active: r.active,
            mask: r.mask,
            capacity: Shape { cpu_m: r.cpu_m, memory_mb: r.memory_mb, gpus: r.devices.len() as u32 },
            free_gpus: r.devices.iter().copied().collect(),
            devices: r.devices,
            reserved: Shape::default(),
            gpu_owner: BTreeMap::new(),
            tasks: HashSet::new(),
        };
        if worker.schedulable() {
            self.room.insert(worker.mask, worker.room(), slot);
        }
        self.capacity.insert(worker.mask, worker.capacity, slot);
        self.largest.add(worker.mask, worker.capacity);
        match self.slots.get_mut(slot as usize) {
            Some(vacant) => *vacant = Some(worker),
            None => self.slots.push(Some(worker)),
        }
        self.by_id.insert(r.id, slot);
    }

    pub fn set_active(&mut self, slot: u32, active: bool) {
        self.update_room(slot, |w| w.active = active);
    }

    /// Takes the worker out of the fleet; its reservations go with it.
    pub fn remove(&mut self, slot: u32) -> Option<Worker> {
        let w = self.slots.get_mut(slot as usize)?.take()?;
        if w.schedulable() {
            self.room.remove(w.mask, w.room(), slot);
        }
        self.capacity.remove(w.mask, w.capacity, slot);
        self.largest.remove(w.mask, w.capacity);
        self.by_id.remove(&w.id);
        self.vacant.push(slot);
        Some(w)
    }

    /// Reserves `need` for a new placement, taking the lowest free GPU indices.
    pub fn place(&mut self, slot: u32, task_id: &TaskId, need: Shape) -> Vec<u32> {
        self.update_room(slot, |w| {
            let gpus: Vec<u32> = w.free_gpus.iter().take(need.gpus as usize).copied().collect();
            for g in &gpus {
                w.free_gpus.remove(g);
                w.gpu_owner.insert(*g, task_id.clone());
            }
            w.reserved.add(Shape { gpus: 0, ..need });
            w.reserved.gpus = w.gpu_owner.len() as u32;
            w.tasks.insert(task_id.clone());
            gpus
        })
        .unwrap_or_default()
    }

    /// Checks that `gpus` can be held by a reported task before anything changes.
    pub fn check_gpus(&self, slot: u32, gpus: &[u32]) -> Result<(), SchedulerError> {
        let Some(w) = self.get(slot) else { return Ok(()) };
        for (i, g) in gpus.iter().enumerate() {
            if gpus[..i].contains(g) {
                return Err(SchedulerError::DuplicateGpu { gpu: *g });
            }
            if let Some(owner) = w.gpu_owner.get(g) {
                return Err(SchedulerError::GpuInUse {
                    worker_id: w.id.clone(),
                    gpu: *g,
                    task_id: owner.clone(),
                });
            }
            if w.devices.binary_search(g).is_err() {
                return Err(SchedulerError::UnknownGpu { worker_id: w.id.clone(), gpu: *g });
            }
        }
        Ok(())
    }

    /// Records a task the worker already runs (checked with [`Fleet::check_gpus`]). CPU
    /// and memory beyond capacity are kept: the task runs whatever we think of it.
    pub fn hold(&mut self, slot: u32, task_id: &TaskId, cpu_m: u64, memory_mb: u64, gpus: &[u32]) {
        self.update_room(slot, |w| {
            for g in gpus {
                w.free_gpus.remove(g);
                w.gpu_owner.insert(*g, task_id.clone());
            }
            w.reserved.add(Shape { cpu_m, memory_mb, gpus: 0 });
            w.reserved.gpus = w.gpu_owner.len() as u32;
            w.tasks.insert(task_id.clone());
        });
    }

    /// Frees what a task held; a GPU no longer listed by the worker is not made free.
    pub fn unplace(&mut self, slot: u32, task_id: &TaskId, cpu_m: u64, memory_mb: u64, gpus: &[u32]) {
        self.update_room(slot, |w| {
            for g in gpus {
                if w.gpu_owner.get(g) == Some(task_id) {
                    w.gpu_owner.remove(g);
                    if w.devices.binary_search(g).is_ok() {
                        w.free_gpus.insert(*g);
                    }
                }
            }
            w.reserved.sub(Shape { cpu_m, memory_mb, gpus: 0 });
            w.reserved.gpus = w.gpu_owner.len() as u32;
            w.tasks.remove(task_id);
        });
    }
}
