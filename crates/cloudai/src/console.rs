//! The master's interactive console (`master> `), with line editing and history,
//! on its own thread so it never holds up the async runtime.

use std::io::IsTerminal;

use rustyline::DefaultEditor;
use rustyline::error::ReadlineError;
use tokio_util::sync::CancellationToken;

use cloudai_domain::{TaskId, TaskStatus};
use cloudai_store::{LogQuery, TaskFilter};

use cloudai_domain::WorkerId;
use cloudai_domain::WorkerInfo;
use cloudai_domain::time::unix_secs;
use cloudai_master::tasks::TaskService;
use cloudai_master::telemetry::{TelemetryManager, WorkerTelemetry};

const HELP: &str = "\
commands:
  help              this list
  workers           every worker: id, active, CPU, memory, GPU, tasks, last seen
  status <worker>   one worker in detail
  history <worker> [range]
                    CPU, memory and GPU over the last range (default 15m)
  alerts            firing alerts, then recently resolved ones
  tasks [status]    tasks, optionally only one status
  task <id>         one task in detail
  logs <id>         a task's output so far
  cancel <id>       cancel a task
  quit              stop the master";

/// What the console reads and drives.
#[derive(Clone)]
pub struct Console {
    pub telemetry: TelemetryManager,
    pub tasks: TaskService,
    pub alerts: cloudai_master::alerting::AlertService,
    /// The master's runtime: task calls are async and run there.
    pub runtime: tokio::runtime::Handle,
}

impl Console {
    /// A console on a running master; call from within the master's runtime.
    pub fn for_master(master: &cloudai_master::Master) -> Self {
        Self {
            telemetry: master.telemetry.clone(),
            tasks: master.tasks.clone(),
            alerts: master.alerts.clone(),
            runtime: tokio::runtime::Handle::current(),
        }
    }
}

/// Whether to run the console: only on a terminal, and not when turned off.
pub fn wanted(no_console: bool) -> bool {
    !no_console && std::io::stdin().is_terminal()
}

