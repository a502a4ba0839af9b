//! `cloudai`: the one binary (master, worker, dev, clients, benchmarks).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cloudai::cli::OutputArg;
use cloudai::config::{ClientArgs, MasterAddrArg, MasterArgs, WorkerArgs, WorkerDataDirArg};
use cloudai::console::ConsoleThread;
use cloudai_domain::Driver;
use cloudai_worker as worker;
use tokio_util::sync::CancellationToken;

/// How long a stopping master waits for its console (an idle one stops within 100 ms).
const CONSOLE_STOP: std::time::Duration = std::time::Duration::from_secs(2);

/// glibc's malloc was a third of the master's CPU on the heartbeat path (many small,
/// short-lived allocations across threads); mimalloc handles that pattern far better.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "cloudai", version, about = "CloudAI: a cluster manager for AI compute")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[expect(clippy::large_enum_variant, reason = "parsed once at start; boxing buys nothing")]
enum Command {
    /// Run the master: gRPC for workers, HTTP API, console on a terminal.
    Master {
        #[command(flatten)]
        master: MasterArgs,
        /// Check the master on this data folder and ports instead of starting one: exit 0 when
        /// it answers /health, else print why and exit 1 (for health checks).
        #[arg(long)]
        check: bool,
    },
    /// Run a worker (registers with the master, heartbeats, runs tasks); or `worker ls|status`.
    #[command(args_conflicts_with_subcommands = true)]
    Worker {
        #[command(subcommand)]
        client: Option<cloudai::cli::WorkerCommand>,
        #[command(flatten)]
        worker: WorkerArgs,
        #[command(flatten)]
        master_addr: MasterAddrArg,
        #[command(flatten)]
        data: WorkerDataDirArg,
        #[command(flatten)]
        api: ClientArgs,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Submit, list, inspect, follow and cancel tasks.
    Task {
        #[command(subcommand)]
        command: cloudai::cli::TaskCommand,
        #[command(flatten)]
        api: ClientArgs,
        #[command(flatten)]
        output: OutputArg,
    },
    /// API tokens with roles: create, list, revoke (admin).
    Token {
        #[command(subcommand)]
        command: cloudai::cli::TokenCommand,
        #[command(flatten)]
        api: ClientArgs,
        #[command(flatten)]
        output: OutputArg,
    },
    /// The audit trail of changes made through the API, newest first (admin).
    Audit {
        #[command(flatten)]
        args: cloudai::cli::AuditArgs,
        #[command(flatten)]
        api: ClientArgs,
        #[command(flatten)]
        output: OutputArg,
    },
    /// Master and one local worker in one process: the one-command demo.
    Dev {
        #[command(flatten)]
        master: MasterArgs,
        #[command(flatten)]
        worker: WorkerArgs,
    },
    /// Load generators against a running master; the last line printed is JSON.
    #[command(subcommand)]
    Bench(cloudai_bench::BenchCommand),
}

fn main() -> ExitCode {
    // `.env` never overrides the environment; flags override both (clap).
    let dotenv = dotenvy::dotenv();
    let cli = Cli::parse();
    init_tracing();
    if let Err(e) = &dotenv
        && !e.not_found()
    {
        tracing::warn!(error = %e, "ignoring unreadable .env");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Master { master, check: true } => check_master(&master).await,
        Command::Master { master, check: false } => run_master(master).await,
        Command::Worker { client: Some(command), api, output, .. } => {
            cloudai::cli::run_worker(&api.client()?, output.output, command).await
        }
        Command::Task { command, api, output } => {
            cloudai::cli::run_task(&api.client()?, output.output, command).await
        }
        Command::Token { command, api, output } => {
            cloudai::cli::run_token(&api.client()?, output.output, command).await
        }
        Command::Audit { args, api, output } => {
            cloudai::cli::run_audit(&api.client()?, output.output, args).await
        }
        Command::Worker { client: None, worker, data, .. } if data.check => {
            let dir = worker.worker_data_dir.clone().unwrap_or_else(|| data.data_dir.join("worker"));
            match worker::status::check(&dir) {
                Ok(status) => {
                    println!("ok: worker (pid {}) is in contact with its master", status.pid);
                    Ok(())
                }
                Err(why) => Err(anyhow::anyhow!(why)),
            }
        }
        Command::Worker { client: None, worker, master_addr, data, .. } => {
            let config = worker.worker_config(
                master_addr.master_addr,
                &[Driver::Docker],
                data.data_dir.join("worker"),
            )?;
            let shutdown = CancellationToken::new();
            stop_on_signal(shutdown.clone());
            worker::run(config, shutdown).await.context("worker failed")
        }
        Command::Dev { master, worker } => run_dev(master, worker).await,
        Command::Bench(bench) => bench.run().await,
    }
}

/// `cloudai master --check`: is the master of this data folder answering on its HTTP port?
async fn check_master(args: &MasterArgs) -> anyhow::Result<()> {
    let port = args.http_addr.port;
    let client = if args.insecure {
        cloudai_api::ApiClient::new(&format!("http://127.0.0.1:{port}"))
    } else {
        let ca = std::fs::read(args.data_dir.join("pki/ca.crt")).with_context(|| {
            format!("no cluster CA in {}: has the master started there?", args.data_dir.display())
        })?;
        cloudai_api::ApiClient::new(&format!("https://localhost:{port}")).with_ca_cert(&ca)?
    };
    let health = tokio::time::timeout(std::time::Duration::from_secs(5), client.health())
        .await
        .context("the master did not answer /health within 5 s")?
        .context("the master does not answer /health")?;
    println!("ok: master {health:?}");
    Ok(())
}

async fn run_master(args: MasterArgs) -> anyhow::Result<()> {
    let master = args.start_master().await?;
    if master.trust.is_secure() {
        announce_cluster(&args, &master)?;
    }
    let shutdown = CancellationToken::new();
    let console = start_console(&master, args.no_console, &shutdown);
    stop_on_signal(shutdown.clone());
    shutdown.cancelled().await;
    stop_console(console).await;
    master.shutdown().await;
    Ok(())
}

async fn run_dev(master_args: MasterArgs, worker_args: WorkerArgs) -> anyhow::Result<()> {
    let master_args = master_args.loopback_only().map_err(anyhow::Error::msg)?;
    let master = master_args.start_master().await?;
    let grpc = cloudai::config::dialable(master.grpc_addr);
    let mut data_dir = master_args.data_dir.join("worker");
    if worker_args.worker_data_dir.is_none() && worker_args.task_user.is_none() {
        data_dir = reachable_task_folders(data_dir)?;
    }
    let config =
        worker_args.worker_config(format!("http://{grpc}"), &[Driver::Process, Driver::Docker], data_dir)?;
    let shutdown = CancellationToken::new();
    let worker_stop = CancellationToken::new();
    let mut worker_task = tokio::spawn(worker::run(config, worker_stop.clone()));
    let console = start_console(&master, master_args.no_console, &shutdown);
    stop_on_signal(shutdown.clone());
    tracing::info!(
        "dev cluster up: try `curl http://{}/workers`",
        cloudai::config::dialable(master.http_addr)
    );
    // A worker that ends on its own (it cannot start: its task user, its drivers) ends dev:
    // a cluster without it would run nothing, and say so only at Ctrl-C.
    let ended_early = tokio::select! {
        _ = shutdown.cancelled() => None,
        ended = &mut worker_task => Some(ended),
    };
    stop_console(console).await;
    worker_stop.cancel();
    let early = ended_early.is_some();
    let ended = match ended_early {
        Some(ended) => ended,
        None => worker_task.await,
    };
    master.shutdown().await;
    match ended {
        Ok(Ok(())) => {}
        Ok(Err(e)) if early => return Err(anyhow::Error::new(e).context("local worker failed")),
        Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "local worker failed"),
        Err(e) => tracing::warn!(error = %e, "local worker task failed"),
    }
    Ok(())
}

