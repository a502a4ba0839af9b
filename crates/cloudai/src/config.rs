//! Configuration: flags, environment and `.env` (flags win over the environment,
//! which wins over `.env`). Every option names its environment variable, so a bad
//! value produces a message naming it and exit code 2 (clap's usage error).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use cloudai_domain::Driver;
use cloudai_master::alerting::AlertConfig;
use cloudai_master::tasks::TaskConfig;
use cloudai_master::telemetry::TelemetryConfig;
use cloudai_master::{Master, MasterConfig};
use cloudai_worker::WorkerConfig;

pub use cloudai_api::parse::{parse_duration, parse_url};

/// A listen address: `:PORT` (all interfaces) or `HOST:PORT`; port 0 picks a free port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenAddr {
    pub host: String,
    pub port: u16,
}

impl ListenAddr {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let raw = raw.trim();
        let (host, port) = raw
            .rsplit_once(':')
            .ok_or_else(|| format!("invalid address {raw:?}: expected :PORT or HOST:PORT"))?;
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("invalid address {raw:?}: port {port:?} is not a number 0-65535"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host.is_empty() { "0.0.0.0" } else { host };
        Ok(Self { host: host.to_string(), port })
    }

    /// Binds a TCP listener on this address.
    pub async fn bind(&self) -> std::io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::bind((self.host.as_str(), self.port)).await
    }

    /// Serves this machine only: `localhost` or a loopback IP (not all interfaces).
    pub fn is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self.host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    pub fn loopback(port: u16) -> Self {
        Self { host: "127.0.0.1".into(), port }
    }

    /// This address if it serves this machine only; all interfaces (`:PORT`, `0.0.0.0`, `::`)
    /// become 127.0.0.1; any other address is refused, naming `setting`.
    pub fn this_machine_only(&self, setting: &str) -> Result<Self, String> {
        let ip = self.host.parse::<std::net::IpAddr>().ok();
        if ip.is_some_and(|ip| ip.is_unspecified()) {
            return Ok(Self::loopback(self.port));
        }
        if self.host.eq_ignore_ascii_case("localhost") || ip.is_some_and(|ip| ip.is_loopback()) {
            return Ok(self.clone());
        }
        Err(format!(
            "{setting} {self} is not a loopback address: `cloudai dev` has no TLS and no tokens, so \
             it serves only this machine (use 127.0.0.1, or run `cloudai master` and `cloudai worker`)"
        ))
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A parsed `HEARTBEAT_RATE_LIMIT`; `None` is off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateLimitArg(pub Option<cloudai_master::telemetry::RateLimit>);

fn parse_rate_limit(raw: &str) -> Result<RateLimitArg, String> {
    let raw = raw.trim();
    if raw == "off" {
        return Ok(RateLimitArg(None));
    }
    let bad = || {
        format!("invalid rate limit {raw:?}: expected RATE[,BURST] (heartbeats per second, e.g. 2,10) or off")
    };
    let (rate, burst) = match raw.split_once(',') {
        Some((r, b)) => (r.trim(), Some(b.trim())),
        None => (raw, None),
    };
    let per_second: f64 = rate.parse().map_err(|_| bad())?;
    let burst: f64 = match burst {
        Some(b) => b.parse().map_err(|_| bad())?,
        None => (per_second * 5.0).max(1.0),
    };
    if !(per_second.is_finite() && per_second > 0.0 && burst.is_finite() && burst >= 1.0) {
        return Err(bad());
    }
    Ok(RateLimitArg(Some(cloudai_master::telemetry::RateLimit { per_second, burst })))
}

fn parse_capacity(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(n) if (1..=100_000).contains(&n) => Ok(n),
        _ => Err(format!("invalid capacity {raw:?}: expected a whole number from 1 to 100000")),
    }
}

fn parse_cpus(raw: &str) -> Result<f64, String> {
    match raw.trim().parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 => Ok(n),
        _ => Err(format!("invalid CPU count {raw:?}: expected a number greater than 0, e.g. 4 or 0.5")),
    }
}

fn parse_positive_u64(raw: &str) -> Result<u64, String> {
    match raw.trim().parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("invalid value {raw:?}: expected a whole number greater than 0")),
    }
}

fn parse_gpu_count(raw: &str) -> Result<u32, String> {
    match raw.trim().parse::<u32>() {
        Ok(n) if n <= 64 => Ok(n),
        _ => Err(format!("invalid GPU count {raw:?}: expected a whole number from 0 to 64")),
    }
}

