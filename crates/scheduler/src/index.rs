//! Workers indexed by an amount of room, so a fitting worker is found with a few range
//! queries instead of a scan of the fleet.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::ops::Bound;

use crate::Policy;
use crate::shape::{Shape, driver_slot};
use cloudai_domain::Driver;

/// (GPUs, millicores, MB, worker slot): ordered by GPUs first, so bin-packing keeps GPU
/// workers for GPU tasks; the slot makes keys unique and ties deterministic.
type Key = (u32, u64, u64, u32);

fn key(room: Shape, slot: u32) -> Key {
    (room.gpus, room.cpu_m, room.memory_mb, slot)
}

/// One ordered set per non-empty driver mask (docker, process, both).
#[derive(Clone, Debug, Default)]
pub(crate) struct ShapeIndex {
    by_mask: [BTreeSet<Key>; 3],
}

impl ShapeIndex {
    pub fn insert(&mut self, mask: u8, room: Shape, slot: u32) {
        if let Some(set) = self.set_mut(mask) {
            set.insert(key(room, slot));
        }
    }

    pub fn remove(&mut self, mask: u8, room: Shape, slot: u32) {
        if let Some(set) = self.set_mut(mask) {
            set.remove(&key(room, slot));
        }
    }

    fn set_mut(&mut self, mask: u8) -> Option<&mut BTreeSet<Key>> {
        self.by_mask.get_mut(usize::from(mask).checked_sub(1)?)
    }

    /// The slot of the worker the policy picks among those running `driver` with room for
    /// `need`: the smallest key for bin-packing, the largest for spreading.
    pub fn find(&self, driver: Driver, need: Shape, policy: Policy) -> Option<u32> {
        let bit = 1usize << driver_slot(driver);
        let found = (1..=3usize).filter(|mask| mask & bit != 0).filter_map(|mask| {
            let set = &self.by_mask[mask - 1];
            match policy {
                Policy::BinPack => smallest_fit(set, need),
                Policy::Spread => largest_fit(set, need),
            }
        });
        let best = match policy {
            Policy::BinPack => found.min(),
            Policy::Spread => found.max(),
        };
        best.map(|k| k.3)
    }
}

/// Walks up from `need`, jumping over each (GPUs, CPU) group whose memory is short and
/// each GPU level whose CPU is short, so the cost is the number of groups skipped.
fn smallest_fit(set: &BTreeSet<Key>, need: Shape) -> Option<Key> {
    let mut from = (need.gpus, need.cpu_m, need.memory_mb, 0);
    loop {
        let k = *set.range(from..).next()?;
        if k.1 < need.cpu_m {
            from = (k.0, need.cpu_m, need.memory_mb, 0);
        } else if k.2 < need.memory_mb {
            from = (k.0, k.1, need.memory_mb, 0);
        } else {
            return Some(k);
        }
    }
}

/// Walks down from the largest key with the same jumps as [`smallest_fit`].
fn largest_fit(set: &BTreeSet<Key>, need: Shape) -> Option<Key> {
    let mut below = Bound::Unbounded;
    loop {
        let k = *set.range((Bound::Unbounded, below)).next_back()?;
        if k.0 < need.gpus {
            return None;
        }
        if k.1 < need.cpu_m {
            // Every key left on this GPU level has even less CPU.
            below = Bound::Excluded((k.0, 0, 0, 0));
        } else if k.2 < need.memory_mb {
            // Every key left in this (GPUs, CPU) group has even less memory.
            below = Bound::Excluded((k.0, k.1, 0, 0));
        } else {
            return Some(k);
        }
    }
}

/// The largest capacity per dimension among the workers running each driver, to explain
/// why a task can never fit.
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

#[derive(Clone, Debug)]
struct Multiset<T: Ord>(BTreeMap<T, u32>);

impl<T: Ord> Default for Multiset<T> {
    fn default() -> Self {
        Self(BTreeMap::new())
    }
}

impl<T: Ord + Copy> Multiset<T> {
    fn insert(&mut self, v: T) {
        *self.0.entry(v).or_insert(0) += 1;
    }

    fn remove(&mut self, v: T) {
        if let Some(n) = self.0.get_mut(&v) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(&v);
            }
        }
    }

    fn max(&self) -> Option<T> {
        self.0.keys().next_back().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(cpu_m: u64, memory_mb: u64, gpus: u32) -> Shape {
        Shape { cpu_m, memory_mb, gpus }
    }

    /// The index must agree with a brute-force scan on every query.
    #[test]
    fn find_matches_brute_force() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let mut index = ShapeIndex::default();
        let mut rooms = Vec::new();
        for slot in 0..300u32 {
            let room = s(next(8) * 500, next(6) * 1000, next(3) as u32 * 2);
            let mask = 1 + next(3) as u8;
            index.insert(mask, room, slot);
            rooms.push((mask, room));
        }
        for _ in 0..2000 {
            let need = s(next(9) * 500, next(7) * 1000, next(5) as u32);
            let driver = if next(2) == 0 { Driver::Docker } else { Driver::Process };
            let bit = 1 << driver_slot(driver);
            let fits = rooms
                .iter()
                .enumerate()
                .filter(|(_, (mask, room))| mask & bit != 0 && need.fits_in(*room))
                .map(|(slot, (_, room))| key(*room, slot as u32));
            let (lo, hi): (Vec<_>, Vec<_>) = fits.map(|k| (k, k)).unzip();
            let want_lo = lo.iter().min().map(|k| k.3);
            let want_hi = hi.iter().max().map(|k| k.3);
            assert_eq!(index.find(driver, need, Policy::BinPack), want_lo, "bin-pack {need:?}");
            assert_eq!(index.find(driver, need, Policy::Spread), want_hi, "spread {need:?}");
        }
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
