//! `cloudai bench heartbeats`: N simulated workers over real gRPC.
//!
//! Each simulated worker registers, then heartbeats at its interval (phases spread
//! evenly) with changing figures, a few GPUs and a few running tasks. Workers share
//! `--connections` HTTP/2 connections (`--connection-per-worker` gives each its own,
//! as real workers have). Against an `https://` master with its join token, each worker
//! first joins for a certificate of its own and then speaks over an mTLS connection of its
//! own (see [`crate::mtls`]). With `--master-pid` the master's resident memory is read
//! before and after registration to give bytes per idle registered worker, and its CPU
//! time over the heartbeats (and the joins) to give µs per heartbeat (and per join).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use cloudai_pki::JoinToken;
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use futures::StreamExt;
use hdrhistogram::Histogram;
use serde_json::json;
use tonic::transport::{Channel, Endpoint};

use super::{cpu_seconds, resident_bytes};
use crate::mtls::{self, MtlsTarget};
use crate::phases::{Phase, PhaseGuard, Phases};
use crate::proxy::counting_proxy;
use cloudai_api::parse::{parse_duration, parse_url};
use cloudai_domain::time::unix_ms;
use cloudai_proto::Compression;
use cloudai_worker::gpu::{GpuSource, SimulatedGpus};

#[derive(Args, Debug, Clone)]
pub struct HeartbeatArgs {
    /// The master's gRPC address: http://HOST:PORT, or https://HOST:PORT with --join-token.
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
    /// HTTP/2 connections shared by the simulated workers (plain text only).
    #[arg(long, default_value_t = 8)]
    pub connections: usize,
    /// One connection per worker (overrides --connections; always so over mTLS).
    #[arg(long)]
    pub connection_per_worker: bool,
    /// The join token of an https:// master (`cloudai-join.<CA sha256>.<secret>`): each
    /// simulated worker joins for a certificate of its own, then heartbeats over an mTLS
    /// connection of its own, since the master knows a worker by its connection's
    /// certificate (--connections does not apply).
    #[arg(long, value_parser = parse_join_token, conflicts_with = "join_token_file")]
    pub join_token: Option<JoinToken>,
    /// A file holding the join token; the master's own `<data dir>/pki/join.token` (the secret
    /// alone) works too, the CA fingerprint then read from the `ca.crt` beside it.
    #[arg(long)]
    pub join_token_file: Option<PathBuf>,
    /// Joins in flight at once, over all threads (each on a TLS connection of its own).
    #[arg(long, default_value_t = 64)]
    pub join_concurrency: usize,
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

fn parse_join_token(raw: &str) -> Result<JoinToken, String> {
    JoinToken::parse(raw).map_err(|e| e.to_string())
}

impl HeartbeatArgs {
    /// The join token given, read from its file if need be.
    pub fn token(&self) -> anyhow::Result<Option<JoinToken>> {
        match (&self.join_token, &self.join_token_file) {
            (Some(token), _) => Ok(Some(token.clone())),
            (None, Some(path)) => mtls::token_from_file(path).map(Some),
            (None, None) => Ok(None),
        }
    }
}

/// One load-generator thread: its own runtime, connections and simulated workers.
struct Shard {
    index: usize,
    workers: Vec<usize>,
    connections: usize,
    join_concurrency: usize,
}

struct ShardResult {
    sent: u64,
    errors: u64,
    register_errors: usize,
    histogram: Histogram<u64>,
    join_errors: usize,
    first_join_error: Option<String>,
    join_histogram: Histogram<u64>,
}

impl ShardResult {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            sent: 0,
            errors: 0,
            register_errors: 0,
            histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            join_errors: 0,
            first_join_error: None,
            join_histogram: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        })
    }

    fn add(&mut self, other: Self) -> anyhow::Result<()> {
        self.sent += other.sent;
        self.errors += other.errors;
        self.register_errors += other.register_errors;
        self.histogram.add(&other.histogram)?;
        self.join_errors += other.join_errors;
        self.first_join_error = self.first_join_error.take().or(other.first_join_error);
        self.join_histogram.add(&other.join_histogram)?;
        Ok(())
    }
}

/// What the coordinator reads of the master and the clock between phases.
struct Readings {
    rss_before: Option<u64>,
    rss_registered: Option<u64>,
    rss_end: Option<u64>,
    join_cpu: Option<f64>,
    join_seconds: f64,
    connect_seconds: f64,
    cpu_used: Option<f64>,
    elapsed: f64,
    wire_bytes: Option<(u64, u64)>,
}