fn parse_worker_id(raw: &str) -> Result<cloudai_domain::WorkerId, String> {
    cloudai_domain::WorkerId::parse(raw).map_err(|e| format!("invalid worker id {raw:?}: {e}"))
}

/// `k=v,k2=v2`.
fn parse_labels(raw: &str) -> Result<Labels, String> {
    let mut labels = Vec::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) =
            pair.split_once('=').ok_or_else(|| format!("invalid label {pair:?}: expected KEY=VALUE"))?;
        if k.trim().is_empty() {
            return Err(format!("invalid label {pair:?}: empty key"));
        }
        labels.push((k.trim().to_string(), v.trim().to_string()));
    }
    Ok(Labels(labels))
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels(pub Vec<(String, String)>);

/// Task drivers a worker may enable.
pub const KNOWN_DRIVERS: &[Driver] = &[Driver::Process, Driver::Docker];

fn parse_drivers(raw: &str) -> Result<Drivers, String> {
    let mut drivers = Vec::new();
    for d in raw.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        let Some(driver) = KNOWN_DRIVERS.iter().copied().find(|k| k.as_str() == d) else {
            let known: Vec<_> = KNOWN_DRIVERS.iter().map(|k| k.as_str()).collect();
            return Err(format!("unknown driver {d:?}: expected a comma-separated list of {known:?}"));
        };
        if !drivers.contains(&driver) {
            drivers.push(driver);
        }
    }
    Ok(Drivers(drivers))
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Drivers(pub Vec<Driver>);

/// Options of the master (`cloudai master`, and the master half of `cloudai dev`).
#[derive(Args, Clone, Debug)]
pub struct MasterArgs {
    /// HTTP API address (:PORT or HOST:PORT; :0 picks a free port).
    #[arg(long = "http-port", env = "HTTP_PORT", value_name = "HTTP_PORT", default_value = ":8080", value_parser = ListenAddr::parse)]
    pub http_addr: ListenAddr,

    /// gRPC address for workers (:PORT or HOST:PORT).
    #[arg(long = "grpc-port", env = "GRPC_PORT", value_name = "GRPC_PORT", default_value = ":50051", value_parser = ListenAddr::parse)]
    pub grpc_addr: ListenAddr,

    /// A worker with no heartbeat for this long is marked inactive.
    #[arg(long, env = "INACTIVITY_TIMEOUT", value_name = "INACTIVITY_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub inactivity_timeout: Duration,

    /// Capacity of each worker's heartbeat channel on the master.
    #[arg(long, env = "TELEMETRY_CHANNEL_CAPACITY", value_name = "TELEMETRY_CHANNEL_CAPACITY", default_value = "10", value_parser = parse_capacity)]
    pub telemetry_channel_capacity: usize,

    /// Per-worker heartbeat rate limit: RATE[,BURST] in heartbeats per second (e.g. 10,20), or "off".
    #[arg(long, env = "HEARTBEAT_RATE_LIMIT", value_name = "HEARTBEAT_RATE_LIMIT", default_value = "10,20", value_parser = parse_rate_limit)]
    pub heartbeat_rate_limit: RateLimitArg,

    /// Data folder of the master.
    #[arg(long, env = "CLOUDAI_DATA_DIR", value_name = "CLOUDAI_DATA_DIR", default_value = "./cloudai-data")]
    pub data_dir: PathBuf,

    /// Extra names or addresses for the master's certificate (comma-separated), e.g. the
    /// name workers dial.
    #[arg(long = "tls-san", env = "TLS_SAN", value_name = "TLS_SAN", value_delimiter = ',')]
    pub tls_san: Vec<String>,

    /// The HTTP API's certificate chain (PEM) instead of one from the cluster CA.
    #[arg(long = "tls-cert", env = "TLS_CERT", value_name = "TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The key of TLS_CERT (PEM).
    #[arg(long = "tls-key", env = "TLS_KEY", value_name = "TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How long a worker's certificate is valid (it renews at two thirds).
    #[arg(long, env = "WORKER_CERT_LIFETIME", value_name = "WORKER_CERT_LIFETIME", default_value = "30d", value_parser = parse_duration)]
    pub worker_cert_lifetime: Duration,

    /// Store location (default: sqlite://<data dir>/cloudai.db).
    #[arg(long, env = "DATABASE_URL", value_name = "DATABASE_URL")]
    pub database_url: Option<String>,

    /// An inactive worker's tasks are treated as lost (and re-queued) after this long.
    #[arg(long, env = "TASK_LOSS_GRACE", value_name = "TASK_LOSS_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub task_loss_grace: Duration,

