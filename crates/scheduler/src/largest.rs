//! The largest capacity per dimension among the workers of each driver, to explain why
//! a task can never fit.

use std::collections::BTreeMap;

use cloudai_domain::Driver;

use crate::shape::{Shape, driver_slot};

/// Per driver, multisets of capacities, so removing a worker updates the maxima.
#[derive(Clone, Debug, Default)]
pub(crate) struct Largest {
    per_driver: [Dims; 2],
}

#[derive(Clone, Debug, Default)]
struct Dims {
    cpu_m: Multiset<u64>,
    memory_mb: Multiset<u64>,
    gpus: Multiset<u32>,
}

impl Largest {
    pub fn add(&mut self, mask: u8, capacity: Shape) {
        self.update(mask, capacity, Multiset::insert, Multiset::insert, Multiset::insert);
    }

    pub fn remove(&mut self, mask: u8, capacity: Shape) {
        self.update(mask, capacity, Multiset::remove, Multiset::remove, Multiset::remove);
    }

    fn update(
        &mut self,
        mask: u8,
        c: Shape,
        cpu: fn(&mut Multiset<u64>, u64),
        mem: fn(&mut Multiset<u64>, u64),
        gpu: fn(&mut Multiset<u32>, u32),
    ) {
        for (slot, dims) in self.per_driver.iter_mut().enumerate() {
            if mask & 1 << slot != 0 {
                cpu(&mut dims.cpu_m, c.cpu_m);
                mem(&mut dims.memory_mb, c.memory_mb);
                gpu(&mut dims.gpus, c.gpus);
            }
        }
    }

    /// Per-dimension maxima (not necessarily one worker), or `None` if no worker runs `driver`.
    pub fn of(&self, driver: Driver) -> Option<Shape> {
        let dims = &self.per_driver[driver_slot(driver)];
        Some(Shape { cpu_m: dims.cpu_m.max()?, memory_mb: dims.memory_mb.max()?, gpus: dims.gpus.max()? })
    }
}

/// Values with their counts.
#[derive(Clone, Debug)]
pub(crate) struct Multiset<T: Ord>(BTreeMap<T, u32>);

impl<T: Ord> Default for Multiset<T> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<T: Ord + Copy> Multiset<T> {
    pub fn insert(&mut self, v: T) {
        *self.0.entry(v).or_insert(0) += 1;
    }

    pub fn remove(&mut self, v: T) {
        if let Some(n) = self.0.get_mut(&v) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&v);
            }
        }
    }

    pub fn max(&self) -> Option<T> {
        self.0.keys().next_back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(cpu_m: u64, memory_mb: u64, gpus: u32) -> Shape {
        Shape { cpu_m, memory_mb, gpus }
    }

    #[test]
    fn largest_tracks_removals() {
        let mut l = Largest::default();
        l.add(0b01, s(8000, 100, 4));
        l.add(0b11, s(4000, 200, 0));
        assert_eq!(l.of(Driver::Docker), Some(s(8000, 200, 4)));
        assert_eq!(l.of(Driver::Process), Some(s(4000, 200, 0)));
        l.remove(0b11, s(4000, 200, 0));
        assert_eq!(l.of(Driver::Process), None);
        assert_eq!(l.of(Driver::Docker), Some(s(8000, 100, 4)));
    }
}