pub async fn run(args: HeartbeatArgs) -> anyhow::Result<serde_json::Value> {
    if args.workers == 0 {
        bail!("--workers must be at least 1");
    }
    let token = args.token()?;
    let https = args.master.starts_with("https://");
    match (https, &token) {
        (true, None) => bail!(
            "--master {} is https://: give the master's join token with --join-token or --join-token-file",
            args.master
        ),
        (false, Some(_)) => {
            bail!(
                "--join-token is for a TLS master: give its https:// address (got --master {})",
                args.master
            )
        }
        _ => {}
    }
    let connections = if args.connection_per_worker || token.is_some() {
        args.workers
    } else {
        args.connections.clamp(1, args.workers)
    };
    let threads = args.threads.clamp(1, 64).min(connections);
    let (master, wire) = if args.count_bytes {
        let (proxy, wire) = counting_proxy(args.master.clone()).await?;
        (proxy, Some(wire))
    } else {
        (args.master.clone(), None)
    };
    let target = args.master.clone();
    let tls = token.map(|t| MtlsTarget::new(&target, &master, t)).transpose()?.map(Arc::new);
    let args = Arc::new(HeartbeatArgs { connections, threads, master, ..args });
    let prefix =
        args.prefix.clone().unwrap_or_else(|| format!("sim-{:06x}", rand::random::<u32>() & 0xff_ffff));
    eprintln!(
        "{} workers over {connections} {}connection(s) from {threads} thread(s) to {target}{}",
        args.workers,
        if tls.is_some() { "mTLS " } else { "" },
        if wire.is_some() { " (through a byte-counting proxy)" } else { "" }
    );

    let phases = Arc::new(Phases::new(threads + 1));
    let rss_before = args.master_pid.and_then(resident_bytes);
    let join_cpu_start = args.master_pid.and_then(cpu_seconds);
    let started = Instant::now();
    let join_concurrency = args.join_concurrency.max(1);
    let mut handles = Vec::new();
    for index in 0..threads {
        let shard = Shard {
            index,
            workers: (index..args.workers).step_by(threads).collect(),
            connections: connections / threads + usize::from(index < connections % threads),
            join_concurrency: join_concurrency / threads + usize::from(index < join_concurrency % threads),
        };
        let (args, phases, prefix, tls) = (args.clone(), phases.clone(), prefix.clone(), tls.clone());
        handles.push(std::thread::Builder::new().name(format!("bench-{index}")).spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(run_shard(&args, tls.as_deref(), shard, &prefix, &phases))
        })?);
    }

    // The coordinator measures the master between phases; it blocks, so off the runtime.
    let coordinator = {
        let (args, phases, wire) = (args.clone(), phases.clone(), wire.clone());
        tokio::task::spawn_blocking(move || {
            let cpu = || args.master_pid.and_then(cpu_seconds);
            phases.wait(Phase::Joined);
            let join_seconds = started.elapsed().as_secs_f64();
            let join_cpu = join_cpu_start.zip(cpu()).map(|(a, b)| b - a);
            phases.wait(Phase::Registered);
            let connect_seconds = started.elapsed().as_secs_f64() - join_seconds;
            std::thread::sleep(args.settle);
            let rss_registered = args.master_pid.and_then(resident_bytes);
            let cpu_start = cpu();
            eprintln!(
                "heartbeating every {:?} for {:?} ({:.0}/s expected)",
                args.interval,
                args.duration,
                args.workers as f64 / args.interval.as_secs_f64()
            );
            let start = Instant::now();
            let wire_start = wire.as_ref().map(|w| w.snapshot());
            phases.wait(Phase::Go);
            phases.wait(Phase::Done);
            let elapsed = start.elapsed().as_secs_f64();
            let wire_bytes = wire.zip(wire_start).map(|(w, (up0, down0))| {
                let (up, down) = w.snapshot();
                (up - up0, down - down0)
            });
            let cpu_used = cpu_start.zip(cpu()).map(|(a, b)| b - a);
            let rss_end = args.master_pid.and_then(resident_bytes);
            Readings {
                rss_before,
                rss_registered,
                rss_end,
                join_cpu,
                join_seconds,
                connect_seconds,
                cpu_used,
                elapsed,
                wire_bytes,
            }
        })
    };
    let r = coordinator.await?;
    let mut total = ShardResult::new()?;
    for handle in handles {
        let shard = handle.join().map_err(|_| anyhow::anyhow!("a load-generator thread panicked"))??;
        total.add(shard)?;
    }

    let h = &total.histogram;
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let per_worker = match (r.rss_before, r.rss_registered) {
        (Some(b), Some(a)) => Some((a.saturating_sub(b)) / args.workers as u64),
        _ => None,
    };
    let joined = (!total.join_histogram.is_empty()).then_some(&total.join_histogram);
    let join_count = joined.map_or(0, |j| j.len());
    let sent = total.sent.max(1) as f64;
    let join_cpu_us = r.join_cpu.filter(|_| tls.is_some()).map(|c| c * 1e6 / join_count.max(1) as f64);
    Ok(json!({
        "bench": "heartbeats",
        "tls": tls.is_some(),
        "workers": args.workers,
        "connections": connections,
        "threads": threads,
        "interval_ms": args.interval.as_millis() as u64,
        "duration_s": r.elapsed,
        "heartbeats_sent": total.sent,
        "heartbeats_per_sec": total.sent as f64 / r.elapsed,
        "p50_ms": ms(h, 0.50),
        "p90_ms": ms(h, 0.90),
        "p99_ms": ms(h, 0.99),
        "max_ms": h.max() as f64 / 1000.0,
        "errors": total.errors,
        "register_errors": total.register_errors,
        // Joining: each worker's CSR signed over a TLS connection of its own (TLS only).
        "join_seconds": tls.as_ref().map(|_| r.join_seconds),
        "joins_per_sec": tls.as_ref().map(|_| join_count as f64 / r.join_seconds.max(1e-9)),
        "join_p50_ms": joined.map(|j| ms(j, 0.50)),
        "join_p99_ms": joined.map(|j| ms(j, 0.99)),
        "join_errors": tls.as_ref().map(|_| total.join_errors),
        "first_join_error": total.first_join_error,
        "master_cpu_us_per_join": join_cpu_us,
        // Opening the connections (mTLS handshakes over TLS) and registering every worker.
        "connect_register_seconds": r.connect_seconds,
        "master_rss_before_bytes": r.rss_before,
        "master_rss_registered_bytes": r.rss_registered,
        "master_rss_end_bytes": r.rss_end,
        "master_rss_per_idle_worker_bytes": per_worker,
        "master_cpu_seconds": r.cpu_used,
        "master_cpu_us_per_heartbeat": r.cpu_used.map(|c| c * 1e6 / sent),
        "compression": args.compression.as_str(),
        "wire_bytes_per_heartbeat_up": r.wire_bytes.map(|(up, _)| up as f64 / sent),
        "wire_bytes_per_heartbeat_down": r.wire_bytes.map(|(_, down)| down as f64 / sent),
    }))
}

