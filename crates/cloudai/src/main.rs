//! `cloudai`: the one binary (master, worker, dev, clients, benchmarks).

#![forbid(unsafe_code)]

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cloudai::cli::OutputArg;
use cloudai::config::{ClientArgs, MasterAddrArg, MasterArgs, WorkerArgs};
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
enum Command {
    /// Run the master: gRPC for workers, HTTP API, console on a terminal.
    Master {
        #[command(flatten)]
        master: MasterArgs,
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
        Command::Master { master } => run_master(master).await,
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
        Command::Worker { client: None, worker, master_addr, .. } => {
            let data_dir = std::path::PathBuf::from("cloudai-data/worker");
            let config = worker.worker_config(master_addr.master_addr, &[Driver::Docker], data_dir);
            let shutdown = CancellationToken::new();
            stop_on_signal(shutdown.clone());
            worker::run(config, shutdown).await.context("worker failed")
        }
        Command::Dev { master, worker } => run_dev(master, worker).await,
        Command::Bench(bench) => bench.run().await,
    }
}

async fn run_master(args: MasterArgs) -> anyhow::Result<()> {
    let master = args.start_master().await?;
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
    let data_dir = master_args.data_dir.join("worker");
    let config =
        worker_args.worker_config(format!("http://{grpc}"), &[Driver::Process, Driver::Docker], data_dir);
    let shutdown = CancellationToken::new();
    let worker_stop = CancellationToken::new();
    let worker_task = tokio::spawn(worker::run(config, worker_stop.clone()));
    let console = start_console(&master, master_args.no_console, &shutdown);
    stop_on_signal(shutdown.clone());
    tracing::info!(
        "dev cluster up: try `curl http://{}/workers`",
        cloudai::config::dialable(master.http_addr)
    );
    shutdown.cancelled().await;
    stop_console(console).await;
    worker_stop.cancel();
    match worker_task.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "local worker failed"),
        Err(e) => tracing::warn!(error = %e, "local worker task failed"),
    }
    master.shutdown().await;
    Ok(())
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
