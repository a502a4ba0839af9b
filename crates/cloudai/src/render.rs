//! Text views of the API's answers, shared by the CLI and the console. Every view reads a
//! typed answer, so a field the master stopped sending fails where it is parsed, never here.

use std::time::Duration;

use cloudai_api::history::Field;
use cloudai_api::{
    Alert, AuditEntry, History, Point, Task, TaskList, TaskListQuery, TokenInfo, WorkerDetail,
};
use cloudai_domain::TaskStatus;
use cloudai_domain::time::{unix_ms, unix_secs};
use serde::Serialize;

/// A value as JSON writes it (`1.0`, `["sh","-c"]`), as the CLI has always shown them.
fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn ago_ms(ms: i64) -> String {
    format!("{}s ago", ((unix_ms() - ms) / 1000).max(0))
}

/// Unix seconds as "Ns ago"; 0 (no heartbeat yet) as "never".
fn ago_secs(unix: i64) -> String {
    if unix == 0 {
        return "never".into();
    }
    format!("{}s ago", (unix_secs() - unix).max(0))
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
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

pub fn tasks_table(tasks: &[Task]) -> String {
    if tasks.is_empty() {
        return "no tasks".into();
    }
    let rows = tasks
        .iter()
        .map(|t| {
            let what = t.spec.docker_image.as_deref().unwrap_or_default();
            vec![
                t.task_id.to_string(),
                t.status.to_string(),
                t.spec.priority.to_string(),
                t.spec.driver.to_string(),
                t.worker_id.as_ref().map_or("-".into(), ToString::to_string),
                ago_ms(t.created_at_ms),
                format!("{what} {}", t.spec.command.join(" ")).trim().to_string(),
            ]
        })
        .collect();
    table(&["TASK ID", "STATUS", "PRIO", "DRIVER", "WORKER", "CREATED", "COMMAND"], rows)
}

/// How many tasks `task ls` and the console's `tasks` show: the newest.
pub const NEWEST_TASKS: usize = 100;

/// The query for the newest `limit` tasks.
pub fn newest_tasks(status: Option<TaskStatus>, limit: usize) -> TaskListQuery {
    TaskListQuery { status, limit: Some(limit), newest_first: true, ..TaskListQuery::default() }
}

/// The newest tasks, oldest of them first (as `tasks_table` lists), and a line saying when
/// there are older ones.
pub fn newest_tasks_table(page: TaskList) -> String {
    let mut tasks = page.tasks;
    tasks.reverse();
    let table = tasks_table(&tasks);
    match page.next {
        Some(_) => format!("{table}\n(the newest {}; older tasks: `cloudai task ls --all`)", tasks.len()),
        None => table,
    }
}

pub fn task_detail(t: &Task) -> String {
    let s = &t.spec;
    let fields: [(&str, Option<String>); 17] = [
        ("task_id", Some(t.task_id.to_string())),
        ("status", Some(t.status.to_string())),
        ("submitted_by", t.submitted_by.clone()),
        ("pending_reason", t.pending_reason.clone()),
        ("worker_id", t.worker_id.as_ref().map(ToString::to_string)),
        ("driver", Some(s.driver.to_string())),
        ("docker_image", s.docker_image.clone()),
        ("command", Some(json(&s.command))),
        ("cpu_required", Some(json(&s.cpu_required))),
        ("memory_required", Some(s.memory_required.to_string())),
        ("gpu_required", Some(s.gpu_required.to_string())),
        ("gpu_indices", Some(json(&t.gpu_indices))),
        ("priority", Some(s.priority.to_string())),
        ("attempt", Some(t.attempt.to_string())),
        ("max_retries", Some(s.max_retries.to_string())),
        ("exit_code", t.exit_code.map(|c| c.to_string())),
        ("error", t.error.clone()),
    ];
    let times =
        [("created", Some(t.created_at_ms)), ("started", t.started_at_ms), ("finished", t.finished_at_ms)];
    let mut out = Vec::new();
    for (key, value) in fields {
        if let Some(value) = value {
            out.push(format!("{:<16} {value}", format!("{key}:")));
        }
    }
    for (key, ms) in times {
        if let Some(ms) = ms {
            out.push(format!("{:<16} {}", format!("{key}:"), ago_ms(ms)));
        }
    }
    out.join("\n")
}

/// `cloudai token ls`.
pub fn tokens_table(tokens: &[TokenInfo]) -> String {
    let rows = tokens
        .iter()
        .map(|t| {
            vec![
                t.id.clone(),
                t.name.clone(),
                t.role.to_string(),
                ago_ms(t.created_at_ms),
                t.revoked_at_ms.map_or_else(|| "-".into(), ago_ms),
            ]
        })
        .collect();
    table(&["ID", "NAME", "ROLE", "CREATED", "REVOKED"], rows)
}

/// `cloudai audit`.
pub fn audit_table(entries: &[AuditEntry]) -> String {
    let rows = entries
        .iter()
        .map(|e| {
            vec![
                ago_ms(e.at_ms),
                e.actor.clone(),
                e.action.clone(),
                if e.target.is_empty() { "-".into() } else { e.target.clone() },
                e.status.to_string(),
                e.detail.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(&["WHEN", "ACTOR", "ACTION", "TARGET", "STATUS", "DETAIL"], rows)
}

/// `cloudai worker ls`.
pub fn worker_list(workers: &[WorkerDetail]) -> String {
    if workers.is_empty() {
        return "no workers registered".into();
    }
    let rows = workers
        .iter()
        .map(|w| {
            let t = &w.telemetry;
            let drivers: Vec<&str> = w.info.drivers.iter().map(|d| d.as_str()).collect();
            vec![
                w.info.worker_id.to_string(),
                yes_no(w.is_active).into(),
                format!("{:.1}", t.cpu_usage),
                format!("{:.1}", t.memory_usage),
                format!("{:.1}", t.gpu_usage),
                w.info.gpus.len().to_string(),
                t.running_tasks.len().to_string(),
                drivers.join(","),
            ]
        })
        .collect();
    table(&["WORKER ID", "ACTIVE", "CPU%", "MEM%", "GPU%", "GPUS", "TASKS", "DRIVERS"], rows)
}

/// `cloudai worker status`.
pub fn worker_summary(w: &WorkerDetail) -> String {
    let (info, t) = (&w.info, &w.telemetry);
    format!(
        "worker:   {}\nhost:     {}\nactive:   {}\nversion:  {}\ndrivers:  {}\ncapacity: {} CPUs, {} MB, {} GPUs\ncpu:      {:.1}%\nmemory:   {:.1}%\ngpu:      {:.1}%\ntasks:    {}",
        info.worker_id,
        info.hostname,
        w.is_active,
        info.version,
        json(&info.drivers),
        json(&info.cpu_cores),
        info.memory_mb,
        info.gpus.len(),
        t.cpu_usage,
        t.memory_usage,
        t.gpu_usage,
        t.running_tasks.len(),
    )
}

/// The console's `workers`: one line per worker with when it was last heard from.
pub fn workers_table(workers: &[WorkerDetail]) -> String {
    if workers.is_empty() {
        return "no workers registered".into();
    }
    let width = workers.iter().map(|w| w.info.worker_id.as_str().len()).max().unwrap_or(2).max(9);
    let mut out = format!(
        "{:<width$}  {:<6}  {:>6}  {:>6}  {:>6}  {:>5}  {}\n",
        "WORKER ID", "ACTIVE", "CPU%", "MEM%", "GPU%", "TASKS", "LAST SEEN"
    );
    for w in workers {
        let t = &w.telemetry;
        out.push_str(&format!(
            "{:<width$}  {:<6}  {:>6.1}  {:>6.1}  {:>6.1}  {:>5}  {}\n",
            w.info.worker_id.as_str(),
            yes_no(t.is_active),
            t.cpu_usage,
            t.memory_usage,
            t.gpu_usage,
            t.running_tasks.len(),
            ago_secs(t.last_update),
        ));
    }
    let active = workers.iter().filter(|w| w.telemetry.is_active).count();
    out.push_str(&format!("{} workers, {} active", workers.len(), active));
    out
}

/// The console's `status <worker>`: registration, figures, GPUs and tasks.
pub fn worker_detail(w: &WorkerDetail) -> String {
    let (info, t) = (&w.info, &w.telemetry);
    let drivers: Vec<&str> = info.drivers.iter().map(|d| d.as_str()).collect();
    let mut out = format!(
        "worker:     {}\nhost:       {}\nactive:     {}\nlast seen:  {}\nversion:    {}\ndrivers:    {}\n\
         capacity:   {} CPUs, {} MB, {} GPUs\ncpu:        {:.1}%\nmemory:     {:.1}% ({} / {} MB)\ngpu:        {:.1}%\n\
         heartbeats: {} received, {} dropped\ntasks:      {}",
        info.worker_id,
        info.hostname,
        yes_no(t.is_active),
        ago_secs(t.last_update),
        info.version,
        drivers.join(","),
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

pub fn alerts_table(alerts: &[Alert]) -> String {
    if alerts.is_empty() {
        return "no alerts".into();
    }
    let mut out = format!(
        "{:<24} {:<16} {:>4} {:<9} {:<8} {:>10}  message",
        "rule", "worker", "gpu", "status", "severity", "since"
    );
    for a in alerts {
        out.push_str(&format!(
            "\n{:<24} {:<16} {:>4} {:<9} {:<8} {:>10}  {}",
            a.rule,
            a.worker_id.as_deref().unwrap_or("-"),
            a.gpu.map_or("-".to_string(), |g| g.to_string()),
            a.status.as_str(),
            a.severity.as_str(),
            ago_secs(a.since_ms / 1000),
            a.message
        ));
    }
    out
}

/// The console's `history`: one row per step of CPU, memory and GPU (averages, and the
/// peaks), newest last. `worker` and `range` only label it.
pub fn history_table(worker: &str, range: Duration, history: &History) -> String {
    let cpu = history.get(Field::Cpu);
    if cpu.is_empty() {
        return format!("no telemetry from {worker} in the last {}", humantime::format_duration(range));
    }
    let at = |field: Field, ts: i64| history.get(field).iter().find(|p| p.timestamp_ms == ts).copied();
    let avg = |p: Option<Point>| p.map_or("-".to_string(), |p| format!("{:.1}", p.avg));
    let max = |p: Option<Point>| p.map_or("-".to_string(), |p| format!("{:.1}", p.max));
    let mut out = format!(
        "{worker}: last {}, one row per {} (averages, and the peak)
{:<10} {:>7} {:>7} {:>7} {:>7} {:>7}",
        humantime::format_duration(range),
        humantime::format_duration(Duration::from_millis(history.step_ms)),
        "ago",
        "cpu %",
        "peak",
        "mem %",
        "gpu %",
        "peak"
    );
    for p in cpu {
        // Against the end of the answered range: the master's clock, not this one's.
        let ago = Duration::from_secs(u64::try_from((history.until_ms - p.timestamp_ms) / 1000).unwrap_or(0));
        out.push_str(&format!(
            "\n{:<10} {:>7.1} {:>7.1} {:>7} {:>7} {:>7}",
            humantime::format_duration(ago).to_string(),
            p.avg,
            p.max,
            avg(at(Field::Memory, p.timestamp_ms)),
            avg(at(Field::Gpu, p.timestamp_ms)),
            max(at(Field::Gpu, p.timestamp_ms)),
        ));
    }
    out
}
