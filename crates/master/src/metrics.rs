//! `GET /metrics`: Prometheus text exposition (prometheus-client).
//!
//! Per-worker and per-GPU families are produced at scrape time from a snapshot of the
//! TelemetryManager (a `Collector`), so no per-worker metric objects live between
//! scrapes. Units are in the names, counters end in `_total` (added by the encoder).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cloudai_domain::TaskStatus;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::telemetry::{TelemetryStats, WorkerTelemetry};
use cloudai_domain::WorkerInfo;

/// Metrics updated as things happen (the rest is read at scrape time).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub heartbeat_seconds: Histogram,
    pub scheduling_seconds: Histogram,
    /// Worker RPCs refused, by [`Denied`] reason.
    pub worker_denied: Family<Vec<(&'static str, &'static str)>, Counter>,
}

/// Why a worker's RPC was refused.
#[derive(Clone, Copy, Debug)]
pub enum Denied {
    /// No certificate, or one that is no worker's.
    NoCertificate,
    /// A certificate speaking for another worker.
    NotItself,
    Revoked,
    /// A task (or its output) that is not placed on the caller.
    NotPlacedHere,
    BadJoinToken,
    JoinRateLimited,
}

impl Denied {
    fn as_str(self) -> &'static str {
        match self {
            Self::NoCertificate => "no_certificate",
            Self::NotItself => "not_itself",
            Self::Revoked => "revoked",
            Self::NotPlacedHere => "not_placed_here",
            Self::BadJoinToken => "bad_join_token",
            Self::JoinRateLimited => "join_rate_limited",
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            // 10 µs … ~2.6 s.
            heartbeat_seconds: Histogram::new(exponential_buckets(0.000_01, 4.0, 10)),
            // 1 ms … ~4.6 h: time a task waited in `pending` before being placed.
            scheduling_seconds: Histogram::new(exponential_buckets(0.001, 4.0, 13)),
            worker_denied: Family::default(),
        }
    }
}

impl Metrics {
    pub fn observe_heartbeat(&self, took: Duration) {
        self.heartbeat_seconds.observe(took.as_secs_f64());
    }

    pub fn observe_scheduling(&self, waited: Duration) {
        self.scheduling_seconds.observe(waited.as_secs_f64());
    }

    pub fn deny(&self, reason: Denied) {
        self.worker_denied.get_or_create(&vec![("reason", reason.as_str())]).inc();
    }
}

/// Unfinished tasks by state, and cluster figures, for the API and metrics.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct TaskCounts {
    pub pending: usize,
    pub queued: usize,
    pub running: usize,
    pub totals: cloudai_scheduler::ClusterTotals,
}

/// Everything a scrape reads, gathered first (some of it is async), then encoded.
#[derive(Debug)]
pub struct Snapshot {
    pub workers: Vec<(Arc<WorkerInfo>, WorkerTelemetry)>,
    pub stats: TelemetryStats,
    pub task_states: BTreeMap<TaskStatus, u64>,
    pub counts: TaskCounts,
    pub alerts_firing: usize,
}

