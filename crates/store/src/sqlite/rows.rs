//! Encoding of domain values into rows, and checked decoding back: anything read from the
//! file may have been damaged, so every field is validated and a bad one names its row.

use cloudai_domain::{Task, TaskEvent, TaskId, TaskRecord, TaskSpec, TaskStatus, WorkerId};
use rusqlite::Row;
use rusqlite::types::{FromSql, ToSql};

use crate::StoreError;

/// A task encoded on the caller's thread, so the single writer thread only runs SQL.
#[derive(Debug)]
pub(crate) struct TaskRow {
    pub task_id: TaskId,
    pub status: &'static str,
    pub worker_id: Option<String>,
    pub priority: i64,
    pub spec: String,
    pub gpu_indices: String,
    pub attempt: i64,
    pub pending_reason: Option<String>,
    pub exit_code: Option<i64>,
    pub error: Option<String>,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    pub submitted_by: Option<String>,
}

impl TaskRow {
    /// Calls `f` with the row as `?1`..`?15`, in `tasks` column order (`task_id` first), for
    /// INSERT and UPDATE alike.
    pub fn with_params<T>(&self, f: impl FnOnce(&[&dyn ToSql]) -> T) -> T {
        let task_id = self.task_id.as_str();
        f(&[
            &task_id,
            &self.status,
            &self.worker_id,
            &self.priority,
            &self.spec,
            &self.gpu_indices,
            &self.attempt,
            &self.pending_reason,
            &self.exit_code,
            &self.error,
            &self.created_at_ms,
            &self.updated_at_ms,
            &self.started_at_ms,
            &self.finished_at_ms,
            &self.submitted_by,
        ])
    }

    pub fn encode(task: &Task) -> Result<Self, StoreError> {
        let encode = |what| move |source| StoreError::Encode { what, source };
        let t = task.to_record();
        Ok(Self {
            status: t.status.as_str(),
            worker_id: t.worker_id.map(|w| w.as_str().to_string()),
            priority: i64::from(t.spec.priority),
            spec: serde_json::to_string(&t.spec).map_err(encode("task spec"))?,
            gpu_indices: serde_json::to_string(&t.gpu_indices).map_err(encode("gpu indices"))?,
            attempt: i64::from(t.attempt),
            pending_reason: t.pending_reason,
            exit_code: t.exit_code.map(i64::from),
            error: t.error,
            created_at_ms: t.created_at_ms,
            updated_at_ms: t.updated_at_ms,
            started_at_ms: t.started_at_ms,
            finished_at_ms: t.finished_at_ms,
            submitted_by: t.submitted_by,
            task_id: t.task_id,
        })
    }
}

/// A value of the wrong type in a column is damage; anything else is a database error.
pub(crate) fn type_error_is_corrupt(e: rusqlite::Error, table: &'static str, id: &str) -> StoreError {
    use rusqlite::Error as E;
    match e {
        E::InvalidColumnType(..) | E::FromSqlConversionFailure(..) | E::IntegralValueOutOfRange(..) => {
            StoreError::corrupt(table, id, e)
        }
        e => StoreError::Sqlite(e),
    }
}

/// Reads column `idx`, turning a type mismatch into [`StoreError::Corrupt`] for row `id`.
pub(crate) fn col<T: FromSql>(
    row: &Row<'_>,
    idx: usize,
    table: &'static str,
    id: &str,
) -> Result<T, StoreError> {
    row.get(idx).map_err(|e| type_error_is_corrupt(e, table, id))
}

fn int<T: TryFrom<i64>>(v: i64, table: &'static str, id: &str, what: &str) -> Result<T, StoreError> {
    T::try_from(v).map_err(|_| StoreError::corrupt(table, id, format!("{what} {v} out of range")))
}

fn status(s: &str, table: &'static str, id: &str) -> Result<TaskStatus, StoreError> {
    s.parse().map_err(|e: String| StoreError::corrupt(table, id, e))
}

fn worker_id(s: Option<String>, table: &'static str, id: &str) -> Result<Option<WorkerId>, StoreError> {
    s.map(|w| WorkerId::parse(&w).map_err(|e| StoreError::corrupt(table, id, format!("worker id: {e}"))))
        .transpose()
}

/// Columns of `tasks` in the order [`decode_task`] reads them.
pub(crate) const TASK_COLUMNS: &str = "task_id, status, worker_id, spec, gpu_indices, attempt, \
     pending_reason, exit_code, error, created_at_ms, updated_at_ms, started_at_ms, finished_at_ms, \
     submitted_by";

pub(crate) fn decode_task(row: &Row<'_>) -> Result<Task, StoreError> {
    const T: &str = "tasks";
    let raw_id: String = col(row, 0, T, "?")?;
    let id = raw_id.as_str();
    let task_id = TaskId::parse(id).map_err(|e| StoreError::corrupt(T, id, format!("task id: {e}")))?;
    let spec: String = col(row, 3, T, id)?;
    let spec: TaskSpec =
        serde_json::from_str(&spec).map_err(|e| StoreError::corrupt(T, id, format!("spec: {e}")))?;
    let gpus: String = col(row, 4, T, id)?;
    let gpu_indices: Vec<u32> =
        serde_json::from_str(&gpus).map_err(|e| StoreError::corrupt(T, id, format!("gpu_indices: {e}")))?;
    let exit_code: Option<i64> = col(row, 7, T, id)?;
    // The columns as they are; the domain decides what a bad combination of them means.
    let record = TaskRecord {
        status: status(&col::<String>(row, 1, T, id)?, T, id)?,
        worker_id: worker_id(col(row, 2, T, id)?, T, id)?,
        spec,
        gpu_indices,
        attempt: int(col(row, 5, T, id)?, T, id, "attempt")?,
        pending_reason: col(row, 6, T, id)?,
        exit_code: exit_code.map(|c| int(c, T, id, "exit_code")).transpose()?,
        error: col(row, 8, T, id)?,
        created_at_ms: col(row, 9, T, id)?,
        updated_at_ms: col(row, 10, T, id)?,
        started_at_ms: col(row, 11, T, id)?,
        finished_at_ms: col(row, 12, T, id)?,
        submitted_by: col(row, 13, T, id)?,
        task_id,
    };
    Task::try_from(record).map_err(|e| StoreError::corrupt(T, id, e.message))
}

pub(crate) const EVENT_COLUMNS: &str = "seq, time_ms, from_status, to_status, reason, worker_id";

pub(crate) fn decode_event(row: &Row<'_>, task_id: &TaskId) -> Result<TaskEvent, StoreError> {
    const T: &str = "task_events";
    let seq: i64 = col(row, 0, T, "?")?;
    let id = seq.to_string();
    let from: Option<String> = col(row, 2, T, &id)?;
    Ok(TaskEvent {
        task_id: task_id.clone(),
        time_ms: col(row, 1, T, &id)?,
        from: from.map(|s| status(&s, T, &id)).transpose()?,
        to: status(&col::<String>(row, 3, T, &id)?, T, &id)?,
        reason: col(row, 4, T, &id)?,
        worker_id: worker_id(col(row, 5, T, &id)?, T, &id)?,
    })
}
