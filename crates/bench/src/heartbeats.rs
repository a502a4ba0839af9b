//! `cloudai bench heartbeats`: N simulated workers over real gRPC.
//!
//! Each simulated worker registers, then heartbeats at its interval (phases spread
//! evenly) with changing figures, a few GPUs and a few running tasks. Workers share
//! `--connections` HTTP/2 connections (`--connection-per-worker` gives each its own,
//! as real workers have). With `--master-pid` the master's resident memory is read
//! before and after registration to give bytes per idle registered worker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use super::{cpu_seconds, resident_bytes};
use cloudai_api::parse::{parse_duration, parse_url};
use cloudai_domain::time::unix_ms;
use cloudai_proto::Compression;
use cloudai_worker::gpu::{GpuSource, SimulatedGpus};

#[derive(Args, Debug, Clone)]
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
    /// Load-generator threads, each with its own single-threaded runtime and connections.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Compression of the heartbeats: zstd, gzip or none.
    #[arg(long, default_value = "none", value_parser = Compression::parse)]
    pub compression: Compression,
    /// Route the connections through a byte-counting loopback proxy and report the bytes
    /// per heartbeat each way (costs CPU: leave it off when measuring latency).
    #[arg(long)]
    pub count_bytes: bool,
    #[command(flatten)]
    pub bare: super::bare::AgainstBareArgs,
}

/// Bytes seen by the counting proxy, each way.
#[derive(Default)]
struct WireBytes {
    up: AtomicU64,
    down: AtomicU64,
}

impl WireBytes {
    fn snapshot(&self) -> (u64, u64) {
        (self.up.load(Ordering::Relaxed), self.down.load(Ordering::Relaxed))
    }
}

/// Accepts loopback connections and forwards each to `target`, counting bytes.
async fn counting_proxy(target: String) -> anyhow::Result<(String, Arc<WireBytes>)> {
    let authority =
        target.split_once("://").map_or(target.as_str(), |(_, rest)| rest).trim_end_matches('/').to_string();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let bytes = Arc::new(WireBytes::default());
    let counters = bytes.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (authority, counters) = (authority.clone(), counters.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&authority).await else { return };
                let _ = (client.set_nodelay(true), server.set_nodelay(true));
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::join!(
                    pump(client_read, server_write, &counters.up),
                    pump(server_read, client_write, &counters.down)
                );
            });
        }
    });
    Ok((format!("http://{addr}"), bytes))
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    counter: &AtomicU64,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf).await {
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
    }
    let _ = to.shutdown().await;
}

/// One load-generator thread: its own runtime, connections and simulated workers.
struct Shard {
    index: usize,
    workers: Vec<usize>,
    connections: usize,
}

struct ShardResult {
    sent: u64,
    errors: u64,
    register_errors: usize,
    histogram: Histogram<u64>,
}

/// Phase boundaries shared by the shards and the coordinator.
struct Phases {
    registered: Barrier,
    go: Barrier,
    done: Barrier,
}

