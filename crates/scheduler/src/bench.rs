//! A load generator for the scheduler alone: a simulated heterogeneous fleet and task
//! mix, run through enqueue, schedule and release rounds (`cloudai bench scheduler`).

use std::time::{Duration, Instant};

use cloudai_domain::{Driver, TaskId, WorkerId};

use crate::{PendingTask, Policy, Scheduler, WorkerResources};

/// Rounds of "some tasks end, schedule again" after the first pass.
const ROUNDS: usize = 10;
/// Share of running tasks that end in each round, in percent.
const ENDING_PERCENT: usize = 10;

#[derive(Clone, Debug, PartialEq)]
pub struct BenchReport {
    pub workers: usize,
    pub tasks: usize,
    /// `schedule()` calls made.
    pub passes: usize,
    pub placements: usize,
    /// Still waiting at the end (the simulated cluster is smaller than the task mix).
    pub pending_left: usize,
    /// Time in enqueue, schedule and release (building the fleet excluded).
    pub elapsed: Duration,
    pub placements_per_sec: f64,
}

/// xorshift64: deterministic and dependency-free; quality is beside the point here.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Zero is xorshift's one fixed point.
        Self(seed ^ 0x9E37_79B9_7F4A_7C15 | 1)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform enough in `0..n` (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A fleet of `workers` mixed machines: CPU boxes of 16 and 64 cores, 8-GPU and 4-GPU
/// nodes, both drivers, about 2% inactive.
pub fn fleet(workers: usize, policy: Policy, seed: u64) -> Scheduler {
    let mut rng = Rng::new(seed);
    let mut s = Scheduler::new(policy);
    for i in 0..workers {
        let (cpu_cores, memory_gb, gpus, drivers): (f64, u64, u32, &[Driver]) = match rng.below(100) {
            0..50 => (16.0, rng.pick(&[64, 128]), 0, &[Driver::Docker, Driver::Process]),
            50..75 => (64.0, rng.pick(&[256, 512]), 0, &[Driver::Docker]),
            75..90 => (64.0, 512, 8, &[Driver::Docker]),
            _ => (8.0, 64, 4, &[Driver::Process, Driver::Docker]),
        };
        let Ok(worker_id) = WorkerId::parse(&format!("worker-{i}")) else { continue };
        let registered = s.upsert_worker(WorkerResources {
            worker_id,
            cpu_cores,
            memory_mb: memory_gb * 1024,
            gpus: (0..gpus).collect(),
            drivers: drivers.to_vec(),
            active: rng.below(100) >= 2,
        });
        debug_assert!(registered.is_ok());
    }
    s
}

/// `count` tasks with ids `t-0`, `t-1`, …: priorities 0–4, 0.5 to 16 cores, 0.5 to
/// 64 GB, one in ten wanting 1–8 GPUs, one in five on the process driver.
pub fn tasks(count: usize, seed: u64) -> Vec<PendingTask> {
    let mut rng = Rng::new(seed.rotate_left(17) ^ 0xA5A5);
    (0..count)
        .filter_map(|i| {
            let task_id = TaskId::parse(&format!("t-{i}")).ok()?;
            let gpus = if rng.below(10) == 0 { rng.pick(&[1, 1, 2, 4, 8]) } else { 0 };
            Some(PendingTask {
                task_id,
                priority: rng.below(5) as i32,
                seq: i as u64,
                cpu: rng.pick(&[0.5, 1.0, 2.0, 4.0, 8.0, 16.0]),
                memory_mb: rng.pick(&[512, 2048, 8192, 16384, 32768, 65536]),
                gpus,
                driver: if rng.below(5) == 0 { Driver::Process } else { Driver::Docker },
            })
        })
        .collect()
}

/// Enqueues `tasks` tasks on a fleet of `workers`, schedules, then runs rounds where a
/// tenth of the running tasks end and the scheduler fills the room again.
pub fn bench(workers: usize, tasks: usize, policy: Policy, seed: u64) -> BenchReport {
    let mut s = fleet(workers, policy, seed);
    let pending = self::tasks(tasks, seed);
    let mut rng = Rng::new(seed.wrapping_add(1));
    let mut running: Vec<TaskId> = Vec::new();
    let mut placements = 0;
    let mut passes = 0;

    let start = Instant::now();
    for task in pending {
        let queued = s.enqueue(task);
        debug_assert!(queued.is_ok());
    }
    for round in 0..=ROUNDS {
        if round > 0 {
            for _ in 0..running.len() * ENDING_PERCENT / 100 {
                let ended = running.swap_remove(rng.below(running.len() as u64) as usize);
                s.release(&ended);
            }
        }
        let placed = s.schedule();
        passes += 1;
        placements += placed.len();
        running.extend(placed.into_iter().map(|p| p.task_id));
    }
    let elapsed = start.elapsed();

    BenchReport {
        workers,
        tasks,
        passes,
        placements,
        pending_left: s.pending_len(),
        elapsed,
        placements_per_sec: placements as f64 / elapsed.as_secs_f64().max(1e-9),
    }
}