/// `cloudai dev` as root runs its tasks as `nobody`, who cannot pass a data folder under a
/// closed one (`/root` is 0700). Only task folders live in the worker's data folder, so
/// there it uses a root-owned folder in the temp dir instead, and says so.
fn reachable_task_folders(wanted: std::path::PathBuf) -> anyhow::Result<std::path::PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(wanted);
    }
    let absolute = std::path::absolute(&wanted)?;
    // Others' execute bit: what nobody, neither owner nor group, needs on each folder.
    let closed =
        absolute.ancestors().skip(1).find(|dir| std::fs::metadata(dir).is_ok_and(|m| m.mode() & 0o001 == 0));
    let Some(closed) = closed else { return Ok(wanted) };
    let fallback = std::env::temp_dir().join("cloudai-dev-tasks");
    match std::fs::DirBuilder::new().mode(0o711).create(&fallback) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => anyhow::bail!("cannot create {}: {e}", fallback.display()),
    }
    // Someone else's folder of that name is not ours to put tasks in.
    let meta = std::fs::symlink_metadata(&fallback)?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 {
        anyhow::bail!(
            "{} is not a folder only root can write; remove it, or set WORKER_DATA_DIR",
            fallback.display()
        );
    }
    tracing::info!(
        closed = %closed.display(),
        tasks = %fallback.display(),
        "tasks run as nobody, who cannot enter the data folder: their folders go to the temp dir"
    );
    Ok(fallback)
}