pub async fn run(args: HeartbeatArgs) -> anyhow::Result<serde_json::Value> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let connections =
        if args.connection_per_worker { args.workers } else { args.connections.clamp(1, args.workers) };
    let threads = args.threads.clamp(1, 64).min(connections);
    let (master, wire) = if args.count_bytes {
        let (proxy, wire) = counting_proxy(args.master.clone()).await?;
        (proxy, Some(wire))
    } else {
        (args.master.clone(), None)
    };
    let target = args.master.clone();
    let args = Arc::new(HeartbeatArgs { connections, threads, master, ..args });
    let prefix =
        args.prefix.clone().unwrap_or_else(|| format!("sim-{:06x}", rand::random::<u32>() & 0xff_ffff));
    eprintln!(
        "{} workers over {connections} connection(s) from {threads} thread(s) to {target}{}",
        args.workers,
        if wire.is_some() { " (through a byte-counting proxy)" } else { "" }
    );

    let phases = Arc::new(Phases {
        registered: Barrier::new(threads + 1),
        go: Barrier::new(threads + 1),
        done: Barrier::new(threads + 1),
    });
    let mut handles = Vec::new();
    for index in 0..threads {
        let shard = Shard {
            index,
            workers: (index..args.workers).step_by(threads).collect(),
            connections: connections / threads + usize::from(index < connections % threads),
        };
        let (args, phases, prefix) = (args.clone(), phases.clone(), prefix.clone());
        handles.push(std::thread::Builder::new().name(format!("bench-{index}")).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(run_shard(&args, shard, &prefix, &phases))
        })?);
    }

    // The coordinator measures the master between phases; it blocks, so off the runtime.
    let coordinator = {
        let (args, phases, wire) = (args.clone(), phases.clone(), wire.clone());
        tokio::task::spawn_blocking(move || {
            let rss_before = args.master_pid.and_then(resident_bytes);
            phases.registered.wait();
            std::thread::sleep(args.settle);
            let rss_registered = args.master_pid.and_then(resident_bytes);
            let cpu_start = args.master_pid.and_then(cpu_seconds);
            eprintln!(
                "heartbeating every {:?} for {:?} ({:.0}/s expected)",
                args.interval,
                args.duration,
                args.workers as f64 / args.interval.as_secs_f64()
            );
            let start = Instant::now();
            let wire_start = wire.as_ref().map(|w| w.snapshot());
            phases.go.wait();
            phases.done.wait();
            let elapsed = start.elapsed().as_secs_f64();
            let wire_bytes = wire.zip(wire_start).map(|(w, (up0, down0))| {
                let (up, down) = w.snapshot();
                (up - up0, down - down0)
            });
            let cpu_used = cpu_start.zip(args.master_pid.and_then(cpu_seconds)).map(|(a, b)| b - a);
            let rss_end = args.master_pid.and_then(resident_bytes);
            (rss_before, rss_registered, rss_end, cpu_used, elapsed, wire_bytes)
        })
    };
    let (rss_before, rss_registered, rss_end, cpu_used, elapsed, wire_bytes) = coordinator.await?;
    let mut total = ShardResult {
        sent: 0,
        errors: 0,
        register_errors: 0,
        histogram: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
    };
    for handle in handles {
        let r = handle.join().map_err(|_| anyhow::anyhow!("a load-generator thread panicked"))??;
        total.sent += r.sent;
        total.errors += r.errors;
        total.register_errors += r.register_errors;
        total.histogram.add(&r.histogram)?;
    }

    let h = &total.histogram;
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let per_worker = match (rss_before, rss_registered) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b)) / args.workers as u64),
        _ => None,
    };
    Ok(json!({
        "bench": "heartbeats",
        "workers": args.workers,
        "connections": connections,
        "threads": threads,
        "interval_ms": args.interval.as_millis() as u64,
        "duration_s": elapsed,
        "heartbeats_sent": total.sent,
        "heartbeats_per_sec": total.sent as f64 / elapsed,
        "p50_ms": ms(0.50),
        "p90_ms": ms(0.90),
        "p99_ms": ms(0.99),
        "max_ms": h.max() as f64 / 1000.0,
        "errors": total.errors,
        "register_errors": total.register_errors,
        "master_rss_before_bytes": rss_before,
        "master_rss_registered_bytes": rss_registered,
        "master_rss_end_bytes": rss_end,
        "master_rss_per_idle_worker_bytes": per_worker,
        "master_cpu_seconds": cpu_used,
        "master_cpu_us_per_heartbeat": cpu_used.map(|c| c * 1e6 / total.sent.max(1) as f64),
        "compression": args.compression.as_str(),
        "wire_bytes_per_heartbeat_up": wire_bytes.map(|(up, _)| up as f64 / total.sent.max(1) as f64),
        "wire_bytes_per_heartbeat_down": wire_bytes.map(|(_, down)| down as f64 / total.sent.max(1) as f64),
    }))
}

