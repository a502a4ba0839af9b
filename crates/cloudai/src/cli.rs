//! Client commands: `cloudai task …`, `cloudai worker ls|status`, `cloudai token …` and
//! `cloudai audit`.

use std::io::Write;

use anyhow::anyhow;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use cloudai_api::{ApiClient, LogStream, Role, SubmitTask};
use cloudai_domain::{Driver, TaskId, TaskStatus, WorkerId};

use crate::render;

#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum Output {
    /// Human-readable tables.
    #[default]
    Table,
    /// JSON: an array for lists, an object for one item.
    Json,
}

#[derive(Args, Debug)]
pub struct OutputArg {
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

#[derive(Subcommand, Debug)]
pub enum TaskCommand {
    /// Submit a task; prints its id.
    Submit(SubmitArgs),
    /// List the newest tasks (--all: every task, oldest first).
    Ls {
        /// Only tasks in this status (pending, queued, running, completed, failed, cancelled).
        #[arg(long)]
        status: Option<TaskStatus>,
        /// How many of the newest to show (at most 1000).
        #[arg(long, default_value_t = render::NEWEST_TASKS, conflicts_with = "all")]
        limit: usize,
        /// Every task, oldest first (fetched page by page).
        #[arg(long)]
        all: bool,
    },
    /// Show one task.
    Get { id: String },
    /// Print a task's output (-f follows until it ends).
    Logs {
        id: String,
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long)]
        tail: Option<usize>,
    },
    /// Cancel a task.
    Cancel { id: String },
}

#[derive(Args, Debug)]
pub struct SubmitArgs {
    /// Docker image (the docker driver's default).
    #[arg(long)]
    pub image: Option<String>,
    /// CPU cores.
    #[arg(long, default_value_t = 1.0)]
    pub cpu: f64,
    /// Memory in MB.
    #[arg(long = "mem", default_value_t = 256)]
    pub memory_mb: u64,
    /// Whole GPUs.
    #[arg(long, default_value_t = 0)]
    pub gpu: u32,
    /// Higher runs first.
    #[arg(long, default_value_t = 0)]
    pub priority: i32,
    /// process or docker (default: docker with --image, else process).
    #[arg(long)]
    pub driver: Option<Driver>,
    /// Environment for the task, KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
    /// A variable of --env whose value no answer shows, e.g. an API key (repeatable).
    #[arg(long = "secret-env", value_name = "NAME")]
    pub secret_env: Vec<String>,
    /// Runs allowed after the task's worker is lost.
    #[arg(long)]
    pub max_retries: Option<u32>,
    /// The command and its arguments (after `--`).
    #[arg(last = true)]
    pub command: Vec<String>,
}

fn parse_env(raw: &str) -> Result<(String, String), String> {
    raw.split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("invalid --env {raw:?}: expected KEY=VALUE"))
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Create an API token; prints it (the only time it is shown).
    Create {
        /// Who or what uses it (recorded on the tasks it submits).
        #[arg(long)]
        name: String,
        /// admin, operator, submitter or reader.
        #[arg(long)]
        role: Role,
    },
    /// List tokens (never their secrets).
    Ls,
    /// Revoke a token by its id (see `token ls`).
    Revoke { id: String },
    /// Print the join token workers need once (CLOUDAI_JOIN_TOKEN); --rotate replaces it.
    Join {
        /// Make a new one: the old one admits no one from now on.
        #[arg(long)]
        rotate: bool,
    },
}

#[derive(Args, Debug)]
pub struct AuditArgs {
    /// How many of the newest entries to show (at most 1000).
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
    /// Only entries older than this seq (a previous page's last).
    #[arg(long)]
    pub before: Option<i64>,
}

#[derive(Subcommand, Debug)]
pub enum WorkerCommand {
    /// List workers.
    Ls,
    /// Show one worker.
    Status { id: String },
    /// Refuse a worker's certificates from now on, and its joining again (admin).
    Revoke { id: String },
}

/// The typed answer, written back as JSON (figures exactly as the master sent them).
fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// An id that cannot exist is simply not found, as the master would say.
fn task_id(raw: &str) -> anyhow::Result<TaskId> {
    TaskId::parse(raw).map_err(|_| anyhow!("task {raw:?} not found"))
}

fn worker_id(raw: &str) -> anyhow::Result<WorkerId> {
    WorkerId::parse(raw).map_err(|_| anyhow!("worker {raw:?} not found"))
}

fn submission(a: SubmitArgs) -> SubmitTask {
    let driver = a.driver.unwrap_or(if a.image.is_some() { Driver::Docker } else { Driver::Process });
    SubmitTask {
        docker_image: a.image,
        command: a.command,
        env: a.env.into_iter().collect(),
        secret_env: a.secret_env,
        cpu_required: a.cpu,
        memory_required: a.memory_mb,
        gpu_required: Some(a.gpu),
        priority: Some(a.priority),
        driver: Some(driver),
        max_retries: a.max_retries,
        on_disconnect: None,
        max_disconnect_secs: None,
    }
}