    /// Time between SIGTERM and SIGKILL when a running task is cancelled.
    #[arg(long, env = "CANCEL_GRACE", value_name = "CANCEL_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub cancel_grace: Duration,

    /// Placement policy: bin-pack (fill workers) or spread (even out load).
    #[arg(long, env = "PLACEMENT_POLICY", value_name = "PLACEMENT_POLICY", default_value = "bin-pack", value_parser = parse_policy)]
    pub placement: cloudai_scheduler::Policy,

    /// How long every worker's raw telemetry is kept in memory (at the heartbeat rate).
    #[arg(long, env = "HISTORY_WINDOW", value_name = "HISTORY_WINDOW", default_value = "1h", value_parser = parse_history_span)]
    pub history_window: Duration,

    /// How long the 1-minute min/avg/max history is kept (in memory and in the store).
    #[arg(long, env = "HISTORY_RETENTION", value_name = "HISTORY_RETENTION", default_value = "24h", value_parser = parse_history_span)]
    pub history_retention: Duration,

    /// Alert rules file (JSON, see crates/alerts/alerts.example.json); default: built-in rules.
    #[arg(long, env = "ALERT_RULES", value_name = "ALERT_RULES", value_parser = parse_alert_rules)]
    pub alert_rules: Option<cloudai_alerts::RuleSet>,

    /// Where alert events are POSTed (http://); overrides the rules file's webhook url.
    #[arg(long, env = "ALERT_WEBHOOK_URL", value_name = "ALERT_WEBHOOK_URL", value_parser = parse_webhook_url)]
    pub alert_webhook_url: Option<reqwest::Url>,

    /// How often alert rules are evaluated.
    #[arg(long, env = "ALERT_EVAL_INTERVAL", value_name = "ALERT_EVAL_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub alert_eval_interval: Duration,

    /// Never start the interactive console, even on a terminal.
    #[arg(long)]
    pub no_console: bool,

    /// How soon a connection must send a whole request head after it opens or after its
    /// last answer (idle keep-alive included) before it is closed.
    #[arg(long, env = "HTTP_HEADER_TIMEOUT", value_name = "HTTP_HEADER_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,

    /// HTTP connections served at once; past it, new ones get 503.
    #[arg(long, env = "HTTP_MAX_CONNECTIONS", value_name = "HTTP_MAX_CONNECTIONS", default_value = "512", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub http_max_connections: u32,

    /// A lost worker silent this long is forgotten: it leaves the worker lists, and its
    /// stored history goes.
    #[arg(long, env = "WORKER_FORGET_AFTER", value_name = "WORKER_FORGET_AFTER", default_value = "24h", value_parser = parse_duration)]
    pub worker_forget_after: Duration,

    /// Most workers registered at once; past it, new registrations get RESOURCE_EXHAUSTED.
    #[arg(long, env = "MAX_WORKERS", value_name = "MAX_WORKERS", default_value = "100000", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_workers: u32,

    /// Most GPUs one registration or heartbeat may list.
    #[arg(long, env = "MAX_GPUS_PER_WORKER", value_name = "MAX_GPUS_PER_WORKER", default_value = "64", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_gpus_per_worker: u32,

    /// Most labels one registration may carry.
    #[arg(long, env = "MAX_LABELS_PER_WORKER", value_name = "MAX_LABELS_PER_WORKER", default_value = "64", value_parser = clap::value_parser!(u32).range(0..=4096))]
    pub max_labels_per_worker: u32,

    /// Most drivers one registration may list.
    #[arg(long, env = "MAX_DRIVERS_PER_WORKER", value_name = "MAX_DRIVERS_PER_WORKER", default_value = "8", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub max_drivers_per_worker: u32,

    /// Most running tasks one registration or heartbeat may list.
    #[arg(long, env = "MAX_RUNNING_TASKS_PER_WORKER", value_name = "MAX_RUNNING_TASKS_PER_WORKER", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_running_tasks_per_worker: u32,

    /// Longest hostname, version, GPU uuid or model, label key or value, or task id a worker may send, in bytes.
    #[arg(long, env = "MAX_WORKER_STRING_BYTES", value_name = "MAX_WORKER_STRING_BYTES", default_value = "256", value_parser = clap::value_parser!(u32).range(64..=65536))]
    pub max_worker_string_bytes: u32,

    /// Largest gRPC message the master reads, in bytes (2 MiB to 64 MiB).
    #[arg(long, env = "GRPC_MAX_MESSAGE_BYTES", value_name = "GRPC_MAX_MESSAGE_BYTES", default_value = "4194304", value_parser = clap::value_parser!(u32).range(2_097_152..=67_108_864))]
    pub grpc_max_message_bytes: u32,