/// Prints the command that joins a worker (as `docker swarm init` does) and writes the
/// client profile, so `cloudai task …` on this machine works with no setting.
fn announce_cluster(args: &MasterArgs, master: &cloudai_master::Master) -> anyhow::Result<()> {
    let Some(token) = master.trust.join_token() else { return Ok(()) };
    let host = args.tls_san.first().cloned().or_else(hostname).unwrap_or_else(|| "localhost".into());
    println!(
        "To join a worker to this cluster, run on it:\n\n    CLOUDAI_JOIN_TOKEN={token} cloudai worker --master https://{host}:{}\n",
        master.grpc_addr.port()
    );
    let admin_token =
        std::fs::read_to_string(args.data_dir.join("admin.token")).ok().map(|t| t.trim().to_string());
    let ca_cert = std::path::absolute(args.data_dir.join("pki/ca.crt"))?;
    let profile = cloudai::profile::Profile {
        addr: format!("https://localhost:{}", master.http_addr.port()),
        ca_cert: Some(ca_cert),
        token: admin_token,
    };
    match profile.write() {
        Ok(path) => println!("Client profile (address, CA, admin token) written to {}", path.display()),
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "cannot write the client profile"),
    }
    Ok(())
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

fn start_console(
    master: &cloudai_master::Master,
    no_console: bool,
    shutdown: &CancellationToken,
) -> Option<ConsoleThread> {
    if !cloudai::console::wanted(no_console) {
        return None;
    }
    cloudai::console::spawn(cloudai::console::Console::for_master(master), shutdown.clone())
}

/// The console stops before the master, so its last command's answer is not cut off.
async fn stop_console(console: Option<ConsoleThread>) {
    if let Some(console) = console {
        console.join(CONSOLE_STOP).await;
    }
}

/// Listens for SIGINT and SIGTERM from now on (not from the first poll). Call after starting
/// the console (see `console::spawn`). First: graceful shutdown; second: exit at once.
fn stop_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind| {
        signal(kind).map_err(|e| tracing::warn!(error = %e, "cannot listen for {kind:?}")).ok()
    };
    let (mut interrupt, mut terminate) = (listen(SignalKind::interrupt()), listen(SignalKind::terminate()));
    tokio::spawn(async move {
        let mut next = async || {
            let either = async |s: &mut Option<tokio::signal::unix::Signal>| match s {
                Some(s) => s.recv().await,
                None => std::future::pending().await,
            };
            tokio::select! {
                _ = either(&mut interrupt) => {}
                _ = either(&mut terminate) => {}
            }
        };
        loop {
            next().await;
            // Also a second stop when the first came from the console.
            if shutdown.is_cancelled() {
                eprintln!("second signal: exiting now");
                std::process::exit(130);
            }
            tracing::info!("signal received, shutting down (again to exit at once)");
            shutdown.cancel();
        }
    });
}
