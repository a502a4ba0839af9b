//! `cloudai bench heartbeats`: N simulated workers over real gRPC.
//!
//! Each simulated worker registers, then heartbeats at its interval (phases spread
//! evenly) with changing figures, a few GPUs and a few running tasks. Workers share
//! `--connections` HTTP/2 connections (`--connection-per-worker` gives each its own,
//! as real workers have). With `--master-pid` the master's resident memory is read
//! before and after registration to give bytes per idle registered worker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use futures::StreamExt;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use super::{cpu_seconds, resident_bytes};
use crate::config::{parse_duration, parse_url};
use crate::time::unix_ms;
use crate::worker::gpu::{GpuSource, SimulatedGpus};

#[derive(Args, Debug)]
pub struct HeartbeatArgs {
    /// The master's gRPC address.
    #[arg(long, value_parser = parse_url)]
    pub master: String,
    /// Simulated workers.
    #[arg(long, default_value_t = 1000)]
    pub workers: usize,
    /// Heartbeat period of each worker.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long to heartbeat.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub duration: Duration,
    /// HTTP/2 connections shared by the simulated workers.
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// One connection per worker (overrides --connections).
    #[arg(long)]
    pub connection_per_worker: bool,
    /// GPUs per simulated worker.
    #[arg(long, default_value_t = 4)]
    pub gpus: u32,
    /// Running tasks reported in each heartbeat.
    #[arg(long, default_value_t = 3)]
    pub running_tasks: usize,
    /// The master's process id, to measure its resident memory per registered worker.
    #[arg(long)]
    pub master_pid: Option<u32>,
    /// Idle time between registration and the memory reading.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub settle: Duration,
    /// Leave the simulated workers registered at the end.
    #[arg(long)]
    pub keep: bool,
    /// Worker id prefix (default: random, so runs never collide).
    #[arg(long)]
    pub prefix: Option<String>,
}

struct Sim {
    id: String,
    client: MasterServiceClient<Channel>,
}

pub async fn run(args: HeartbeatArgs) -> anyhow::Result<serde_json::Value> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let connections =
        if args.connection_per_worker { args.workers } else { args.connections.clamp(1, args.workers) };
    let prefix =
        args.prefix.clone().unwrap_or_else(|| format!("sim-{:06x}", rand::random::<u32>() & 0xff_ffff));
    eprintln!("opening {connections} connection(s) to {}", args.master);
    let endpoint = Endpoint::from_shared(args.master.clone())
        .context("bad --master")?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    let channels: Vec<Channel> = futures::stream::iter(0..connections)
        .map(|_| {
            let e = endpoint.clone();
            async move { e.connect().await }
        })
        .buffer_unordered(128)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot connect to {}", args.master))?;

    let sims: Vec<Sim> = (0..args.workers)
        .map(|i| Sim {
            id: format!("{prefix}-{i:05}"),
            client: MasterServiceClient::new(channels[i % connections].clone()),
        })
        .collect();

    let rss_before = args.master_pid.and_then(resident_bytes);
    eprintln!("registering {} simulated workers", args.workers);
    let gpus = SimulatedGpus::new(args.gpus);
    let inventory: Vec<pb::GpuInfo> = gpus.inventory().into_iter().map(Into::into).collect();
    let register_errors = futures::stream::iter(sims.iter())
        .map(|sim| {
            let mut client = sim.client.clone();
            let req = pb::RegisterWorkerRequest {
                worker_id: sim.id.clone(),
                hostname: format!("{}.sim", sim.id),
                cpu_cores: 32.0,
                memory_mb: 256 * 1024,
                gpus: inventory.clone(),
                labels: [("sim".to_string(), "true".to_string())].into(),
                version: crate::VERSION.into(),
                protocol_version: cloudai_proto::PROTOCOL_VERSION,
                drivers: vec!["docker".into()],
                running_tasks: Vec::new(),
            };
            async move { client.register_worker(req).await.is_err() }
        })
        .buffer_unordered(256)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    tokio::time::sleep(args.settle).await;
    let rss_registered = args.master_pid.and_then(resident_bytes);

    eprintln!(
        "heartbeating every {:?} for {:?} ({:.0}/s expected)",
        args.interval,
        args.duration,
        args.workers as f64 / args.interval.as_secs_f64()
    );
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?));
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let cpu_start = args.master_pid.and_then(cpu_seconds);
    let deadline = tokio::time::Instant::now() + args.duration;
    let gpus = Arc::new(gpus);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, sim) in sims.iter().enumerate() {
        let offset = args.interval.mul_f64(i as f64 / args.workers as f64);
        let (client, id) = (sim.client.clone(), sim.id.clone());
        let (histogram, sent, errors, gpus) = (histogram.clone(), sent.clone(), errors.clone(), gpus.clone());
        let (interval, running) = (args.interval, args.running_tasks);
        tasks.spawn(async move {
            heartbeat_loop(client, id, interval, offset, deadline, running, &gpus, &histogram, &sent, &errors)
                .await
        });
    }
    while tasks.join_next().await.is_some() {}
    let elapsed = start.elapsed().as_secs_f64();
    let rss_end = args.master_pid.and_then(resident_bytes);
    let cpu_used = cpu_start.zip(args.master_pid.and_then(cpu_seconds)).map(|(a, b)| b - a);

    if !args.keep {
        eprintln!("unregistering");
        futures::stream::iter(sims.iter())
            .map(|sim| {
                let mut client = sim.client.clone();
                let req = pb::UnregisterWorkerRequest { worker_id: sim.id.clone() };
                async move { client.unregister_worker(req).await.is_ok() }
            })
            .buffer_unordered(256)
            .count()
            .await;
    }

    let h = histogram.lock();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let sent = sent.load(Ordering::Relaxed);
    let per_worker = match (rss_before, rss_registered) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b)) / args.workers as u64),
        _ => None,
    };
    Ok(json!({
        "bench": "heartbeats",
        "workers": args.workers,
        "connections": connections,
        "interval_ms": args.interval.as_millis() as u64,
        "duration_s": elapsed,
        "heartbeats_sent": sent,
        "heartbeats_per_sec": sent as f64 / elapsed,
        "p50_ms": ms(0.50),
        "p90_ms": ms(0.90),
        "p99_ms": ms(0.99),
        "max_ms": h.max() as f64 / 1000.0,
        "errors": errors.load(Ordering::Relaxed),
        "register_errors": register_errors,
        "master_rss_before_bytes": rss_before,
        "master_rss_registered_bytes": rss_registered,
        "master_rss_end_bytes": rss_end,
        "master_rss_per_idle_worker_bytes": per_worker,
        "master_cpu_seconds": cpu_used,
        "master_cpu_us_per_heartbeat": cpu_used.map(|c| c * 1e6 / sent.max(1) as f64),
    }))
}

