//! Cost of one `/metrics` scrape over a large cluster (encoding only; the snapshot
//! is what the handler gathers from the TelemetryManager first).
//!
//! `cargo bench -p cloudai-master --bench metrics`

use std::collections::BTreeMap;

use cloudai_domain::{Driver, GpuInfo, GpuStats, RunningStatus, RunningTask, WorkerId, WorkerInfo};
use cloudai_master::metrics::{Metrics, Snapshot, render};
use cloudai_master::telemetry::{TelemetryStats, WorkerTelemetry};
use criterion::{Criterion, criterion_group, criterion_main};

fn worker(i: usize, gpus: u32) -> (std::sync::Arc<WorkerInfo>, WorkerTelemetry) {
    let worker_id = WorkerId::parse(&format!("worker-{i:05}")).expect("valid id");
    let gpu = |index: u32| GpuStats {
        index,
        uuid: format!("GPU-{i:08x}-{index:04x}"),
        model: "NVIDIA A100-SXM4-80GB".into(),
        utilization_percent: 63.0,
        memory_used_mb: 40_000,
        memory_total_mb: 81_920,
        temperature_c: Some(61.0),
        power_watts: Some(270.5),
        energy_mj: Some(123_456_789),
        sm_clock_mhz: Some(1410),
        mem_clock_mhz: Some(1593),
        xid_errors: Some(0),
    };
    let info = WorkerInfo {
        worker_id: worker_id.clone(),
        hostname: format!("node-{i}"),
        cpu_cores: 64.0,
        memory_mb: 512 * 1024,
        gpus: (0..gpus)
            .map(|index| GpuInfo {
                index,
                uuid: String::new(),
                model: String::new(),
                memory_total_mb: 81_920,
            })
            .collect(),
        labels: BTreeMap::new(),
        version: "0.1.0".into(),
        drivers: vec![Driver::Docker],
        registered_at: 1_700_000_000,
    };
    let telemetry = WorkerTelemetry {
        worker_id,
        cpu_usage: 41.5,
        memory_usage: 37.2,
        gpu_usage: 63.0,
        memory_used_mb: 190_000,
        memory_total_mb: 512 * 1024,
        gpus: (0..gpus).map(gpu).collect(),
        running_tasks: (0..2)
            .map(|t| RunningTask {
                task_id: format!("task-{i}-{t}"),
                status: RunningStatus::Running,
                cpu_percent: 12.0,
                memory_bytes: 1 << 30,
                started_at: 1_700_000_000,
            })
            .collect(),
        last_update: 1_700_000_100,
        sample_time_ms: 1_700_000_100_000,
        is_active: true,
        heartbeats_received: 100,
        heartbeats_dropped: 0,
    };
    (std::sync::Arc::new(info), telemetry)
}

fn scrape(c: &mut Criterion) {
    let metrics = Metrics::default();
    let mut group = c.benchmark_group("metrics_scrape");
    group.sample_size(10);
    for (workers, gpus) in [(1_000, 4), (10_000, 0), (10_000, 4)] {
        let all: Vec<_> = (0..workers).map(|i| worker(i, gpus)).collect();
        group.bench_function(format!("{workers}_workers_{gpus}_gpus"), |b| {
            b.iter(|| {
                let snapshot = Snapshot {
                    workers: all.clone(),
                    stats: TelemetryStats::default(),
                    task_states: BTreeMap::new(),
                    counts: Default::default(),
                    alerts_firing: 0,
                };
                render(&metrics, snapshot).expect("render")
            })
        });
    }
    group.finish();
}

criterion_group!(benches, scrape);
criterion_main!(benches);
