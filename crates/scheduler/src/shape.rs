//! Resource amounts in integer units (millicores, MB, whole GPUs), so that adding and
//! subtracting reservations never drifts the way sums of `f64` cores would.

use crate::{Driver, Resources};

/// Largest CPU figure accepted (cores); keeps millicores far from `u64` overflow.
pub(crate) const MAX_CORES: f64 = 1.0e9;

/// A demand or an amount of room.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub(crate) struct Shape {
    pub cpu_m: u64,
    pub memory_mb: u64,
    pub gpus: u32,
}

impl Shape {
    /// True when `self` fits inside `room` in every dimension.
    pub fn fits_in(self, room: Shape) -> bool {
        self.cpu_m <= room.cpu_m && self.memory_mb <= room.memory_mb && self.gpus <= room.gpus
    }

    pub fn saturating_sub(self, other: Shape) -> Shape {
        Shape {
            cpu_m: self.cpu_m.saturating_sub(other.cpu_m),
            memory_mb: self.memory_mb.saturating_sub(other.memory_mb),
            gpus: self.gpus.saturating_sub(other.gpus),
        }
    }

    pub fn add(&mut self, other: Shape) {
        self.cpu_m = self.cpu_m.saturating_add(other.cpu_m);
        self.memory_mb = self.memory_mb.saturating_add(other.memory_mb);
        self.gpus = self.gpus.saturating_add(other.gpus);
    }

    pub fn sub(&mut self, other: Shape) {
        *self = self.saturating_sub(other);
    }

    pub fn to_resources(self) -> Resources {
        Resources { cpu: cores(self.cpu_m), memory_mb: self.memory_mb, gpus: self.gpus }
    }
}

/// A CPU figure that is not a finite number of cores in `0..=MAX_CORES`; the scheduler
/// reports it as [`crate::SchedulerError::InvalidCpu`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct InvalidCpu {
    pub field: &'static str,
    pub value: f64,
}

/// Cores to millicores. A positive demand never rounds down to zero, so a tiny task
/// still counts against its worker.
pub(crate) fn millicores(field: &'static str, cores: f64) -> Result<u64, InvalidCpu> {
    if !cores.is_finite() || !(0.0..=MAX_CORES).contains(&cores) {
        return Err(InvalidCpu { field, value: cores });
    }
    let m = (cores * 1000.0).round() as u64;
    Ok(if cores > 0.0 { m.max(1) } else { m })
}

pub(crate) fn cores(millicores: u64) -> f64 {
    millicores as f64 / 1000.0
}

/// Index of a driver in per-driver arrays, and its bit in a worker's driver mask.
pub(crate) fn driver_slot(driver: Driver) -> usize {
    match driver {
        Driver::Docker => 0,
        Driver::Process => 1,
    }
}

pub(crate) const DRIVERS: [Driver; 2] = [Driver::Docker, Driver::Process];

pub(crate) fn driver_mask(drivers: &[Driver]) -> u8 {
    drivers.iter().fold(0, |m, d| m | 1 << driver_slot(*d))
}

pub(crate) fn mask_drivers(mask: u8) -> Vec<Driver> {
    DRIVERS.into_iter().filter(|d| mask & 1 << driver_slot(*d) != 0).collect()
}

/// Shapes that failed to fit since resources last grew, per driver. Placements only
/// shrink free room, so any task at least as large as a failed shape fails too and is
/// skipped without a search. Kept as a small antichain of minimal failed shapes.
#[derive(Clone, Debug, Default)]
pub(crate) struct Blocked {
    per_driver: [Vec<Shape>; 2],
}

/// Bounds the per-task check; a full list only means less skipping, never a wrong answer.
const MAX_BLOCKED: usize = 32;

impl Blocked {
    pub fn is_blocked(&self, driver: Driver, need: Shape) -> bool {
        self.per_driver[driver_slot(driver)].iter().any(|failed| failed.fits_in(need))
    }

    pub fn add(&mut self, driver: Driver, need: Shape) {
        let shapes = &mut self.per_driver[driver_slot(driver)];
        if shapes.iter().any(|failed| failed.fits_in(need)) {
            return;
        }
        shapes.retain(|failed| !need.fits_in(*failed));
        if shapes.len() < MAX_BLOCKED {
            shapes.push(need);
        }
    }

    pub fn clear(&mut self) {
        self.per_driver.iter_mut().for_each(Vec::clear);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn millicores_round_and_reject_junk() {
        assert_eq!(millicores("cpu", 0.3), Ok(300));
        assert_eq!(millicores("cpu", 2.0), Ok(2000));
        assert_eq!(millicores("cpu", 0.0001), Ok(1));
        assert_eq!(millicores("cpu", 0.0), Ok(0));
        assert!(millicores("cpu", f64::NAN).is_err());
        assert!(millicores("cpu", -1.0).is_err());
        assert!(millicores("cpu", f64::INFINITY).is_err());
    }

    #[test]
    fn blocked_keeps_minimal_shapes() {
        let s = |cpu_m, memory_mb, gpus| Shape { cpu_m, memory_mb, gpus };
        let mut b = Blocked::default();
        b.add(Driver::Docker, s(4000, 100, 0));
        assert!(b.is_blocked(Driver::Docker, s(4000, 200, 1)));
        assert!(!b.is_blocked(Driver::Docker, s(3000, 200, 1)));
        assert!(!b.is_blocked(Driver::Process, s(4000, 200, 1)));
        b.add(Driver::Docker, s(2000, 100, 0));
        assert_eq!(b.per_driver[0], vec![s(2000, 100, 0)]);
        b.clear();
        assert!(!b.is_blocked(Driver::Docker, s(9000, 900, 9)));
    }
}