    /// Most arguments in a task's command.
    #[arg(long, env = "MAX_TASK_ARGS", value_name = "MAX_TASK_ARGS", default_value = "1024", value_parser = clap::value_parser!(u32).range(1..=65536))]
    pub max_task_args: u32,

    /// Most variables in a task's env.
    #[arg(long, env = "MAX_TASK_ENV_VARS", value_name = "MAX_TASK_ENV_VARS", default_value = "512", value_parser = clap::value_parser!(u32).range(0..=65536))]
    pub max_task_env_vars: u32,

    /// Most bytes of a task's env (names and values together).
    #[arg(long, env = "MAX_TASK_ENV_BYTES", value_name = "MAX_TASK_ENV_BYTES", default_value = "262144", value_parser = clap::value_parser!(u32).range(0..=1048576))]
    pub max_task_env_bytes: u32,

    /// Longest argument or env value of a task, in bytes.
    #[arg(long, env = "MAX_TASK_STRING_BYTES", value_name = "MAX_TASK_STRING_BYTES", default_value = "65536", value_parser = clap::value_parser!(u32).range(1..=1048576))]
    pub max_task_string_bytes: u32,

    /// Accept an existing but empty database file (it is refused otherwise: it most likely
    /// lost its tasks) and start with an empty store.
    #[arg(long)]
    pub init: bool,

    /// Plain text: no TLS, no worker certificates, no API tokens (every caller is admin).
    /// Allowed only when both listen addresses are loopback; `cloudai dev` always runs so.
    #[arg(long, env = "CLOUDAI_INSECURE")]
    pub insecure: bool,

    /// Serve /metrics without a token (for a Prometheus that has none).
    #[arg(long, env = "METRICS_PUBLIC")]
    pub metrics_public: bool,

    /// Most pending tasks one submitter (token name) may have; past it, submissions get 429.
    #[arg(long, env = "MAX_PENDING_PER_SUBMITTER", value_name = "MAX_PENDING_PER_SUBMITTER", default_value = "1000", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_per_submitter: u32,

    /// Failed token attempts allowed from one client address per minute; past it, every
    /// request from that address gets 429 until the minute ends.
    #[arg(long, env = "MAX_FAILED_TOKEN_ATTEMPTS", value_name = "MAX_FAILED_TOKEN_ATTEMPTS", default_value = "10", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_failed_token_attempts: u32,
}

/// A history span: whole minutes from 1 minute to 30 days.
fn parse_history_span(raw: &str) -> Result<Duration, String> {
    let d = parse_duration(raw)?;
    let minutes = d.as_secs() / 60;
    if d.as_secs() % 60 != 0 || d.subsec_nanos() != 0 || !(1..=30 * 24 * 60).contains(&minutes) {
        return Err(format!("invalid history span {raw:?}: expected whole minutes from 1m to 30d"));
    }
    Ok(d)
}

/// Reads and validates the rules file while parsing, so a bad file is a usage error
/// naming `ALERT_RULES` like any other bad value.
fn parse_alert_rules(raw: &str) -> Result<cloudai_alerts::RuleSet, String> {
    use cloudai_alerts::ConfigError;
    cloudai_alerts::RuleSet::load(std::path::Path::new(raw)).map_err(|e| match e {
        ConfigError::Read { source, .. } => format!("cannot read alert rules file {raw:?}: {source}"),
        ConfigError::Json(source) => format!("alert rules file {raw:?} is not valid: {source}"),
        ConfigError::Invalid { .. } => format!("alert rules file {raw:?}: {e}"),
    })
}

fn parse_webhook_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw.trim()).map_err(|e| format!("invalid webhook url {raw:?}: {e}"))?;
    // reqwest is built without TLS in this workspace.
    if url.scheme() != "http" {
        return Err(format!("invalid webhook url {raw:?}: only http:// is supported"));
    }
    Ok(url)
}

fn parse_policy(raw: &str) -> Result<cloudai_scheduler::Policy, String> {
    match raw.trim() {
        "bin-pack" | "binpack" => Ok(cloudai_scheduler::Policy::BinPack),
        "spread" => Ok(cloudai_scheduler::Policy::Spread),
        other => Err(format!("unknown policy {other:?}: expected bin-pack or spread")),
    }
}

