//! Client commands: `cloudai task …` and `cloudai worker ls|status`.

use std::io::Write;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Value, json};

use cloudai_api::{ApiClient, ClientError};
use cloudai_domain::time::unix_ms;

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
    /// List tasks.
    Ls {
        /// Only tasks in this status (pending, queued, running, completed, failed, cancelled).
        #[arg(long)]
        status: Option<String>,
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
    pub driver: Option<String>,
    /// Environment for the task, KEY=VALUE (repeatable).
    #[arg(long = "env", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
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
pub enum WorkerCommand {
    /// List workers.
    Ls,
    /// Show one worker.
    Status { id: String },
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn s(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn ago_ms(ms: &Value) -> String {
    ms.as_i64().map(|t| format!("{}s ago", ((unix_ms() - t) / 1000).max(0))).unwrap_or_else(|| "-".into())
}

/// Renders rows as aligned columns.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

pub fn tasks_table(tasks: &[Value]) -> String {
    if tasks.is_empty() {
        return "no tasks".into();
    }
    let rows = tasks
        .iter()
        .map(|t| {
            let what = t["docker_image"].as_str().map(str::to_string).unwrap_or_default();
            let cmd: Vec<String> =
                t["command"].as_array().map(|a| a.iter().map(s).collect()).unwrap_or_default();
            vec![
                s(&t["task_id"]),
                s(&t["status"]),
                s(&t["priority"]),
                s(&t["driver"]),
                s(&t["worker_id"]),
                ago_ms(&t["created_at_ms"]),
                format!("{what} {}", cmd.join(" ")).trim().to_string(),
            ]
        })
        .collect();
    table(&["TASK ID", "STATUS", "PRIO", "DRIVER", "WORKER", "CREATED", "COMMAND"], rows)
}

pub fn task_detail(t: &Value) -> String {
    let mut out = Vec::new();
    for key in [
        "task_id",
        "status",
        "pending_reason",
        "worker_id",
        "driver",
        "docker_image",
        "command",
        "cpu_required",
        "memory_required",
        "gpu_required",
        "gpu_indices",
        "priority",
        "attempt",
        "max_retries",
        "exit_code",
        "error",
    ] {
        if !t[key].is_null() {
            out.push(format!("{:<16} {}", format!("{key}:"), s(&t[key])));
        }
    }
    for key in ["created_at_ms", "started_at_ms", "finished_at_ms"] {
        if !t[key].is_null() {
            out.push(format!("{:<16} {}", format!("{}:", key.trim_end_matches("_ms")), ago_ms(&t[key])));
        }
    }
    out.join("\n")
}

pub async fn run_task(client: &ApiClient, output: Output, command: TaskCommand) -> Result<(), ClientError> {
    match command {
        TaskCommand::Submit(a) => {
            let driver =
                a.driver.unwrap_or_else(|| if a.image.is_some() { "docker" } else { "process" }.into());
            let mut body = json!({
                "driver": driver,
                "command": a.command,
                "env": a.env.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
                "cpu_required": a.cpu,
                "memory_required": a.memory_mb,
                "gpu_required": a.gpu,
                "priority": a.priority,
            });
            if let Some(image) = a.image {
                body["docker_image"] = json!(image);
            }
            if let Some(r) = a.max_retries {
                body["max_retries"] = json!(r);
            }
            let task: Value = client.post("/api/tasks", &body).await?;
            match output {
                Output::Json => print_json(&task),
                Output::Table => println!("{}", s(&task["task_id"])),
            }
        }
        TaskCommand::Ls { status } => {
            let path = match status {
                Some(st) => format!("/api/tasks?status={st}"),
                None => "/api/tasks".into(),
            };
            let tasks: Vec<Value> = client.get(&path).await?;
            match output {
                Output::Json => print_json(&Value::Array(tasks)),
                Output::Table => println!("{}", tasks_table(&tasks)),
            }
        }
        TaskCommand::Get { id } => {
            let task: Value = client.get(&format!("/api/tasks/{id}")).await?;
            match output {
                Output::Json => print_json(&task),
                Output::Table => println!("{}", task_detail(&task)),
            }
        }
        TaskCommand::Logs { id, follow: true, .. } => {
            client
                .follow_logs(&id, |stream, data| {
                    if stream == "stderr" {
                        eprint!("{data}");
                    } else {
                        print!("{data}");
                        let _ = std::io::stdout().flush();
                    }
                })
                .await?;
        }
        TaskCommand::Logs { id, follow: false, tail } => {
            let path = match tail {
                Some(n) => format!("/api/tasks/{id}/logs?tail={n}"),
                None => format!("/api/tasks/{id}/logs"),
            };
            let logs: Value = client.get(&path).await?;
            match output {
                Output::Json => print_json(&logs),
                Output::Table => {
                    for c in logs["logs"].as_array().into_iter().flatten() {
                        let data = c["data"].as_str().unwrap_or_default();
                        if c["stream"] == "stderr" { eprint!("{data}") } else { print!("{data}") }
                    }
                }
            }
        }
        TaskCommand::Cancel { id } => {
            let task: Value = client.delete(&format!("/api/tasks/{id}")).await?;
            match output {
                Output::Json => print_json(&task),
                Output::Table if task["status"] == "cancelled" => println!("{id} cancelled"),
                Output::Table => println!("{id} is being stopped"),
            }
        }
    }
    Ok(())
}

pub async fn run_worker(
    client: &ApiClient,
    output: Output,
    command: WorkerCommand,
) -> Result<(), ClientError> {
    match command {
        WorkerCommand::Ls => {
            let workers: Vec<Value> = client.get("/api/workers").await?;
            match output {
                Output::Json => print_json(&Value::Array(workers)),
                Output::Table if workers.is_empty() => println!("no workers registered"),
                Output::Table => {
                    let rows = workers
                        .iter()
                        .map(|w| {
                            let t = &w["telemetry"];
                            vec![
                                s(&w["worker_id"]),
                                if w["is_active"] == true { "yes" } else { "no" }.into(),
                                format!("{:.1}", t["cpu_usage"].as_f64().unwrap_or(0.0)),
                                format!("{:.1}", t["memory_usage"].as_f64().unwrap_or(0.0)),
                                format!("{:.1}", t["gpu_usage"].as_f64().unwrap_or(0.0)),
                                w["gpus"].as_array().map_or(0, Vec::len).to_string(),
                                t["running_tasks"].as_array().map_or(0, Vec::len).to_string(),
                                w["drivers"]
                                    .as_array()
                                    .map(|d| d.iter().map(s).collect::<Vec<_>>().join(","))
                                    .unwrap_or_default(),
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        table(
                            &["WORKER ID", "ACTIVE", "CPU%", "MEM%", "GPU%", "GPUS", "TASKS", "DRIVERS"],
                            rows
                        )
                    );
                }
            }
        }
        WorkerCommand::Status { id } => {
            let w: Value = client.get(&format!("/api/workers/{id}")).await?;
            match output {
                Output::Json => print_json(&w),
                Output::Table => {
                    let t = &w["telemetry"];
                    println!(
                        "worker:   {}\nhost:     {}\nactive:   {}\nversion:  {}\ndrivers:  {}\ncapacity: {} CPUs, {} MB, {} GPUs\ncpu:      {:.1}%\nmemory:   {:.1}%\ngpu:      {:.1}%\ntasks:    {}",
                        s(&w["worker_id"]),
                        s(&w["hostname"]),
                        s(&w["is_active"]),
                        s(&w["version"]),
                        s(&w["drivers"]),
                        s(&w["cpu_cores"]),
                        s(&w["memory_mb"]),
                        w["gpus"].as_array().map_or(0, Vec::len),
                        t["cpu_usage"].as_f64().unwrap_or(0.0),
                        t["memory_usage"].as_f64().unwrap_or(0.0),
                        t["gpu_usage"].as_f64().unwrap_or(0.0),
                        t["running_tasks"].as_array().map_or(0, Vec::len),
                    );
                }
            }
        }
    }
    Ok(())
}
