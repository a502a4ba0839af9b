//! Queries run on the read connections.

use std::collections::BTreeMap;

use cloudai_domain::{Task, TaskEvent, TaskId, TaskStatus, WorkerId};
use rusqlite::{Connection, params};

use super::rows::{EVENT_COLUMNS, TASK_COLUMNS, col, decode_event, decode_task};
use crate::{StoreError, TaskFilter, TelemetryMinute};

pub(crate) fn get_task(conn: &Connection, task_id: &TaskId) -> Result<Option<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?1"))?;
    let mut rows = stmt.query([task_id.as_str()])?;
    rows.next()?.map(decode_task).transpose()
}

pub(crate) fn list_tasks(conn: &Connection, filter: &TaskFilter) -> Result<Vec<Task>, StoreError> {
    // One (cached) statement per filter shape, so the planner can use the status or worker
    // index (each ends with created_at_ms, task_id). SQLite allows unused parameters below
    // the highest (the limit, ?5), so the binding is the same for every shape.
    let mut clauses = Vec::new();
    if filter.status.is_some() {
        clauses.push("status = ?1");
    }
    if filter.worker_id.is_some() {
        clauses.push("worker_id = ?2");
    }
    let (order, past) = if filter.newest_first { ("DESC", "<") } else { ("ASC", ">") };
    let after = filter.after.as_ref();
    let past = format!("(created_at_ms, task_id) {past} (?3, ?4)");
    if after.is_some() {
        clauses.push(&past);
    }
    let where_ = if clauses.is_empty() { String::new() } else { format!("WHERE {}", clauses.join(" AND ")) };
    let sql = format!(
        "SELECT {TASK_COLUMNS} FROM tasks {where_} ORDER BY created_at_ms {order}, task_id {order} LIMIT ?5"
    );
    let limit = filter.limit.map_or(-1, |l| i64::try_from(l).unwrap_or(i64::MAX));
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params![
        filter.status.map(TaskStatus::as_str),
        filter.worker_id.as_ref().map(|w| w.as_str()),
        after.map(|c| c.created_at_ms),
        after.map(|c| c.task_id.as_str()),
        limit,
    ])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode_task(row)?);
    }
    Ok(out)
}

pub(crate) fn unfinished_tasks(conn: &Connection) -> Result<Vec<Task>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE status IN ('pending', 'queued', 'running') \
         ORDER BY created_at_ms, seq"
    ))?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode_task(row)?);
    }
    Ok(out)
}

pub(crate) fn cancels_requested(conn: &Connection) -> Result<Vec<TaskId>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT task_id FROM tasks WHERE cancel_requested = 1 AND status IN ('pending', 'queued', 'running')",
    )?;
    let mut rows = stmt.query([])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let raw: String = col(row, 0, "tasks", "?")?;
        out.push(
            TaskId::parse(&raw)
                .map_err(|e| StoreError::corrupt("tasks", raw.as_str(), format!("task id: {e}")))?,
        );
    }
    Ok(out)
}

pub(crate) fn task_events(conn: &Connection, task_id: &TaskId) -> Result<Vec<TaskEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {EVENT_COLUMNS} FROM task_events WHERE task_id = ?1 ORDER BY seq"
    ))?;
    let mut rows = stmt.query([task_id.as_str()])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode_event(row, task_id)?);
    }
    Ok(out)
}

pub(crate) fn count_by_status(conn: &Connection) -> Result<BTreeMap<TaskStatus, u64>, StoreError> {
    let mut counts: BTreeMap<TaskStatus, u64> = TaskStatus::ALL.into_iter().map(|s| (s, 0)).collect();
    let mut stmt = conn.prepare_cached("SELECT status, COUNT(*) FROM tasks GROUP BY status")?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let status: String = col(row, 0, "tasks", "?")?;
        let n: i64 = col(row, 1, "tasks", &status)?;
        let parsed: TaskStatus = status
            .parse()
            .map_err(|e: String| StoreError::corrupt("tasks", format!("status {status:?}"), e))?;
        *counts.entry(parsed).or_default() += u64::try_from(n).unwrap_or(0);
    }
    Ok(counts)
}

pub(crate) fn telemetry_minutes(
    conn: &Connection,
    worker_id: &WorkerId,
    since_ms: i64,
) -> Result<Vec<TelemetryMinute>, StoreError> {
    const T: &str = "telemetry_minutes";
    let mut stmt = conn.prepare_cached(
        "SELECT start_ms, data FROM telemetry_minutes WHERE worker_id = ?1 AND start_ms >= ?2 \
         ORDER BY start_ms",
    )?;
    let mut rows = stmt.query(params![worker_id.as_str(), since_ms])?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        let start_ms: i64 = col(row, 0, T, worker_id.as_str())?;
        let data: Vec<u8> = col(row, 1, T, worker_id.as_str())?;
        out.push(TelemetryMinute { worker_id: worker_id.clone(), start_ms, data });
    }
    Ok(out)
}
