//! A bare tonic server for the same `MasterService`, the baseline the master's heartbeat
//! path is compared with: `SendHeartbeat` decodes the `Heartbeat` and answers empty,
//! registration answers OK, nothing else is kept.
//!
//! `cloudai bench heartbeats --against-bare-server` spawns it as a child process
//! (`cloudai bench bare-server`), runs the same load against it and then against the
//! master, and reports both CPU-per-heartbeat figures from /proc in one JSON line.

use std::net::SocketAddr;
use std::pin::Pin;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_server::{MasterService, MasterServiceServer};
use futures::Stream;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tonic::{Request, Response, Status};

use crate::heartbeats::{self, HeartbeatArgs};
use cloudai_proto::{ACCEPTED_COMPRESSION, MAX_MESSAGE_BYTES};

/// The master's limit, so both servers decode under the same settings.

#[derive(Args, Debug, Clone)]
pub struct BareServerArgs {
    /// Address to listen on; the bound address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: SocketAddr,
}

/// Options of `bench heartbeats` for the side-by-side run.
#[derive(Args, Debug, Clone, Default)]
pub struct AgainstBareArgs {
    /// Also run the same load against a bare tonic server (a child process) and report its
    /// CPU per heartbeat next to the master's, with their ratio.
    #[arg(long)]
    pub against_bare_server: bool,
    /// CPUs the bare server is pinned to (`taskset -c` list). Default: the master's, read from
    /// /proc when `--master-pid` is given, so both servers run on the same cores.
    #[arg(long)]
    pub bare_server_cpus: Option<String>,
}

struct BareMaster;

type CommandStream = Pin<Box<dyn Stream<Item = Result<pb::WorkerCommand, Status>> + Send>>;

#[tonic::async_trait]
impl MasterService for BareMaster {
    async fn register_worker(
        &self,
        _request: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        Ok(Response::new(pb::RegisterWorkerResponse {
            master_id: "bare".into(),
            heartbeat_interval_ms: 0,
            protocol_version: cloudai_proto::PROTOCOL_VERSION,
            accept_compression: ACCEPTED_COMPRESSION.iter().map(|c| c.as_str().to_owned()).collect(),
            loss_after_ms: 0,
        }))
    }

    async fn unregister_worker(
        &self,
        _request: Request<pb::UnregisterWorkerRequest>,
    ) -> Result<Response<pb::UnregisterWorkerResponse>, Status> {
        // The load generator unregisters its workers at the end; answer as the master would.
        Ok(Response::new(pb::UnregisterWorkerResponse {}))
    }

    async fn send_heartbeat(
        &self,
        request: Request<pb::Heartbeat>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        // Decoded by tonic before this call; keep the message alive until here.
        std::hint::black_box(request.into_inner());
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    type StreamCommandsStream = CommandStream;

    async fn stream_commands(
        &self,
        _request: Request<pb::StreamCommandsRequest>,
    ) -> Result<Response<Self::StreamCommandsStream>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    async fn report_task_status(
        &self,
        _request: Request<pb::TaskStatusReport>,
    ) -> Result<Response<pb::TaskStatusAck>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    async fn ship_logs(&self, _request: Request<pb::LogBatch>) -> Result<Response<pb::LogAck>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    async fn join_cluster(&self, _: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        Err(Status::unimplemented("bare server"))
    }

    async fn renew_certificate(
        &self,
        _: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        Err(Status::unimplemented("bare server"))
    }
}

/// `cloudai bench bare-server`: prints the bound address, serves until stdin closes (the
/// parent exited) or a signal comes.
pub async fn serve(args: BareServerArgs) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("{addr}");
    let service = ACCEPTED_COMPRESSION
        .iter()
        .filter_map(|c| c.encoding())
        .fold(MasterServiceServer::new(BareMaster), |server, encoding| server.accept_compressed(encoding))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
    // The master's transport settings (rpc::serve), so only the handler differs.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, stopped())
        .await
        .context("bare server failed")
}