/// A simulated worker: its index (for its phase), id and client.
type Sim = (usize, String, MasterServiceClient<Channel>);

async fn run_shard(
    args: &HeartbeatArgs,
    tls: Option<&MtlsTarget>,
    shard: Shard,
    prefix: &str,
    phases: &Phases,
) -> anyhow::Result<ShardResult> {
    let mut phase = PhaseGuard::new(phases);
    let mut result = ShardResult::new()?;
    let ids: Vec<(usize, String)> = shard.workers.iter().map(|&i| (i, format!("{prefix}-{i:05}"))).collect();
    let sims = match tls {
        Some(tls) => {
            let joins = tls.join_all(ids, shard.join_concurrency).await?;
            result.join_errors = joins.errors;
            result.first_join_error = joins.first_error;
            result.join_histogram = joins.latencies;
            phase.reach(Phase::Joined);
            tls.connect_all(joins.joined)
                .await?
                .into_iter()
                .map(|(i, id, channel)| (i, id, MasterServiceClient::new(channel)))
                .collect()
        }
        None => {
            phase.reach(Phase::Joined);
            connect_plain(args, ids, shard.connections).await?
        }
    };

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
                ..Default::default()
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
    phase.reach(Phase::Go);

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
    phase.reach(Phase::Done);
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

/// Plain text: `connections` shared HTTP/2 connections, the workers spread over them.
async fn connect_plain(
    args: &HeartbeatArgs,
    ids: Vec<(usize, String)>,
    connections: usize,
) -> anyhow::Result<Vec<Sim>> {
    let endpoint = Endpoint::from_shared(args.master.clone())
        .context("bad --master")?
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(10))
        .tcp_nodelay(true);
    let channels: Vec<Channel> = futures::stream::iter(0..connections.max(1))
        .map(|_| {
            let e = endpoint.clone();
            async move { e.connect().await }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .with_context(|| format!("cannot connect to {}", args.master))?;
    Ok(ids
        .into_iter()
        .enumerate()
        .map(|(j, (i, id))| (i, id, MasterServiceClient::new(channels[j % channels.len()].clone())))
        .collect())
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
