//! Workers indexed by an amount of room, so the worker a policy picks is found in about
//! `log` time, whatever the size of the fleet.
//!
//! Room is ordered by (GPUs, CPU, memory): GPUs first, so bin-packing keeps GPU workers
//! for GPU tasks. Per driver mask and GPU count there is a [`Level`]: workers bucketed by
//! whole free cores, with a segment tree of the largest free memory per bucket. A query
//! looks at the bucket holding the needed CPU, then asks the tree for the nearest bucket
//! above with enough memory: no walk over workers that have CPU but too little memory.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use cloudai_domain::Driver;

use crate::Policy;
use crate::largest::Multiset;
use crate::shape::{Shape, driver_slot};

/// (GPUs, millicores, MB, worker slot); the slot makes keys unique and ties deterministic.
type Key = (u32, u64, u64, u32);

/// Buckets of whole free cores; the last one also holds every larger worker.
const BUCKETS: usize = 256;

fn bucket(cpu_m: u64) -> usize {
    ((cpu_m / 1000) as usize).min(BUCKETS - 1)
}

/// One ordered set per non-empty driver mask (docker, process, both), by GPU count.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShapeIndex {
    by_mask: [BTreeMap<u32, Level>; 3],
}

impl ShapeIndex {
    pub fn insert(&mut self, mask: u8, room: Shape, slot: u32) {
        if let Some(levels) = self.levels_mut(mask) {
            levels.entry(room.gpus).or_insert_with(Level::new).insert(room, slot);
        }
    }

    pub fn remove(&mut self, mask: u8, room: Shape, slot: u32) {
        // Emptied levels stay allocated: GPU counts are few and come back.
        if let Some(level) = self.levels_mut(mask).and_then(|l| l.get_mut(&room.gpus)) {
            level.remove(room, slot);
        }
    }

    fn levels_mut(&mut self, mask: u8) -> Option<&mut BTreeMap<u32, Level>> {
        self.by_mask.get_mut(usize::from(mask).checked_sub(1)?)
    }

    /// The slot of the worker the policy picks among those running `driver` with room for
    /// `need`: the smallest key for bin-packing, the largest for spreading.
    pub fn find(&self, driver: Driver, need: Shape, policy: Policy) -> Option<u32> {
        let bit = 1usize << driver_slot(driver);
        let found = (1..=3usize).filter(|mask| mask & bit != 0).filter_map(|mask| {
            let levels = &self.by_mask[mask - 1];
            let mut fitting = levels.range(need.gpus..).filter(|(_, level)| level.len > 0);
            match policy {
                Policy::BinPack => fitting.find_map(|(&gpus, level)| level.smallest_fit(gpus, need)),
                Policy::Spread => fitting.rev().find_map(|(&gpus, level)| level.largest_fit(gpus, need)),
            }
        });
        let best = match policy {
            Policy::BinPack => found.min(),
            Policy::Spread => found.max(),
        };
        best.map(|k| k.3)
    }
}

/// The workers of one driver mask with one count of free GPUs.
#[derive(Clone, Debug)]
struct Level {
    buckets: Vec<Bucket>,
    /// Segment tree over buckets of (largest free memory + 1); 0 marks an empty bucket.
    tree: Vec<u64>,
    len: usize,
}

#[derive(Clone, Debug, Default)]
struct Bucket {
    /// (millicores, MB, slot)
    keys: BTreeSet<(u64, u64, u32)>,
    memory: Multiset<u64>,
}

impl Level {
    fn new() -> Self {
        Self { buckets: vec![Bucket::default(); BUCKETS], tree: vec![0; 2 * BUCKETS], len: 0 }
    }

    fn insert(&mut self, room: Shape, slot: u32) {
        let b = bucket(room.cpu_m);
        let bucket = &mut self.buckets[b];
        if bucket.keys.insert((room.cpu_m, room.memory_mb, slot)) {
            bucket.memory.insert(room.memory_mb);
            self.len += 1;
            self.refresh(b);
        }
    }

    fn remove(&mut self, room: Shape, slot: u32) {
        let b = bucket(room.cpu_m);
        let bucket = &mut self.buckets[b];
        if bucket.keys.remove(&(room.cpu_m, room.memory_mb, slot)) {
            bucket.memory.remove(room.memory_mb);
            self.len -= 1;
            self.refresh(b);
        }
    }

    fn refresh(&mut self, b: usize) {
        let mut node = BUCKETS + b;
        self.tree[node] = self.buckets[b].memory.max().map_or(0, |m| m.saturating_add(1));
        while node > 1 {
            node /= 2;
            self.tree[node] = self.tree[2 * node].max(self.tree[2 * node + 1]);
        }
    }

    fn smallest_fit(&self, gpus: u32, need: Shape) -> Option<Key> {
        let b0 = bucket(need.cpu_m);
        let key = smallest_in(&self.buckets[b0], need).or_else(|| {
            // Every worker in a higher bucket has the CPU; take the first with the memory.
            let b = self.first_with_memory(b0 + 1, need.memory_mb)?;
            smallest_in(&self.buckets[b], need)
        })?;
        Some((gpus, key.0, key.1, key.2))
    }