/// Options of a worker (`cloudai worker`, and the worker half of `cloudai dev`).
#[derive(Args, Clone, Debug)]
pub struct WorkerArgs {
    /// The worker's stable id (default: the host name).
    #[arg(long, env = "WORKER_ID", value_name = "WORKER_ID", value_parser = parse_worker_id)]
    pub worker_id: Option<cloudai_domain::WorkerId>,

    /// The join token for an https:// master (from `cloudai token join`); needed once: the
    /// certificate it buys is kept in the worker's data folder.
    #[arg(long, env = "CLOUDAI_JOIN_TOKEN", value_name = "CLOUDAI_JOIN_TOKEN", value_parser = parse_join_token, hide_env_values = true)]
    pub join_token: Option<cloudai_worker::JoinToken>,

    /// A file holding the join token (instead of CLOUDAI_JOIN_TOKEN).
    #[arg(
        long,
        env = "CLOUDAI_JOIN_TOKEN_FILE",
        value_name = "CLOUDAI_JOIN_TOKEN_FILE",
        conflicts_with = "join_token"
    )]
    pub join_token_file: Option<PathBuf>,

    /// Heartbeat period.
    #[arg(long, env = "HEARTBEAT_INTERVAL", value_name = "HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Task drivers to enable (comma-separated: process, docker).
    #[arg(long, env = "CLOUDAI_DRIVERS", value_name = "CLOUDAI_DRIVERS", value_parser = parse_drivers)]
    pub drivers: Option<Drivers>,

    /// CPU cores to advertise (default: what the machine has).
    #[arg(long = "cpus", env = "WORKER_CPUS", value_name = "WORKER_CPUS", value_parser = parse_cpus)]
    pub cpus: Option<f64>,

    /// Memory to advertise in MB (default: what the machine has).
    #[arg(long = "memory-mb", env = "WORKER_MEMORY_MB", value_name = "WORKER_MEMORY_MB", value_parser = parse_positive_u64)]
    pub memory_mb: Option<u64>,

    /// Report this many simulated GPUs instead of NVML's (tests, benchmarks).
    #[arg(long, env = "CLOUDAI_SIMULATED_GPUS", value_name = "CLOUDAI_SIMULATED_GPUS", value_parser = parse_gpu_count)]
    pub simulated_gpus: Option<u32>,

    /// Labels to advertise (KEY=VALUE,KEY2=VALUE2).
    #[arg(long, env = "WORKER_LABELS", value_name = "WORKER_LABELS", value_parser = parse_labels)]
    pub labels: Option<Labels>,

    /// Worker data folder (task working folders); default: <CLOUDAI_DATA_DIR>/worker.
    #[arg(long, env = "WORKER_DATA_DIR", value_name = "WORKER_DATA_DIR")]
    pub worker_data_dir: Option<PathBuf>,

    /// Keep task working folders after tasks end (debugging).
    #[arg(long, env = "CLOUDAI_KEEP_WORKDIRS")]
    pub keep_workdirs: bool,

    /// User that process tasks run as (default: nobody when the worker runs as root, else the worker's own user).
    #[arg(long, env = "CLOUDAI_TASK_USER", value_name = "CLOUDAI_TASK_USER")]
    pub task_user: Option<String>,

    /// Compression of heartbeats to the master: zstd, gzip or none (used only if the master accepts it).
    #[arg(long, env = "GRPC_COMPRESSION", value_name = "GRPC_COMPRESSION", default_value = "zstd", value_parser = cloudai_proto::Compression::parse)]
    pub compression: cloudai_proto::Compression,

    /// Time between SIGTERM and SIGKILL when the worker stops its tasks itself (at shutdown,
    /// or cut off from the master).
    #[arg(long = "stop-grace", env = "TASK_STOP_GRACE", value_name = "TASK_STOP_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub stop_grace: Duration,
}

/// The data folder of `cloudai worker` (the worker's own is `<CLOUDAI_DATA_DIR>/worker`).
#[derive(Args, Clone, Debug)]
pub struct WorkerDataDirArg {
    /// Data folder; the worker keeps its files in `<CLOUDAI_DATA_DIR>/worker` unless WORKER_DATA_DIR says.
    #[arg(
        long = "data-dir",
        env = "CLOUDAI_DATA_DIR",
        value_name = "CLOUDAI_DATA_DIR",
        default_value = "./cloudai-data"
    )]
    pub data_dir: PathBuf,

    /// Check the worker running on this data folder instead of starting one: exit 0 when
    /// its heartbeats reach the master, else print why and exit 1 (for health checks).
    #[arg(long)]
    pub check: bool,
}