pub async fn run_task(client: &ApiClient, output: Output, command: TaskCommand) -> anyhow::Result<()> {
    match command {
        TaskCommand::Submit(a) => {
            let task = client.submit_task(&submission(a)).await?;
            match output {
                Output::Json => print_json(&task)?,
                Output::Table => println!("{}", task.task_id),
            }
        }
        TaskCommand::Ls { status, all: true, .. } => {
            let tasks = client.all_tasks(status).await?;
            match output {
                Output::Json => print_json(&tasks)?,
                Output::Table => println!("{}", render::tasks_table(&tasks)),
            }
        }
        TaskCommand::Ls { status, limit, all: false } => {
            let page = client.list_tasks(&render::newest_tasks(status, limit)).await?;
            match output {
                Output::Json => print_json(&page.tasks)?,
                Output::Table => println!("{}", render::newest_tasks_table(page)),
            }
        }
        TaskCommand::Get { id } => {
            let task = client.task(&task_id(&id)?).await?;
            match output {
                Output::Json => print_json(&task)?,
                Output::Table => println!("{}", render::task_detail(&task)),
            }
        }
        TaskCommand::Logs { id, follow: true, tail } => {
            client
                .follow_logs(&task_id(&id)?, tail, |chunk| match chunk.stream {
                    LogStream::Stderr => eprint!("{}", chunk.data),
                    LogStream::Stdout => {
                        print!("{}", chunk.data);
                        let _ = std::io::stdout().flush();
                    }
                })
                .await?;
        }
        TaskCommand::Logs { id, follow: false, tail } => {
            let logs = client.task_logs(&task_id(&id)?, tail).await?;
            match output {
                Output::Json => print_json(&logs)?,
                Output::Table => {
                    for c in &logs.logs {
                        match c.stream {
                            LogStream::Stderr => eprint!("{}", c.data),
                            LogStream::Stdout => print!("{}", c.data),
                        }
                    }
                }
            }
        }
        TaskCommand::Cancel { id } => {
            let task = client.cancel_task(&task_id(&id)?).await?;
            match output {
                Output::Json => print_json(&task)?,
                Output::Table if task.status == TaskStatus::Cancelled => println!("{id} cancelled"),
                Output::Table => println!("{id} is being stopped"),
            }
        }
    }
    Ok(())
}

pub async fn run_worker(client: &ApiClient, output: Output, command: WorkerCommand) -> anyhow::Result<()> {
    match command {
        WorkerCommand::Ls => {
            let workers = client.api_workers().await?;
            match output {
                Output::Json => print_json(&workers)?,
                Output::Table => println!("{}", render::worker_list(&workers)),
            }
        }
        WorkerCommand::Status { id } => {
            let worker = client.worker(&worker_id(&id)?).await?;
            match output {
                Output::Json => print_json(&worker)?,
                Output::Table => println!("{}", render::worker_summary(&worker)),
            }
        }
        WorkerCommand::Revoke { id } => {
            let revoked = client.revoke_worker(&worker_id(&id)?).await?;
            match output {
                Output::Json => print_json(&revoked)?,
                Output::Table if revoked.newly_revoked => {
                    println!("worker {} revoked: its certificates are refused from now on", revoked.worker_id)
                }
                Output::Table => println!("worker {} was revoked already", revoked.worker_id),
            }
        }
    }
    Ok(())
}

pub async fn run_token(client: &ApiClient, output: Output, command: TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Create { name, role } => {
            let created = client.create_token(&name, role).await?;
            match output {
                Output::Json => print_json(&created)?,
                Output::Table => {
                    println!("{}", created.token);
                    eprintln!(
                        "token {} ({}, role {}): shown only now; send it as CLOUDAI_TOKEN or --token",
                        created.info.id, created.info.name, created.info.role
                    );
                }
            }
        }
        TokenCommand::Join { rotate } => {
            let join = if rotate { client.rotate_join_token().await? } else { client.join_token().await? };
            match output {
                Output::Json => print_json(&join)?,
                Output::Table => {
                    println!("{}", join.token);
                    eprintln!(
                        "join a worker with: CLOUDAI_JOIN_TOKEN=<this token> cloudai worker --master https://<master>:{}",
                        join.grpc_port
                    );
                }
            }
        }
        TokenCommand::Ls => {
            let tokens = client.list_tokens().await?;
            match output {
                Output::Json => print_json(&tokens)?,
                Output::Table => println!("{}", render::tokens_table(&tokens)),
            }
        }
        TokenCommand::Revoke { id } => {
            // `cai_<id>_<secret>` pasted whole names the same token.
            let id = id.strip_prefix("cai_").and_then(|rest| rest.split('_').next()).unwrap_or(&id);
            let info = client.revoke_token(id).await?;
            match output {
                Output::Json => print_json(&info)?,
                Output::Table => println!("{} ({}) revoked", info.id, info.name),
            }
        }
    }
    Ok(())
}

pub async fn run_audit(client: &ApiClient, output: Output, args: AuditArgs) -> anyhow::Result<()> {
    let page = client.audit(args.before, Some(args.limit)).await?;
    match output {
        Output::Json => print_json(&page.entries)?,
        Output::Table => {
            println!("{}", render::audit_table(&page.entries));
            if let Some(next) = page.next {
                eprintln!("older entries: cloudai audit --before {next}");
            }
        }
    }
    Ok(())
}
