//! The heartbeat figures the history keeps, and the names of its fields.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::HistoryError;

/// One heartbeat's figures. Non-finite values count as missing in queries and minute buckets.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sample {
    pub timestamp_ms: i64,
    pub cpu: f64,
    pub memory: f64,
    pub gpu: f64,
    pub memory_used_mb: f64,
    /// 0 when unknown. When known, the raw tier derives memory % from used / total instead
    /// of storing it: a ratio has all its mantissa bits set and would cost a quarter of the
    /// raw tier, while used MB and an unchanging total compress to a few bits.
    pub memory_total_mb: f64,
    /// `(gpu index, utilisation %, memory used MB)`.
    pub gpus: Vec<(u32, f64, f64)>,
}

impl Sample {
    /// Whether the raw tier can leave memory % out and derive it back.
    pub(crate) fn memory_derivable(&self) -> bool {
        self.memory_total_mb > 0.0 && self.memory_total_mb.is_finite() && self.memory_used_mb.is_finite()
    }

    /// The sample as `(field, value)` pairs at f32 precision, GPUs with `index >= max_gpus`
    /// left out; `raw` leaves out memory % and GPU % where they can be derived back exactly
    /// (GPU % is the mean of the GPUs' utilisation, as a worker reports it).
    pub(crate) fn fields(&self, max_gpus: u32, raw: bool) -> impl Iterator<Item = (Field, f64)> + '_ {
        let derived = raw && self.memory_derivable();
        let kept = move |g: &&(u32, f64, f64)| g.0 < max_gpus;
        let gpu_derived =
            raw && to_f32(self.gpu) == mean_utilization(self.gpus.iter().filter(kept).map(|g| to_f32(g.1)));
        let fixed = [
            (Field::Cpu, self.cpu),
            (Field::Memory, if derived { f64::NAN } else { self.memory }),
            (Field::Gpu, self.gpu),
            (Field::MemoryUsedMb, self.memory_used_mb),
            (Field::MemoryTotalMb, if self.memory_total_mb > 0.0 { self.memory_total_mb } else { f64::NAN }),
        ];
        let gpus = self.gpus.iter().filter(kept).flat_map(|&(index, util, mem)| {
            [(Field::GpuUtilization(index), util), (Field::GpuMemoryUsedMb(index), mem)]
        });
        let known = move |(field, v): &(Field, f64)| match field {
            Field::Memory => !derived,
            Field::Gpu => !gpu_derived,
            Field::MemoryTotalMb => v.is_finite(),
            _ => true,
        };
        fixed.into_iter().filter(known).chain(gpus).map(|(field, v)| (field, to_f32(v)))
    }
}

/// The mean of the finite utilisations, at the precision figures are kept; NaN without any.
pub(crate) fn mean_utilization(utils: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = utils.filter(|u| u.is_finite()).fold((0.0, 0u32), |(sum, n), u| (sum + u, n + 1));
    if n == 0 { f64::NAN } else { to_f32(sum / f64::from(n)) }
}

/// Memory % as the raw tier derives it, at the precision it keeps figures.
pub(crate) fn memory_percent(used_mb: f64, total_mb: f64) -> f64 {
    if total_mb > 0.0 { to_f32(used_mb / total_mb * 100.0) } else { f64::NAN }
}

/// Figures are kept to f32 precision (about 7 significant digits, whole numbers exact to
/// 16 777 216): what sysinfo and NVML report anyway, and plenty for charts. A derived figure
/// such as memory % or a minute's average otherwise has all 52 mantissa bits set, which
/// doubles its compressed size. Rounding is monotonic, so min <= avg <= max holds.
pub(crate) fn to_f32(v: f64) -> f64 {
    let rounded = f64::from(v as f32);
    if rounded.is_finite() { rounded } else { v }
}

/// A stored field. Serialised as its name, e.g. `cpu_usage` or `gpu3_memory_used_mb`, so it
/// can key a JSON object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Cpu,
    Memory,
    Gpu,
    MemoryUsedMb,
    MemoryTotalMb,
    GpuUtilization(u32),
    GpuMemoryUsedMb(u32),
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::Cpu => f.write_str("cpu_usage"),
            Field::Memory => f.write_str("memory_usage"),
            Field::Gpu => f.write_str("gpu_usage"),
            Field::MemoryUsedMb => f.write_str("memory_used_mb"),
            Field::MemoryTotalMb => f.write_str("memory_total_mb"),
            Field::GpuUtilization(i) => write!(f, "gpu{i}_utilization"),
            Field::GpuMemoryUsedMb(i) => write!(f, "gpu{i}_memory_used_mb"),
        }
    }
}

impl FromStr for Field {
    type Err = HistoryError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let field = match s {
            "cpu_usage" => Some(Field::Cpu),
            "memory_usage" => Some(Field::Memory),
            "gpu_usage" => Some(Field::Gpu),
            "memory_used_mb" => Some(Field::MemoryUsedMb),
            "memory_total_mb" => Some(Field::MemoryTotalMb),
            _ => gpu_field(s),
        };
        field.ok_or_else(|| HistoryError::UnknownField(s.to_owned()))
    }
}

fn gpu_field(s: &str) -> Option<Field> {
    // Digits only: `u32::from_str` would also take "+1", which would not print back the same.
    fn index(digits: &str) -> Option<u32> {
        let valid = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
        valid.then(|| digits.parse().ok()).flatten()
    }
    let rest = s.strip_prefix("gpu")?;
    if let Some(digits) = rest.strip_suffix("_utilization") {
        return index(digits).map(Field::GpuUtilization);
    }
    index(rest.strip_suffix("_memory_used_mb")?).map(Field::GpuMemoryUsedMb)
}

impl Serialize for Field {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for field in [
            Field::Cpu,
            Field::Memory,
            Field::Gpu,
            Field::MemoryUsedMb,
            Field::MemoryTotalMb,
            Field::GpuUtilization(0),
            Field::GpuMemoryUsedMb(15),
        ] {
            assert_eq!(field.to_string().parse::<Field>().unwrap(), field);
        }
        assert!("gpu_x_utilization".parse::<Field>().is_err());
        assert!("gpu+1_utilization".parse::<Field>().is_err());
    }
}