#[allow(clippy::too_many_arguments)]
async fn heartbeat_loop(
    mut client: MasterServiceClient<Channel>,
    worker_id: String,
    interval: Duration,
    offset: Duration,
    deadline: tokio::time::Instant,
    running_tasks: usize,
    gpus: &SimulatedGpus,
    histogram: &Mutex<Histogram<u64>>,
    sent: &AtomicU64,
    errors: &AtomicU64,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu: f64 = rand::random::<f64>() * 100.0;
    let started_at = unix_ms() / 1000;
    let tasks: Vec<pb::RunningTask> = (0..running_tasks)
        .map(|t| pb::RunningTask {
            task_id: format!("{worker_id}-task-{t}"),
            status: "running".into(),
            cpu_percent: 0.0,
            memory_bytes: 0,
            started_at,
        })
        .collect();
    loop {
        let at = tick.tick().await;
        if at >= deadline {
            break;
        }
        cpu = (cpu + (rand::random::<f64>() - 0.5) * 10.0).clamp(0.0, 100.0);
        let gpu_stats: Vec<pb::GpuStats> = gpus.sample().into_iter().map(Into::into).collect();
        let gpu_usage = if gpu_stats.is_empty() {
            0.0
        } else {
            gpu_stats.iter().map(|g| g.utilization_percent).sum::<f64>() / gpu_stats.len() as f64
        };
        let mut running = tasks.clone();
        for t in &mut running {
            t.cpu_percent = cpu / 2.0;
            t.memory_bytes = 512 * 1024 * 1024 + (cpu as u64) * 1024 * 1024;
        }
        let hb = pb::Heartbeat {
            worker_id: worker_id.clone(),
            timestamp_ms: unix_ms(),
            cpu_usage: cpu,
            memory_usage: 30.0 + cpu / 4.0,
            gpu_usage,
            memory_used_mb: 80 * 1024,
            memory_total_mb: 256 * 1024,
            gpus: gpu_stats,
            running_tasks: running,
        };
        let t0 = Instant::now();
        let result = client.send_heartbeat(hb).await;
        let micros = t0.elapsed().as_micros() as u64;
        sent.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {
                let _ = histogram.lock().record(micros.max(1));
            }
            Err(_) => {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