async fn run_shard(
    args: &HeartbeatArgs,
    shard: Shard,
    prefix: &str,
    phases: &Phases,
) -> anyhow::Result<ShardResult> {
    let mut result = ShardResult {
        sent: 0,
        errors: 0,
        register_errors: 0,
        histogram: Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?,
    };
    let endpoint = Endpoint::from_shared(args.master.clone())
        .context("bad --master")?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    let connected: Result<Vec<Channel>, _> = futures::stream::iter(0..shard.connections.max(1))
        .map(|_| {
            let e = endpoint.clone();
            async move { e.connect().await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect();
    let channels = match connected {
        Ok(c) => c,
        Err(e) => {
            // Release the other threads before failing.
            phases.registered.wait();
            phases.go.wait();
            phases.done.wait();
            return Err(anyhow::Error::new(e).context(format!("cannot connect to {}", args.master)));
        }
    };
    let sims: Vec<(usize, String, MasterServiceClient<Channel>)> = shard
        .workers
        .iter()
        .enumerate()
        .map(|(j, &i)| {
            (i, format!("{prefix}-{i:05}"), MasterServiceClient::new(channels[j % channels.len()].clone()))
        })
        .collect();

    let gpus = SimulatedGpus::new(args.gpus);
    let inventory: Vec<pb::GpuInfo> = gpus.inventory().into_iter().map(Into::into).collect();
    result.register_errors = futures::stream::iter(sims.iter())
        .map(|(_, id, client)| {
            let mut client = client.clone();
            let req = pb::RegisterWorkerRequest {
                worker_id: id.clone(),
                hostname: format!("{id}.sim"),
                cpu_cores: 32.0,
                memory_mb: 256 * 1024,
                gpus: inventory.clone(),
                labels: [("sim".to_string(), "true".to_string())].into(),
                version: cloudai_worker::VERSION.into(),
                protocol_version: cloudai_proto::PROTOCOL_VERSION,
                drivers: vec![pb::Driver::Docker.into()],
                running_tasks: Vec::new(),
            };
            async move { client.register_worker(req).await.is_err() }
        })
        .buffer_unordered(256)
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    if shard.index == 0 {
        eprintln!("registered; settling");
    }
    phases.registered.wait();
    phases.go.wait();

    let deadline = tokio::time::Instant::now() + args.duration;
    // As a real worker sends them: GPU uuids and models only at registration.
    let template: Vec<pb::GpuStats> = gpus
        .sample()
        .into_iter()
        .map(|g| pb::GpuStats { uuid: String::new(), model: String::new(), ..g.into() })
        .collect();
    let local = tokio::task::LocalSet::new();
    let stats = std::rc::Rc::new(std::cell::RefCell::new(ShardStats::default()));
    let encoding = args.compression.encoding();
    for (i, id, client) in &sims {
        let client = match encoding {
            Some(encoding) => client.clone().send_compressed(encoding),
            None => client.clone(),
        };
        let offset = args.interval.mul_f64(*i as f64 / args.workers as f64);
        let hb = heartbeat_template(id, args.running_tasks, &template);
        let (stats, interval) = (stats.clone(), args.interval);
        local.spawn_local(heartbeat_loop(client, hb, interval, offset, deadline, stats));
    }
    local.await;
    phases.done.wait();
    let stats = std::mem::take(&mut *stats.borrow_mut());
    result.sent = stats.sent;
    result.errors = stats.errors;
    for micros in stats.latencies_us {
        let _ = result.histogram.record(micros.max(1));
    }

    if !args.keep {
        futures::stream::iter(sims.iter())
            .map(|(_, id, client)| {
                let mut client = client.clone();
                let req = pb::UnregisterWorkerRequest { worker_id: id.clone() };
                async move { client.unregister_worker(req).await.is_ok() }
            })
            .buffer_unordered(256)
            .count()
            .await;
    }
    Ok(result)
}

#[derive(Default)]
struct ShardStats {
    sent: u64,
    errors: u64,
    latencies_us: Vec<u64>,
}

fn heartbeat_template(worker_id: &str, running_tasks: usize, gpus: &[pb::GpuStats]) -> pb::Heartbeat {
    let started_at = unix_ms() / 1000;
    pb::Heartbeat {
        worker_id: worker_id.to_string(),
        memory_used_mb: 80 * 1024,
        memory_total_mb: 256 * 1024,
        gpus: gpus.to_vec(),
        running_tasks: (0..running_tasks)
            .map(|t| pb::RunningTask {
                task_id: format!("{worker_id}-task-{t}"),
                status: pb::TaskStatus::Running.into(),
                started_at,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

/// Heartbeats at `interval` until `deadline`, with figures that drift like a real machine's.
async fn heartbeat_loop(
    mut client: MasterServiceClient<Channel>,
    mut hb: pb::Heartbeat,
    interval: Duration,
    offset: Duration,
    deadline: tokio::time::Instant,
    stats: std::rc::Rc<std::cell::RefCell<ShardStats>>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut cpu: f64 = rand::random::<f64>() * 100.0;
    loop {
        if tick.tick().await >= deadline {
            break;
        }
        cpu = (cpu + (rand::random::<f64>() - 0.5) * 10.0).clamp(0.0, 100.0);
        hb.timestamp_ms = unix_ms();
        hb.cpu_usage = cpu;
        hb.memory_usage = 30.0 + cpu / 4.0;
        for (k, g) in hb.gpus.iter_mut().enumerate() {
            g.utilization_percent = (cpu + 7.0 * k as f64) % 100.0;
            g.memory_used_mb = (g.memory_total_mb as f64 * g.utilization_percent / 200.0) as u64;
        }
        hb.gpu_usage = if hb.gpus.is_empty() {
            0.0
        } else {
            hb.gpus.iter().map(|g| g.utilization_percent).sum::<f64>() / hb.gpus.len() as f64
        };
        for t in &mut hb.running_tasks {
            t.cpu_percent = cpu / 2.0;
            t.memory_bytes = 512 * 1024 * 1024 + (cpu as u64) * 1024 * 1024;
        }
        let t0 = Instant::now();
        let result = client.send_heartbeat(hb.clone()).await;
        let micros = t0.elapsed().as_micros() as u64;
        let mut s = stats.borrow_mut();
        s.sent += 1;
        match result {
            Ok(_) => s.latencies_us.push(micros),
            Err(_) => s.errors += 1,
        }
    }
}