/// Renders the exposition text.
pub fn render(metrics: &Metrics, snapshot: Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register(
        "cloudai_heartbeat_handling_seconds",
        "Time the master's heartbeat RPC handler took",
        metrics.heartbeat_seconds.clone(),
    );
    registry.register(
        "cloudai_worker_requests_denied",
        "Worker RPCs refused: no certificate, another worker's id, revoked, a task not placed there, a bad join token",
        metrics.worker_denied.clone(),
    );
    registry.register(
        "cloudai_scheduling_latency_seconds",
        "Time tasks waited in pending before being placed",
        metrics.scheduling_seconds.clone(),
    );
    registry.register_collector(Box::new(snapshot));
    let mut out = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// One gauge family: name, help, and (labels, value) rows.
fn gauge_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: &[(Labels<'_>, f64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in rows {
        ConstGauge::new(*value).encode(family.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(value);
    c.encode(encoder.encode_descriptor(name, help, None, c.metric_type())?)
}

const MB: f64 = 1024.0 * 1024.0;

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        let per_worker = |f: &dyn Fn(&WorkerInfo, &WorkerTelemetry) -> f64| -> Vec<(Labels<'_>, f64)> {
            self.workers.iter().map(|(i, t)| (vec![("worker_id", i.worker_id.as_str())], f(i, t))).collect()
        };
        gauge_family(
            e,
            "cloudai_worker_up",
            "1 if the worker is active, 0 if inactive",
            &per_worker(&|_, t| f64::from(u8::from(t.is_active))),
        )?;
        gauge_family(
            e,
            "cloudai_worker_cpu_usage_percent",
            "Worker CPU usage",
            &per_worker(&|_, t| t.cpu_usage),
        )?;
        gauge_family(
            e,
            "cloudai_worker_memory_usage_percent",
            "Worker memory usage",
            &per_worker(&|_, t| t.memory_usage),
        )?;
        gauge_family(
            e,
            "cloudai_worker_memory_used_bytes",
            "Worker memory in use",
            &per_worker(&|_, t| t.memory_used_mb as f64 * MB),
        )?;
        gauge_family(
            e,
            "cloudai_worker_memory_total_bytes",
            "Worker memory in all",
            &per_worker(&|_, t| t.memory_total_mb as f64 * MB),
        )?;
        gauge_family(
            e,
            "cloudai_worker_gpu_usage_percent",
            "Mean GPU utilisation of the worker",
            &per_worker(&|_, t| t.gpu_usage),
        )?;
        gauge_family(
            e,
            "cloudai_worker_running_tasks",
            "Tasks the worker reports running",
            &per_worker(&|_, t| t.running_tasks.len() as f64),
        )?;
        gauge_family(
            e,
            "cloudai_worker_last_heartbeat_timestamp_seconds",
            "When the master last applied a heartbeat",
            &per_worker(&|_, t| t.last_update as f64),
        )?;

        // Per GPU: the fields NVIDIA's DCGM exporter exposes by default that NVML gives.
        // A field the GPU could not report is left out, never shown as zero.
        type GpuField = fn(&cloudai_domain::GpuStats) -> Option<f64>;
        let gpu_families: [(&str, &str, GpuField); 9] = [
            ("cloudai_gpu_utilization_percent", "GPU utilisation (DCGM_FI_DEV_GPU_UTIL)", |g| {
                Some(g.utilization_percent)
            }),
            ("cloudai_gpu_memory_used_bytes", "GPU framebuffer memory used (DCGM_FI_DEV_FB_USED)", |g| {
                Some(g.memory_used_mb as f64 * MB)
            }),
            ("cloudai_gpu_memory_free_bytes", "GPU framebuffer memory free (DCGM_FI_DEV_FB_FREE)", |g| {
                Some(g.memory_total_mb.saturating_sub(g.memory_used_mb) as f64 * MB)
            }),
            ("cloudai_gpu_temperature_celsius", "GPU temperature (DCGM_FI_DEV_GPU_TEMP)", |g| {
                g.temperature_c
            }),
            ("cloudai_gpu_power_watts", "GPU power draw (DCGM_FI_DEV_POWER_USAGE)", |g| g.power_watts),
            (
                "cloudai_gpu_energy_joules",
                "GPU energy since the driver loaded (DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION)",
                |g| g.energy_mj.map(|mj| mj as f64 / 1000.0),
            ),
            ("cloudai_gpu_sm_clock_hertz", "GPU SM clock (DCGM_FI_DEV_SM_CLOCK)", |g| {
                g.sm_clock_mhz.map(|m| f64::from(m) * 1e6)
            }),
            ("cloudai_gpu_memory_clock_hertz", "GPU memory clock (DCGM_FI_DEV_MEM_CLOCK)", |g| {
                g.mem_clock_mhz.map(|m| f64::from(m) * 1e6)
            }),
            ("cloudai_gpu_xid_errors", "Last XID error of the GPU (DCGM_FI_DEV_XID_ERRORS)", |g| {
                g.xid_errors.map(|x| x as f64)
            }),
        ];
        let indices: Vec<Vec<String>> =
            self.workers.iter().map(|(_, t)| t.gpus.iter().map(|g| g.index.to_string()).collect()).collect();
        for (name, help, field) in gpu_families {
            let mut rows = Vec::new();
            for ((info, t), idx) in self.workers.iter().zip(&indices) {
                for (g, index) in t.gpus.iter().zip(idx) {
                    if let Some(v) = field(g) {
                        let labels = vec![
                            ("worker_id", info.worker_id.as_str()),
                            ("gpu", index.as_str()),
                            ("uuid", g.uuid.as_str()),
                            ("model", g.model.as_str()),
                        ];
                        rows.push((labels, v));
                    }
                }
            }
            gauge_family(e, name, help, &rows)?;
        }

        // Per running task (container stats from the Docker driver; 0 where not measured).
        let mut task_cpu = Vec::new();
        let mut task_mem = Vec::new();
        for (info, t) in &self.workers {
            for task in &t.running_tasks {
                let labels = vec![("worker_id", info.worker_id.as_str()), ("task_id", task.task_id.as_str())];
                task_cpu.push((labels.clone(), task.cpu_percent));
                task_mem.push((labels, task.memory_bytes as f64));
            }
        }
        gauge_family(e, "cloudai_task_cpu_usage_percent", "CPU usage of a running task", &task_cpu)?;
        gauge_family(e, "cloudai_task_memory_bytes", "Memory of a running task", &task_mem)?;

        // Cluster.
        let totals = &self.counts.totals;
        gauge(e, "cloudai_cluster_workers", "Registered workers", self.stats.workers as f64)?;
        gauge(e, "cloudai_cluster_active_workers", "Active workers", self.stats.active_workers as f64)?;
        gauge(
            e,
            "cloudai_cluster_cpu_capacity_cores",
            "CPU cores of schedulable workers",
            totals.capacity.cpu,
        )?;
        gauge(
            e,
            "cloudai_cluster_cpu_reserved_cores",
            "CPU cores reserved by placed tasks",
            totals.reserved.cpu,
        )?;
        gauge(
            e,
            "cloudai_cluster_memory_capacity_bytes",
            "Memory of schedulable workers",
            totals.capacity.memory_mb as f64 * MB,
        )?;
        gauge(
            e,
            "cloudai_cluster_memory_reserved_bytes",
            "Memory reserved by placed tasks",
            totals.reserved.memory_mb as f64 * MB,
        )?;
        gauge(
            e,
            "cloudai_cluster_gpu_capacity",
            "GPUs of schedulable workers",
            f64::from(totals.capacity.gpus),
        )?;
        gauge(
            e,
            "cloudai_cluster_gpu_reserved",
            "GPUs reserved by placed tasks",
            f64::from(totals.reserved.gpus),
        )?;
        let states: Vec<(Labels<'_>, f64)> =
            self.task_states.iter().map(|(s, n)| (vec![("state", s.as_str())], *n as f64)).collect();
        gauge_family(e, "cloudai_tasks", "Tasks by state", &states)?;

        counter(e, "cloudai_heartbeats_received", "Heartbeats accepted", self.stats.heartbeats_received)?;
        counter(
            e,
            "cloudai_heartbeats_dropped",
            "Heartbeats coalesced away (a newer one won)",
            self.stats.heartbeats_dropped,
        )?;
        counter(
            e,
            "cloudai_heartbeats_rejected",
            "Heartbeats from unknown workers",
            self.stats.heartbeats_rejected,
        )?;
        counter(
            e,
            "cloudai_heartbeats_rate_limited",
            "Heartbeats refused because the worker exceeded its rate limit",
            self.stats.heartbeats_rate_limited,
        )?;
        counter(
            e,
            "cloudai_history_buckets_dropped",
            "History minute buckets not stored because the store fell behind",
            self.stats.history_minutes_dropped,
        )?;
        gauge(e, "cloudai_alerts_firing", "Alerts firing now", self.alerts_firing as f64)?;
        Ok(())
    }
}

/// Converts the OpenMetrics exposition to Prometheus' classic text format (0.0.4) for
/// clients that did not ask for OpenMetrics (curl, `promtool check metrics`): counter
/// families are named with their `_total` suffix, and `# EOF` / `# UNIT` lines go.
pub fn to_classic_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + 256);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let rewritten = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters.contains(name).then(|| format!("{prefix}{name}_total {tail}"))
        });
        match rewritten {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_with_total() {
        let om = "# HELP a_hits Hits.\n# TYPE a_hits counter\na_hits_total 3\n# HELP b Bee.\n# TYPE b gauge\nb 1\n# EOF\n";
        assert_eq!(
            to_classic_text(om),
            "# HELP a_hits_total Hits.\n# TYPE a_hits_total counter\na_hits_total 3\n# HELP b Bee.\n# TYPE b gauge\nb 1\n"
        );
    }
}