/// Resolves when stdin reaches its end or on Ctrl-C/SIGTERM.
async fn stopped() {
    // A plain thread, not the runtime's blocking pool: a read still pending at exit must not
    // hold the runtime's shutdown.
    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let _ = std::thread::Builder::new().name("bare-stdin".into()).spawn(move || {
        let mut buf = [0u8; 64];
        while matches!(std::io::Read::read(&mut std::io::stdin(), &mut buf), Ok(n) if n > 0) {}
        let _ = closed_tx.send(());
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    let terminated = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = closed_rx => {}
        _ = terminated => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The CPUs a process may run on, as `/proc/PID/status` lists them (`0`, `0-1`, `0,2`).
fn cpus_allowed(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Cpus_allowed_list:"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The bare server as a child process, and its address.
struct BareChild {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    cpus: Option<String>,
}

async fn spawn_bare_server(cpus: Option<String>) -> anyhow::Result<BareChild> {
    let exe = std::env::current_exe().context("cannot find the cloudai binary")?;
    // Pinning goes through taskset rather than sched_setaffinity: the child's runtime threads
    // must all start pinned, which only a pinned exec gives without unsafe code.
    let mut command = match &cpus {
        Some(list) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(list).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    command
        .args(["bench", "bare-server", "--listen", "127.0.0.1:0"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let mut child = command.spawn().with_context(|| match &cpus {
        Some(_) => "cannot start the bare server through taskset (util-linux)".to_string(),
        None => format!("cannot start {}", exe.display()),
    })?;
    let pid = child.id().context("the bare server exited at once")?;
    let stdout = child.stdout.take().context("no stdout from the bare server")?;
    let mut stdout = BufReader::new(stdout);
    let mut line = String::new();
    match tokio::time::timeout(Duration::from_secs(10), stdout.read_line(&mut line)).await {
        Ok(Ok(n)) if n > 0 => {}
        Ok(Ok(_)) => bail!("the bare server exited before printing its address"),
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context("cannot read the bare server's address")),
        Err(_) => bail!("the bare server printed no address within 10 s"),
    }
    let addr: SocketAddr = line
        .trim()
        .parse()
        .with_context(|| format!("bad address from the bare server: {:?}", line.trim()))?;
    Ok(BareChild { child, pid, addr, cpus })
}

/// The figures both runs are compared on.
fn summary(result: &Value) -> Value {
    json!({
        "cpu_us_per_heartbeat": result["master_cpu_us_per_heartbeat"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "heartbeats_per_sec": result["heartbeats_per_sec"],
        "errors": result["errors"],
    })
}

/// The same load against the bare server, then against the master; one JSON value with both.
pub async fn compare(args: HeartbeatArgs) -> anyhow::Result<Value> {
    let Some(master_pid) = args.master_pid else {
        bail!("--against-bare-server needs --master-pid to measure the master's CPU");
    };
    if args.join_token.is_some() || args.join_token_file.is_some() {
        // The bare server speaks plain text: the ratio would mix TLS into the handler's cost.
        bail!("--against-bare-server compares plain-text servers: leave out --join-token");
    }
    let cpus = args.bare.bare_server_cpus.clone().or_else(|| {
        let master = cpus_allowed(master_pid)?;
        // Inheriting our own affinity needs no taskset.
        (Some(&master) != cpus_allowed(std::process::id()).as_ref()).then_some(master)
    });
    let mut bare = spawn_bare_server(cpus).await?;
    eprintln!(
        "bare server pid {} on {}{}",
        bare.pid,
        bare.addr,
        bare.cpus.as_deref().map(|c| format!(" (cpus {c})")).unwrap_or_default()
    );
    let bare_args =
        HeartbeatArgs { master: format!("http://{}", bare.addr), master_pid: Some(bare.pid), ..args.clone() };
    let bare_result = heartbeats::run(bare_args).await.context("run against the bare server")?;
    // Closing its stdin stops it; kill_on_drop covers a child that does not listen.
    drop(bare.child.stdin.take());
    let _ = tokio::time::timeout(Duration::from_secs(5), bare.child.wait()).await;
    drop(bare.child);

    let master_result = heartbeats::run(args).await.context("run against the master")?;
    let ratio = master_result["master_cpu_us_per_heartbeat"]
        .as_f64()
        .zip(bare_result["master_cpu_us_per_heartbeat"].as_f64())
        .filter(|(_, b)| *b > 0.0)
        .map(|(m, b)| m / b);
    Ok(json!({
        "bench": "heartbeats_against_bare_server",
        "workers": master_result["workers"],
        "interval_ms": master_result["interval_ms"],
        "connections": master_result["connections"],
        "master": summary(&master_result),
        "bare_server": summary(&bare_result),
        "master_cpu_us_per_heartbeat": master_result["master_cpu_us_per_heartbeat"],
        "bare_cpu_us_per_heartbeat": bare_result["master_cpu_us_per_heartbeat"],
        "cpu_ratio": ratio,
        "master_run": master_result,
        "bare_run": bare_result,
    }))
}