/// The address a worker dials.
#[derive(Args, Clone, Debug)]
pub struct MasterAddrArg {
    /// Where the worker dials the master's gRPC port.
    #[arg(long, alias = "master", env = "MASTER_ADDR", value_name = "MASTER_ADDR", default_value = "http://127.0.0.1:50051", value_parser = parse_url)]
    pub master_addr: String,
}

/// Where client commands go when nothing says otherwise: a `cloudai dev` on this machine.
const DEFAULT_API: &str = "http://127.0.0.1:8080";

/// The address client commands send requests to, and the token they send.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// The master's HTTP API (default: the client profile's, else http://127.0.0.1:8080).
    #[arg(long = "addr", env = "CLOUDAI_ADDR", value_name = "CLOUDAI_ADDR", value_parser = parse_url, global = true)]
    pub addr: Option<String>,

    /// The cluster CA (PEM) to trust for an https:// master: its `<data dir>/pki/ca.crt`.
    #[arg(long = "ca-cert", env = "CLOUDAI_CA_CERT", value_name = "CLOUDAI_CA_CERT", global = true)]
    pub ca_cert: Option<PathBuf>,

    /// API token (`cai_…`): from `cloudai token create`, or the master's admin.token.
    #[arg(
        long = "token",
        env = "CLOUDAI_TOKEN",
        value_name = "CLOUDAI_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
}

impl std::fmt::Debug for ClientArgs {
    // Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientArgs").field("addr", &self.addr).field("token", &self.token.is_some()).finish()
    }
}

impl ClientArgs {
    /// A client for the address, trusting the CA and sending the token given. With none of
    /// them given, the client profile a secure master wrote says all three (like a kubeconfig).
    pub fn client(&self) -> anyhow::Result<cloudai_api::ApiClient> {
        let given = self.addr.is_some() || self.token.is_some() || self.ca_cert.is_some();
        let profile = if given { None } else { crate::profile::Profile::read()? };
        let (addr, ca_cert, token) = match profile {
            Some(p) => (p.addr, p.ca_cert, p.token),
            None => (
                self.addr.clone().unwrap_or_else(|| DEFAULT_API.to_string()),
                self.ca_cert.clone(),
                self.token.clone(),
            ),
        };
        let mut client = cloudai_api::ApiClient::new(&addr);
        if let Some(path) = &ca_cert {
            let pem = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("CLOUDAI_CA_CERT {}: {e}", path.display()))?;
            client = client.with_ca_cert(&pem)?;
        } else if addr.starts_with("https://") {
            anyhow::bail!(
                "{addr} is https: give the cluster CA with CLOUDAI_CA_CERT (the master's <data dir>/pki/ca.crt)"
            );
        }
        match token.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            Some(token) => Ok(client.with_token(token)?),
            None => Ok(client),
        }
    }
}

/// Resolves a bound listener's address to something a local client can dial
/// (0.0.0.0 → 127.0.0.1).
pub fn dialable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), addr.port())
    } else {
        addr
    }
}

impl MasterArgs {
    /// The master half of `cloudai dev`: both listeners on loopback, without tokens.
    pub fn loopback_only(mut self) -> Result<Self, String> {
        self.http_addr = self.http_addr.this_machine_only("HTTP_PORT")?;
        self.grpc_addr = self.grpc_addr.this_machine_only("GRPC_PORT")?;
        self.insecure = true;
        Ok(self)
    }

    /// `--insecure` on an address other machines reach would hand them an admin's API.
    pub fn check_insecure(&self) -> Result<(), String> {
        if !self.insecure {
            return Ok(());
        }
        for (setting, addr) in [("HTTP_PORT", &self.http_addr), ("GRPC_PORT", &self.grpc_addr)] {
            if !addr.is_loopback() {
                return Err(format!(
                    "--insecure (CLOUDAI_INSECURE) serves the API without tokens, so it is allowed only on \
                     loopback addresses, and {setting} {addr} is reachable from other machines: listen on \
                     127.0.0.1 (e.g. {setting}=127.0.0.1:{}) or drop --insecure",
                    addr.port
                ));
            }
        }
        Ok(())
    }

