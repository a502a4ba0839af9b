//! GPU sources behind one trait: NVML when the library is present, none when it is
//! not, or simulated GPUs chosen by configuration (tests, benchmarks).
//!
//! Calls may block (NVML does): callers run them off the async threads.

use std::time::{SystemTime, UNIX_EPOCH};

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
use nvml_wrapper::error::NvmlError;

use cloudai_domain::{GpuInfo, GpuStats};

pub trait GpuSource: Send + Sync {
    /// The GPUs present (for registration).
    fn inventory(&self) -> Vec<GpuInfo>;
    /// Current figures of every GPU.
    fn sample(&self) -> Vec<GpuStats>;
    /// Short description for logs.
    fn describe(&self) -> String;
}

/// Picks the GPU source: simulated when asked for, else NVML if it loads, else none.
pub fn detect(simulated: Option<u32>) -> Box<dyn GpuSource> {
    if let Some(n) = simulated {
        return Box::new(SimulatedGpus::new(n));
    }
    match NvmlGpus::init() {
        Ok(nvml) => Box::new(nvml),
        Err(e) => {
            tracing::info!(reason = %e, "no NVML: reporting no GPUs");
            Box::new(NoGpus)
        }
    }
}

pub struct NoGpus;

impl GpuSource for NoGpus {
    fn inventory(&self) -> Vec<GpuInfo> {
        Vec::new()
    }
    fn sample(&self) -> Vec<GpuStats> {
        Vec::new()
    }
    fn describe(&self) -> String {
        "none".into()
    }
}

/// Simulated GPUs with figures that change over time, deterministic per index.
pub struct SimulatedGpus {
    count: u32,
}

impl SimulatedGpus {
    pub const MEMORY_MB: u64 = 81_920;
    pub const MODEL: &'static str = "CloudAI Simulated A100";

    pub fn new(count: u32) -> Self {
        Self { count }
    }

    fn uuid(index: u32) -> String {
        format!("GPU-00000000-0000-4000-8000-{index:012x}")
    }
}

impl GpuSource for SimulatedGpus {
    fn inventory(&self) -> Vec<GpuInfo> {
        (0..self.count)
            .map(|index| GpuInfo {
                index,
                uuid: Self::uuid(index),
                model: Self::MODEL.into(),
                memory_total_mb: Self::MEMORY_MB,
            })
            .collect()
    }

    fn sample(&self) -> Vec<GpuStats> {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
        (0..self.count)
            .map(|index| {
                let phase = t / 30.0 + f64::from(index);
                let util = 50.0 + 45.0 * phase.sin();
                GpuStats {
                    index,
                    uuid: Self::uuid(index),
                    model: Self::MODEL.into(),
                    utilization_percent: util,
                    memory_used_mb: (Self::MEMORY_MB as f64 * util / 200.0) as u64,
                    memory_total_mb: Self::MEMORY_MB,
                    temperature_c: Some(40.0 + util / 3.0),
                    power_watts: Some(60.0 + util * 3.4),
                    energy_mj: Some((t * 1000.0 * 200.0) as u64),
                    sm_clock_mhz: Some(1410),
                    mem_clock_mhz: Some(1593),
                    xid_errors: Some(0),
                }
            })
            .collect()
    }

    fn describe(&self) -> String {
        format!("{} simulated", self.count)
    }
}

/// Real GPUs through NVML.
pub struct NvmlGpus {
    nvml: Nvml,
}

impl NvmlGpus {
    pub fn init() -> Result<Self, NvmlError> {
        Ok(Self { nvml: Nvml::init()? })
    }

    fn count(&self) -> u32 {
        self.nvml.device_count().unwrap_or(0)
    }
}

impl GpuSource for NvmlGpus {
    fn inventory(&self) -> Vec<GpuInfo> {
        (0..self.count())
            .filter_map(|index| {
                let d = self.nvml.device_by_index(index).ok()?;
                Some(GpuInfo {
                    index,
                    uuid: d.uuid().unwrap_or_default(),
                    model: d.name().unwrap_or_default(),
                    memory_total_mb: d.memory_info().map(|m| m.total / 1_048_576).unwrap_or(0),
                })
            })
            .collect()
    }

    fn sample(&self) -> Vec<GpuStats> {
        (0..self.count())
            .filter_map(|index| {
                let d = self.nvml.device_by_index(index).ok()?;
                let memory = d.memory_info().ok();
                // A field NVML cannot read is missing data, never zero.
                Some(GpuStats {
                    index,
                    uuid: d.uuid().unwrap_or_default(),
                    model: d.name().unwrap_or_default(),
                    utilization_percent: d.utilization_rates().map(|u| f64::from(u.gpu)).unwrap_or(0.0),
                    memory_used_mb: memory.as_ref().map(|m| m.used / 1_048_576).unwrap_or(0),
                    memory_total_mb: memory.as_ref().map(|m| m.total / 1_048_576).unwrap_or(0),
                    temperature_c: d.temperature(TemperatureSensor::Gpu).ok().map(f64::from),
                    power_watts: d.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                    energy_mj: d.total_energy_consumption().ok(),
                    sm_clock_mhz: d.clock_info(Clock::SM).ok(),
                    mem_clock_mhz: d.clock_info(Clock::Memory).ok(),
                    xid_errors: None,
                })
            })
            .collect()
    }

    fn describe(&self) -> String {
        format!("{} via NVML", self.count())
    }
}
