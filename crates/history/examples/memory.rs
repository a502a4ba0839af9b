//! Memory per worker with realistic heartbeats: `cargo run --release -p cloudai-history --example memory`.
//!
//! Simulates 25 hours of 5 s heartbeats per worker (so both tiers are full) and prints one JSON
//! line per GPU count. The raw figure is the peak over the last hour: blocks are dropped whole,
//! so the raw tier swings between one hour and one hour plus a block.

use cloudai_history::{History, HistoryConfig, Sample};

const WORKERS: u64 = 50;
const INTERVAL_MS: i64 = 5_000;
const HOURS: i64 = 25;
const MEMORY_TOTAL_MB: f64 = 64_000.0;

/// xorshift64*: deterministic noise without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[-1, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// What a worker reports: sysinfo's f32 CPU %, memory in whole MB and the % derived from it,
/// NVML's integer utilisation and whole-MB memory per GPU; timestamps a few ms off schedule.
struct Worker {
    rng: Rng,
    cpu: f64,
    memory_used_mb: f64,
    gpus: Vec<(f64, f64)>,
}

impl Worker {
    fn sample(&mut self, i: i64) -> Sample {
        let rng = &mut self.rng;
        self.cpu = (self.cpu + rng.unit() * 3.0).clamp(0.0, 100.0);
        self.memory_used_mb =
            (self.memory_used_mb + (rng.unit() * 20.0).round()).clamp(1_000.0, MEMORY_TOTAL_MB);
        for (util, mem) in &mut self.gpus {
            *util = (*util + (rng.unit() * 5.0).round()).clamp(0.0, 100.0);
            if rng.next().is_multiple_of(10) {
                *mem = (*mem + (rng.unit() * 512.0).round()).clamp(0.0, 80_000.0);
            }
        }
        let gpu = if self.gpus.is_empty() {
            0.0
        } else {
            self.gpus.iter().map(|g| g.0).sum::<f64>() / self.gpus.len() as f64
        };
        Sample {
            timestamp_ms: 1_800_000_000_000 + i * INTERVAL_MS + (rng.next() % 5) as i64 - 2,
            cpu: f64::from(self.cpu as f32),
            memory: self.memory_used_mb / MEMORY_TOTAL_MB * 100.0,
            gpu,
            memory_used_mb: self.memory_used_mb,
            memory_total_mb: MEMORY_TOTAL_MB,
            gpus: self.gpus.iter().enumerate().map(|(g, &(util, mem))| (g as u32, util, mem)).collect(),
        }
    }
}

fn main() {
    let samples = HOURS * 3_600_000 / INTERVAL_MS;
    let last_hour = samples - 3_600_000 / INTERVAL_MS;
    for gpus in [0u32, 4] {
        let (mut raw_peak, mut minute, mut bits, mut rows) = (0usize, 0usize, 0u64, 0usize);
        for w in 0..WORKERS {
            let mut worker = Worker {
                rng: Rng(0x9E37_79B9_7F4A_7C15 ^ (w + 1)),
                cpu: 20.0 + w as f64,
                memory_used_mb: 8_000.0 + w as f64 * 100.0,
                gpus: (0..gpus).map(|g| (50.0, 10_000.0 + f64::from(g) * 1_000.0)).collect(),
            };
            let mut history = History::new(HistoryConfig::default()).expect("default config is valid");
            let mut peak = 0;
            for i in 0..samples {
                history.append(&worker.sample(i));
                if i >= last_hour {
                    peak = peak.max(history.stats().raw_heap_bytes);
                }
            }
            let stats = history.stats();
            raw_peak += peak;
            minute += stats.minute_heap_bytes;
            bits += stats.raw_compressed_bits;
            rows += stats.raw_samples;
        }
        let workers = WORKERS as usize;
        println!(
            "{{\"workers\":{WORKERS},\"interval_s\":{},\"window_s\":{},\"gpus\":{gpus},\
             \"bytes_per_worker_raw_tier\":{},\"bytes_per_worker_minute_tier\":{},\
             \"compressed_bits_per_sample\":{:.1}}}",
            INTERVAL_MS / 1_000,
            HistoryConfig::default().window_ms / 1_000,
            raw_peak / workers,
            minute / workers,
            bits as f64 / rows as f64,
        );
    }
}