    /// The master's configuration from these flags.
    pub fn master_config(&self) -> MasterConfig {
        let inactivity_timeout = self.inactivity_timeout;
        MasterConfig {
            telemetry: TelemetryConfig {
                inactivity_timeout,
                channel_capacity: self.telemetry_channel_capacity,
                rate_limit: self.heartbeat_rate_limit.0,
                history: cloudai_master::history_config(self.history_window, self.history_retention),
            },
            tasks: TaskConfig {
                loss_grace: self.task_loss_grace,
                cancel_grace: self.cancel_grace,
                // Workers get at least the inactivity timeout to check in after a restart.
                restart_grace: inactivity_timeout.max(self.task_loss_grace),
                policy: self.placement,
                limits: cloudai_domain::SpecLimits {
                    command_args: self.max_task_args as usize,
                    env_vars: self.max_task_env_vars as usize,
                    env_bytes: self.max_task_env_bytes as usize,
                    string_bytes: self.max_task_string_bytes as usize,
                },
                ..TaskConfig::default()
            },
            alerts: AlertConfig {
                rules: self.alert_rules.clone().unwrap_or_else(cloudai_alerts::RuleSet::builtin),
                webhook_url: self.alert_webhook_url.clone(),
                eval_interval: self.alert_eval_interval,
            },
            database_url: self
                .database_url
                .clone()
                .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("cloudai.db").display())),
            init_store: self.init,
            data_dir: self.data_dir.clone(),
            auth: cloudai_master::auth::AuthConfig {
                required: !self.insecure,
                metrics_public: self.metrics_public,
                max_pending_per_submitter: self.max_pending_per_submitter as usize,
                max_failed_attempts: self.max_failed_token_attempts,
                ..cloudai_master::auth::AuthConfig::default()
            },
            http: cloudai_master::HttpLimits {
                header_timeout: self.http_header_timeout,
                max_connections: self.http_max_connections as usize,
            },
            security: if self.insecure {
                cloudai_master::Security::Insecure
            } else {
                cloudai_master::Security::Tls(cloudai_master::TlsConfig {
                    names: self.tls_san.clone(),
                    worker_cert_lifetime: self.worker_cert_lifetime,
                    api_cert: self.tls_cert.clone().zip(self.tls_key.clone()),
                    ..cloudai_master::TlsConfig::new(&self.data_dir)
                })
            },
            workers: cloudai_master::WorkerLimits {
                forget_after: self.worker_forget_after,
                max_workers: self.max_workers as usize,
                message: cloudai_proto::limits::WireLimits {
                    gpus: self.max_gpus_per_worker as usize,
                    labels: self.max_labels_per_worker as usize,
                    drivers: self.max_drivers_per_worker as usize,
                    running_tasks: self.max_running_tasks_per_worker as usize,
                    string_bytes: self.max_worker_string_bytes as usize,
                    message_bytes: self.grpc_max_message_bytes as usize,
                },
            },
        }
    }

    /// Binds the configured addresses and starts a master.
    pub async fn start_master(&self) -> anyhow::Result<Master> {
        use anyhow::Context;
        self.check_insecure().map_err(anyhow::Error::msg)?;
        let http = self
            .http_addr
            .bind()
            .await
            .with_context(|| format!("cannot bind HTTP_PORT {}", self.http_addr))?;
        let grpc = self
            .grpc_addr
            .bind()
            .await
            .with_context(|| format!("cannot bind GRPC_PORT {}", self.grpc_addr))?;
        Ok(Master::start(self.master_config(), http, grpc).await?)
    }
}

fn parse_join_token(raw: &str) -> Result<cloudai_worker::JoinToken, String> {
    cloudai_worker::JoinToken::parse(raw).map_err(|e| e.to_string())
}

impl WorkerArgs {
    /// The worker's configuration from these flags; `default_drivers` differs between `worker`
    /// and `dev`.
    pub fn worker_config(
        &self,
        master_addr: String,
        default_drivers: &[Driver],
        data_dir: PathBuf,
    ) -> anyhow::Result<WorkerConfig> {
        let join_token = match &self.join_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("CLOUDAI_JOIN_TOKEN_FILE {}: {e}", path.display()))?;
                Some(
                    parse_join_token(&text)
                        .map_err(|e| anyhow::anyhow!("CLOUDAI_JOIN_TOKEN_FILE {}: {e}", path.display()))?,
                )
            }
            None => self.join_token.clone(),
        };
        let data_dir = self.worker_data_dir.clone().unwrap_or(data_dir);
        let worker_id = match &self.worker_id {
            Some(id) => id.clone(),
            None => kept_worker_id(&data_dir)?,
        };
        Ok(WorkerConfig {
            master_addr,
            worker_id,
            heartbeat_interval: self.heartbeat_interval,
            drivers: self.drivers.as_ref().map(|d| d.0.clone()).unwrap_or_else(|| default_drivers.to_vec()),
            cpus: self.cpus,
            memory_mb: self.memory_mb,
            simulated_gpus: self.simulated_gpus,
            labels: self.labels.as_ref().map(|l| l.0.clone()).unwrap_or_default(),
            data_dir,
            keep_workdirs: self.keep_workdirs,
            task_user: self.task_user.clone(),
            compression: self.compression,
            join_token,
            stop_grace: self.stop_grace,
        })
    }
}