/// Starts the console thread; `quit` (or end of input) cancels `shutdown`.
pub fn spawn(console: Console, shutdown: CancellationToken) {
    let spawned = std::thread::Builder::new().name("console".into()).spawn(move || {
        if let Err(e) = run(&console, &shutdown) {
            tracing::warn!(error = %e, "console stopped");
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the console");
    }
}

fn run(console: &Console, shutdown: &CancellationToken) -> rustyline::Result<()> {
    let mut editor = DefaultEditor::new()?;
    println!("CloudAI master console. Type 'help' for commands.");
    loop {
        if shutdown.is_cancelled() {
            return Ok(());
        }
        match editor.readline("master> ") {
            Ok(line) => {
                let line = line.trim();
                if line.is_empty() {
                    continue;
                }
                let _ = editor.add_history_entry(line);
                match execute(console, line) {
                    Outcome::Print(text) => println!("{text}"),
                    Outcome::Quit => {
                        shutdown.cancel();
                        return Ok(());
                    }
                }
            }
            Err(ReadlineError::Interrupted) => continue,
            Err(ReadlineError::Eof) => {
                shutdown.cancel();
                return Ok(());
            }
            Err(e) => return Err(e),
        }
    }
}

#[derive(Debug, PartialEq)]
pub enum Outcome {
    Print(String),
    Quit,
}

/// Runs one console command and returns what to print.
pub fn execute(console: &Console, line: &str) -> Outcome {
    let telemetry = &console.telemetry;
    let mut words = line.split_whitespace();
    let command = words.next().unwrap_or_default();
    let arg = words.next();
    match (command, arg) {
        ("help", _) => Outcome::Print(HELP.into()),
        ("workers", _) => Outcome::Print(workers_table(&telemetry.list_workers())),
        ("status", Some(id)) => Outcome::Print(status(telemetry, id)),
        ("status", None) => Outcome::Print("usage: status <worker>".into()),
        ("history", Some(id)) => Outcome::Print(history(telemetry, id, words.next())),
        ("history", None) => Outcome::Print("usage: history <worker> [range, e.g. 15m or 2h]".into()),
        ("alerts", _) => {
            Outcome::Print(alerts_table(&console.alerts.alerts(cloudai_domain::time::unix_ms())))
        }
        ("tasks", status) => Outcome::Print(console.runtime.block_on(tasks(&console.tasks, status))),
        ("task", Some(id)) => Outcome::Print(console.runtime.block_on(task(&console.tasks, id))),
        ("logs", Some(id)) => Outcome::Print(console.runtime.block_on(logs(&console.tasks, id))),
        ("cancel", Some(id)) => Outcome::Print(console.runtime.block_on(cancel(&console.tasks, id))),
        ("task" | "logs" | "cancel", None) => Outcome::Print(format!("usage: {command} <task id>")),
        ("quit" | "exit", _) => Outcome::Quit,
        (other, _) => Outcome::Print(format!("unknown command {other:?}; type 'help'")),
    }
}

fn ago(unix: i64) -> String {
    if unix == 0 {
        return "never".into();
    }
    format!("{}s ago", (unix_secs() - unix).max(0))
}

pub fn workers_table(workers: &[(std::sync::Arc<WorkerInfo>, WorkerTelemetry)]) -> String {
    if workers.is_empty() {
        return "no workers registered".into();
    }
    let width = workers.iter().map(|(i, _)| i.worker_id.as_str().len()).max().unwrap_or(2).max(9);
    let mut out = format!(
        "{:<width$}  {:<6}  {:>6}  {:>6}  {:>6}  {:>5}  {}\n",
        "WORKER ID", "ACTIVE", "CPU%", "MEM%", "GPU%", "TASKS", "LAST SEEN"
    );
    for (info, t) in workers {
        out.push_str(&format!(
            "{:<width$}  {:<6}  {:>6.1}  {:>6.1}  {:>6.1}  {:>5}  {}\n",
            info.worker_id.as_str(),
            if t.is_active { "yes" } else { "no" },
            t.cpu_usage,
            t.memory_usage,
            t.gpu_usage,
            t.running_tasks.len(),
            ago(t.last_update),
        ));
    }
    let active = workers.iter().filter(|(_, t)| t.is_active).count();
    out.push_str(&format!("{} workers, {} active", workers.len(), active));
    out
}

fn status(telemetry: &TelemetryManager, raw: &str) -> String {
    let Ok(id) = WorkerId::parse(raw) else {
        return format!("worker {raw:?} not found");
    };
    let (Some(info), Some(t)) = (telemetry.get_worker_info(&id), telemetry.get_worker_telemetry(&id)) else {
        return format!("worker {raw:?} not found");
    };
    let mut out = format!(
        "worker:     {}\nhost:       {}\nactive:     {}\nlast seen:  {}\nversion:    {}\ndrivers:    {}\n\
         capacity:   {} CPUs, {} MB, {} GPUs\ncpu:        {:.1}%\nmemory:     {:.1}% ({} / {} MB)\ngpu:        {:.1}%\n\
         heartbeats: {} received, {} dropped\ntasks:      {}",
        info.worker_id,
        info.hostname,
        if t.is_active { "yes" } else { "no" },
        ago(t.last_update),
        info.version,
        info.drivers.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(","),
        info.cpu_cores,
        info.memory_mb,
        info.gpus.len(),
        t.cpu_usage,
        t.memory_usage,
        t.memory_used_mb,
        t.memory_total_mb,
        t.gpu_usage,
        t.heartbeats_received,
        t.heartbeats_dropped,
        t.running_tasks.len(),
    );
    for g in &t.gpus {
        out.push_str(&format!(
            "\n  gpu {}: {} {:.0}% util, {} / {} MB{}",
            g.index,
            g.model,
            g.utilization_percent,
            g.memory_used_mb,
            g.memory_total_mb,
            g.temperature_c.map(|c| format!(", {c:.0}°C")).unwrap_or_default()
        ));
    }
    for task in &t.running_tasks {
        out.push_str(&format!("\n  task {} ({})", task.task_id, task.status));
    }
    out
}

fn alerts_table(alerts: &[cloudai_alerts::Alert]) -> String {
    if alerts.is_empty() {
        return "no alerts".into();
    }
    let mut out = format!(
        "{:<24} {:<16} {:>4} {:<9} {:<8} {:>10}  message",
        "rule", "worker", "gpu", "status", "severity", "since"
    );
    for a in alerts {
        let status = if a.resolved_at_ms.is_some() { "resolved" } else { "firing" };
        out.push_str(&format!(
            "\n{:<24} {:<16} {:>4} {:<9} {:<8} {:>10}  {}",
            a.key.rule,
            a.key.worker_id.as_deref().unwrap_or("-"),
            a.key.gpu.map_or("-".to_string(), |g| g.to_string()),
            status,
            format!("{:?}", a.severity).to_lowercase(),
            ago(a.since_ms / 1000),
            a.message
        ));
    }
    out
}

/// About this many rows, whatever the range.
const HISTORY_ROWS: u64 = 15;

fn history(telemetry: &TelemetryManager, raw: &str, range: Option<&str>) -> String {
    use cloudai_history::Field;
    let range = match range.map(crate::config::parse_duration).transpose() {
        Ok(range) => range.unwrap_or(std::time::Duration::from_secs(15 * 60)),
        Err(e) => return e,
    };
    let range_ms = u64::try_from(range.as_millis()).unwrap_or(u64::MAX).max(HISTORY_ROWS);
    let step_ms = (range_ms / HISTORY_ROWS).max(1000);
    let now = cloudai_domain::time::unix_ms();
    let since = now.saturating_sub(i64::try_from(range_ms).unwrap_or(i64::MAX));
    let Some(series) = WorkerId::parse(raw).ok().and_then(|id| telemetry.history(&id, since, now, step_ms))
    else {
        return format!("worker {raw:?} not found");
    };
    let cpu = series.get(Field::Cpu);
    if cpu.is_empty() {
        return format!("no telemetry from {raw} in the last {}", humantime::format_duration(range));
    }
    let at = |field: Field, ts: i64| series.get(field).iter().find(|p| p.timestamp_ms == ts).copied();
    let fmt = |p: Option<cloudai_history::Point>| p.map_or("-".to_string(), |p| format!("{:.1}", p.avg));
    let fmt_max = |p: Option<cloudai_history::Point>| p.map_or("-".to_string(), |p| format!("{:.1}", p.max));
    let mut out = format!(
        "{raw}: last {}, one row per {} (averages, and the peak)
{:<10} {:>7} {:>7} {:>7} {:>7} {:>7}",
        humantime::format_duration(range),
        humantime::format_duration(std::time::Duration::from_millis(step_ms)),
        "ago",
        "cpu %",
        "peak",
        "mem %",
        "gpu %",
        "peak"
    );
    for p in cpu {
        let ago = std::time::Duration::from_secs(u64::try_from((now - p.timestamp_ms) / 1000).unwrap_or(0));
        out.push_str(&format!(
            "\n{:<10} {:>7.1} {:>7.1} {:>7} {:>7} {:>7}",
            humantime::format_duration(ago).to_string(),
            p.avg,
            p.max,
            fmt(at(Field::Memory, p.timestamp_ms)),
            fmt(at(Field::Gpu, p.timestamp_ms)),
            fmt_max(at(Field::Gpu, p.timestamp_ms)),
        ));
    }
    out
}

fn to_json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

async fn tasks(service: &TaskService, status: Option<&str>) -> String {
    let status = match status.map(str::parse::<TaskStatus>).transpose() {
        Ok(s) => s,
        Err(e) => return e,
    };
    match service.list(&TaskFilter { status, ..TaskFilter::default() }).await {
        Ok(list) => crate::cli::tasks_table(&list.iter().map(to_json).collect::<Vec<_>>()),
        Err(e) => format!("error: {e}"),
    }
}

async fn task(service: &TaskService, raw: &str) -> String {
    let Ok(id) = TaskId::parse(raw) else { return format!("task {raw:?} not found") };
    match service.get(&id).await {
        Ok(t) => crate::cli::task_detail(&to_json(&t)),
        Err(e) => format!("error: {e}"),
    }
}

async fn logs(service: &TaskService, raw: &str) -> String {
    let Ok(id) = TaskId::parse(raw) else { return format!("task {raw:?} not found") };
    if let Err(e) = service.get(&id).await {
        return format!("error: {e}");
    }
    match service.read_logs(&id, LogQuery { tail_bytes: Some(64 * 1024), ..LogQuery::default() }).await {
        Ok(page) => {
            let text: String = page.chunks.iter().map(|c| String::from_utf8_lossy(&c.data)).collect();
            if text.is_empty() { "(no output)".into() } else { text.trim_end().to_string() }
        }
        Err(e) => format!("error: {e}"),
    }
}

async fn cancel(service: &TaskService, raw: &str) -> String {
    let Ok(id) = TaskId::parse(raw) else { return format!("task {raw:?} not found") };
    match service.cancel(id.clone()).await {
        Ok(t) if t.status == TaskStatus::Cancelled => format!("{id} cancelled"),
        Ok(_) => format!("{id} is being stopped"),
        Err(cloudai_master::tasks::TaskError::NotFound(_)) => match service.get(&id).await {
            Ok(t) => format!("{id} has already ended ({})", t.status),
            Err(e) => format!("error: {e}"),
        },
        Err(e) => format!("error: {e}"),
    }
}