    fn largest_fit(&self, gpus: u32, need: Shape) -> Option<Key> {
        let b = self.last_with_memory(bucket(need.cpu_m), need.memory_mb)?;
        let key = largest_in(&self.buckets[b], need)?;
        Some((gpus, key.0, key.1, key.2))
    }

    /// The lowest bucket at or after `from` holding a worker with `memory_mb` free.
    fn first_with_memory(&self, from: usize, memory_mb: u64) -> Option<usize> {
        self.descend(1, 0, BUCKETS, from, memory_mb.saturating_add(1), false)
    }

    /// The highest such bucket.
    fn last_with_memory(&self, from: usize, memory_mb: u64) -> Option<usize> {
        self.descend(1, 0, BUCKETS, from, memory_mb.saturating_add(1), true)
    }

    /// Searches node `node` (covering buckets `lo..hi`) for a bucket `>= from` whose value
    /// is at least `want`, nearest first or last; prunes every subtree that cannot have one.
    fn descend(
        &self,
        node: usize,
        lo: usize,
        hi: usize,
        from: usize,
        want: u64,
        last: bool,
    ) -> Option<usize> {
        if hi <= from || self.tree[node] < want {
            return None;
        }
        if hi - lo == 1 {
            return Some(lo);
        }
        let mid = (lo + hi) / 2;
        let (left, right) = ((2 * node, lo, mid), (2 * node + 1, mid, hi));
        let (a, b) = if last { (right, left) } else { (left, right) };
        self.descend(a.0, a.1, a.2, from, want, last)
            .or_else(|| self.descend(b.0, b.1, b.2, from, want, last))
    }
}

/// The smallest (CPU, memory) in a bucket that fits, jumping over each CPU value whose
/// memory is short (few per bucket: they differ by less than a core).
fn smallest_in(bucket: &Bucket, need: Shape) -> Option<(u64, u64, u32)> {
    let mut from = (need.cpu_m, need.memory_mb, 0);
    loop {
        let k = *bucket.keys.range(from..).next()?;
        if k.1 >= need.memory_mb {
            return Some(k);
        }
        from = (k.0, need.memory_mb, 0);
    }
}

/// The largest (CPU, memory) in a bucket that fits.
fn largest_in(bucket: &Bucket, need: Shape) -> Option<(u64, u64, u32)> {
    let mut below = Bound::Unbounded;
    loop {
        let k = *bucket.keys.range((Bound::Unbounded, below)).next_back()?;
        if k.0 < need.cpu_m {
            return None;
        }
        if k.1 >= need.memory_mb {
            return Some(k);
        }
        // Every key left with this CPU value has even less memory.
        below = Bound::Excluded((k.0, 0, 0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(cpu_m: u64, memory_mb: u64, gpus: u32) -> Shape {
        Shape { cpu_m, memory_mb, gpus }
    }

    /// The index must agree with a brute-force scan on every query, through inserts and
    /// removals, with fractional cores, bucket boundaries and workers past the last bucket.
    #[test]
    fn find_matches_brute_force() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        let cpu = |next: &mut dyn FnMut(u64) -> u64| match next(4) {
            0 => next(9) * 500,
            1 => next(4000),
            2 => 255_000 + next(4) * 500,
            _ => next(5) * 1000,
        };
        let mut index = ShapeIndex::default();
        let mut rooms: Vec<Option<(u8, Shape)>> = Vec::new();
        for round in 0..6000 {
            if round % 3 == 0 || rooms.is_empty() {
                let room = s(cpu(&mut next), next(6) * 1000, next(3) as u32 * 2);
                let mask = 1 + next(3) as u8;
                index.insert(mask, room, rooms.len() as u32);
                rooms.push(Some((mask, room)));
            } else if round % 7 == 0 {
                let slot = next(rooms.len() as u64) as usize;
                if let Some((mask, room)) = rooms[slot].take() {
                    index.remove(mask, room, slot as u32);
                }
            }
            let need = s(cpu(&mut next), next(7) * 1000, next(5) as u32);
            let driver = if next(2) == 0 { Driver::Docker } else { Driver::Process };
            let bit = 1 << driver_slot(driver);
            let fits: Vec<Key> = rooms
                .iter()
                .enumerate()
                .filter_map(|(slot, r)| r.map(|(mask, room)| (slot, mask, room)))
                .filter(|(_, mask, room)| mask & bit != 0 && need.fits_in(*room))
                .map(|(slot, _, room)| (room.gpus, room.cpu_m, room.memory_mb, slot as u32))
                .collect();
            let want_lo = fits.iter().min().map(|k| k.3);
            let want_hi = fits.iter().max().map(|k| k.3);
            assert_eq!(index.find(driver, need, Policy::BinPack), want_lo, "bin-pack {need:?}");
            assert_eq!(index.find(driver, need, Policy::Spread), want_hi, "spread {need:?}");
        }
    }
}
