//! Samples this machine's CPU, memory and GPUs for heartbeats.

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};

use super::gpu::GpuSource;
use cloudai_domain::{GpuInfo, GpuStats};

/// One sample of the machine.
#[derive(Clone, Debug)]
pub struct MachineSample {
    pub cpu_usage: f64,
    pub memory_usage: f64,
    pub memory_used_mb: u64,
    pub memory_total_mb: u64,
    pub gpus: Vec<GpuStats>,
}

impl MachineSample {
    /// Mean utilisation over all GPUs (0 with none).
    pub fn gpu_usage(&self) -> f64 {
        if self.gpus.is_empty() {
            return 0.0;
        }
        self.gpus.iter().map(|g| g.utilization_percent).sum::<f64>() / self.gpus.len() as f64
    }
}

pub struct Collector {
    system: System,
    gpus: Box<dyn GpuSource>,
}

impl Collector {
    pub fn new(gpus: Box<dyn GpuSource>) -> Self {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        );
        Self { system, gpus }
    }

    pub fn cpu_cores(&self) -> f64 {
        self.system.cpus().len().max(1) as f64
    }

    pub fn memory_total_mb(&self) -> u64 {
        self.system.total_memory() / 1_048_576
    }

    pub fn gpu_inventory(&self) -> Vec<GpuInfo> {
        self.gpus.inventory()
    }

    pub fn describe_gpus(&self) -> String {
        self.gpus.describe()
    }

    /// Takes a sample. Blocking (reads /proc, may call NVML): run it off the async threads.
    /// CPU usage is measured since the previous call.
    pub fn sample(&mut self) -> MachineSample {
        self.system.refresh_cpu_usage();
        self.system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        let total = self.system.total_memory();
        let used = self.system.used_memory();
        MachineSample {
            cpu_usage: f64::from(self.system.global_cpu_usage()).clamp(0.0, 100.0),
            memory_usage: if total == 0 { 0.0 } else { used as f64 * 100.0 / total as f64 },
            memory_used_mb: used / 1_048_576,
            memory_total_mb: total / 1_048_576,
            gpus: self.gpus.sample(),
        }
    }
}