/// Without WORKER_ID, the id this data folder's worker had before (kept in `worker-id`), or
/// the host name, then kept: a container's random host name would otherwise change at
/// every re-creation.
fn kept_worker_id(data_dir: &std::path::Path) -> anyhow::Result<cloudai_domain::WorkerId> {
    let path = data_dir.join("worker-id");
    match std::fs::read_to_string(&path) {
        Ok(text) => cloudai_domain::WorkerId::parse(text.trim())
            .map_err(|e| anyhow::anyhow!("{}: not a worker id: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = cloudai_worker::default_worker_id();
            // Best effort: a worker that cannot write here refuses to start a moment later anyway.
            if std::fs::create_dir_all(data_dir).and_then(|()| std::fs::write(&path, id.as_str())).is_err() {
                tracing::debug!(path = %path.display(), "cannot keep the worker id");
            }
            Ok(id)
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(ListenAddr::parse(":8080"), Ok(ListenAddr { host: "0.0.0.0".into(), port: 8080 }));
        assert_eq!(ListenAddr::parse("127.0.0.1:0"), Ok(ListenAddr::loopback(0)));
        assert_eq!(ListenAddr::parse("[::1]:9"), Ok(ListenAddr { host: "::1".into(), port: 9 }));
        assert!(ListenAddr::parse("8080").is_err());
        assert!(ListenAddr::parse(":99999").is_err());
    }

    #[test]
    fn alert_options() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("alerts.json");
        let path = path.to_str().expect("utf-8 path");
        let missing = parse_alert_rules(path).expect_err("no such file");
        assert!(missing.contains(path) && missing.contains("cannot read"), "{missing}");
        std::fs::write(path, "{\"rules\": [").expect("write");
        let malformed = parse_alert_rules(path).expect_err("truncated JSON");
        assert!(malformed.contains(path) && malformed.contains("line 1"), "{malformed}");
        std::fs::write(path, r#"{"rules": [{"name": "hot", "kind": "cpu_usage", "threshold": 101}]}"#)
            .expect("write");
        let invalid = parse_alert_rules(path).expect_err("threshold out of range");
        assert!(invalid.contains("\"hot\"") && invalid.contains("\"threshold\""), "{invalid}");
        std::fs::write(path, r#"{"rules": [{"name": "hot", "kind": "cpu_usage", "threshold": 80}]}"#)
            .expect("write");
        assert_eq!(parse_alert_rules(path).map(|r| r.rules.len()), Ok(1));

        assert!(parse_webhook_url("http://127.0.0.1:9000/hook").is_ok());
        assert!(parse_webhook_url("https://hooks.example/x").is_err());
        assert!(parse_webhook_url("not a url").is_err());
    }

    #[test]
    fn insecure_only_on_loopback() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            master: MasterArgs,
        }
        let parse =
            |args: &[&str]| Cli::try_parse_from([&["cloudai"], args].concat()).expect("parses").master;
        let local = parse(&["--insecure", "--http-port", "127.0.0.1:0", "--grpc-port", "localhost:0"]);
        assert_eq!(local.check_insecure(), Ok(()));
        assert!(!local.master_config().auth.required);
        let open = parse(&["--insecure", "--http-port", ":8080", "--grpc-port", "127.0.0.1:0"]);
        let why = open.check_insecure().expect_err("all interfaces");
        assert!(why.contains("HTTP_PORT 0.0.0.0:8080") && why.contains("loopback"), "{why}");
        let secure = parse(&["--http-port", ":8080"]);
        assert_eq!(secure.check_insecure(), Ok(()));
        assert!(secure.master_config().auth.required, "tokens unless --insecure");
        let dev = secure.loopback_only().expect("dev");
        assert_eq!((dev.insecure, dev.check_insecure()), (true, Ok(())));
    }

    #[test]
    fn labels_drivers() {
        assert_eq!(parse_labels("zone=a, gpu=a100").map(|l| l.0.len()), Ok(2));
        assert!(parse_labels("novalue").is_err());
        assert_eq!(parse_drivers("process,docker,process").map(|d| d.0.len()), Ok(2));
        assert!(parse_drivers("k8s").is_err());
    }
}
