//! Task logs: chunks numbered per task, bounded per task by deleting the oldest.
//!
//! The bound is on what the database holds, whatever the chunking: small neighbours of one
//! stream in a batch are merged into one row before they are stored, and every row is charged
//! [`LOG_ROW_OVERHEAD`] on top of its data. A stored row never changes (a follower may have
//! read it by its seq); only whole rows are deleted, oldest first.

use std::borrow::Cow;

use cloudai_domain::TaskId;
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::rows::{col, type_error_is_corrupt};
use crate::{LogChunk, LogPage, LogQuery, LogStream, StoreError, StoredChunk};

const T: &str = "task_logs";

fn stream_code(s: LogStream) -> i64 {
    match s {
        LogStream::Stdout => 1,
        LogStream::Stderr => 2,
    }
}

fn to_u64(v: i64, table: &'static str, id: &TaskId, what: &str) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::corrupt(table, id.as_str(), format!("{what} {v} is negative")))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// What one stored row costs beyond its data, charged against the per-task bound: about
/// what SQLite spends on a `task_logs` row (its key with the task id, seq, stream, time,
/// the cell and record headers). Measured near 60 bytes a row; the database then holds
/// at most the bound per task, plus partly filled pages.
pub const LOG_ROW_OVERHEAD: u64 = 64;

/// Neighbouring chunks of one stream are merged into rows of up to this many bytes (a bigger
/// chunk is a row of its own, unsplit).
const MERGE_BYTES: usize = 64 * 1024;

/// Per-task bookkeeping (`task_log_state`).
struct State {
    next_seq: u64,
    /// Bytes charged for the kept rows: their data plus [`LOG_ROW_OVERHEAD`] each (stored
    /// as `kept_bytes`; a log written before the overhead was charged is undercharged until
    /// its old rows are trimmed).
    charged_bytes: u64,
    /// Output bytes deleted or cut, without overhead: what a reader is told it missed.
    dropped_bytes: u64,
}

/// A row to insert: one chunk, or neighbours of one stream merged.
struct Row<'a> {
    stream: LogStream,
    time_ms: i64,
    data: Cow<'a, [u8]>,
}

/// Merges neighbours of the same stream (in order) into rows of at most [`MERGE_BYTES`];
/// a row keeps the time of its first chunk. Empty chunks are skipped.
fn merge<'a>(chunks: &[&'a LogChunk]) -> Vec<Row<'a>> {
    let mut rows: Vec<Row<'a>> = Vec::new();
    for c in chunks.iter().filter(|c| !c.data.is_empty()) {
        if let Some(last) = rows.last_mut()
            && last.stream == c.stream
            && last.data.len() + c.data.len() <= MERGE_BYTES
        {
            last.data.to_mut().extend_from_slice(&c.data);
            continue;
        }
        rows.push(Row { stream: c.stream, time_ms: c.time_ms, data: Cow::Borrowed(&c.data) });
    }
    rows
}

fn load_state(conn: &Connection, task_id: &TaskId) -> Result<State, StoreError> {
    const S: &str = "task_log_state";
    let row = conn
        .prepare_cached("SELECT next_seq, kept_bytes, dropped_bytes FROM task_log_state WHERE task_id = ?1")?
        .query_row([task_id.as_str()], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        })
        .optional()
        .map_err(|e| type_error_is_corrupt(e, S, task_id.as_str()))?;
    let Some((next, kept, dropped)) = row else {
        return Ok(State { next_seq: 1, charged_bytes: 0, dropped_bytes: 0 });
    };
    Ok(State {
        next_seq: to_u64(next, S, task_id, "next_seq")?,
        charged_bytes: to_u64(kept, S, task_id, "kept_bytes")?,
        dropped_bytes: to_u64(dropped, S, task_id, "dropped_bytes")?,
    })
}

/// Appends one task's chunks (in order) and enforces the bound `max` on charged bytes.
pub(crate) fn append(
    tx: &Transaction<'_>,
    task_id: &TaskId,
    chunks: &[&LogChunk],
    max: u64,
) -> Result<(), StoreError> {
    let mut st = load_state(tx, task_id)?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO task_logs (task_id, seq, stream, time_ms, data) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        // A row larger than the whole bound keeps only its end.
        let room = max.saturating_sub(LOG_ROW_OVERHEAD).max(1);
        for row in merge(chunks) {
            let len = row.data.len() as u64;
            let cut = len.saturating_sub(room);
            st.dropped_bytes += cut;
            let data = &row.data[usize::try_from(cut).unwrap_or(row.data.len())..];
            insert.execute(params![
                task_id.as_str(),
                to_i64(st.next_seq),
                stream_code(row.stream),
                row.time_ms,
                data
            ])?;
            st.next_seq += 1;
            st.charged_bytes += data.len() as u64 + LOG_ROW_OVERHEAD;
        }
    }
    if st.charged_bytes > max {
        trim(tx, task_id, &mut st, max)?;
    }
    tx.prepare_cached(
        "INSERT INTO task_log_state (task_id, next_seq, kept_bytes, dropped_bytes) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (task_id) DO UPDATE SET next_seq = excluded.next_seq, \
         kept_bytes = excluded.kept_bytes, dropped_bytes = excluded.dropped_bytes",
    )?
    .execute(params![
        task_id.as_str(),
        to_i64(st.next_seq),
        to_i64(st.charged_bytes),
        to_i64(st.dropped_bytes)
    ])?;
    Ok(())
}

/// Deletes the oldest whole rows until at most `max` bytes are charged.
fn trim(tx: &Transaction<'_>, task_id: &TaskId, st: &mut State, max: u64) -> Result<(), StoreError> {
    let mut excess = st.charged_bytes - max;
    let mut removed = 0u64;
    let mut last_removed: Option<i64> = None;
    let mut rows_removed = 0u64;
    {
        let mut oldest =
            tx.prepare_cached("SELECT seq, length(data) FROM task_logs WHERE task_id = ?1 ORDER BY seq")?;
        let mut rows = oldest.query([task_id.as_str()])?;
        while excess > 0 {
            let Some(row) = rows.next()? else { break };
            let seq: i64 = col(row, 0, T, task_id.as_str())?;
            let len = to_u64(col(row, 1, T, task_id.as_str())?, T, task_id, "chunk length")?;
            removed += len;
            excess = excess.saturating_sub(len + LOG_ROW_OVERHEAD);
            last_removed = Some(seq);
            rows_removed += 1;
        }
    }
    if let Some(seq) = last_removed {
        tx.prepare_cached("DELETE FROM task_logs WHERE task_id = ?1 AND seq <= ?2")?
            .execute(params![task_id.as_str(), seq])?;
    }
    st.charged_bytes = st.charged_bytes.saturating_sub(removed + rows_removed * LOG_ROW_OVERHEAD);
    st.dropped_bytes += removed;
    Ok(())
}

fn decode_chunk(row: &rusqlite::Row<'_>, task_id: &TaskId) -> Result<StoredChunk, StoreError> {
    let seq: i64 = col(row, 0, T, task_id.as_str())?;
    let id = format!("{task_id}#{seq}");
    let stream = match col::<i64>(row, 1, T, &id)? {
        1 => LogStream::Stdout,
        2 => LogStream::Stderr,
        other => return Err(StoreError::corrupt(T, id, format!("unknown stream {other}"))),
    };
    Ok(StoredChunk {
        seq: to_u64(seq, T, task_id, "seq")?,
        stream,
        time_ms: col(row, 2, T, &id)?,
        data: col(row, 3, T, &id)?,
    })
}

/// Reads a page of one task's log from a single snapshot.
pub(crate) fn read(conn: &mut Connection, task_id: &TaskId, q: LogQuery) -> Result<LogPage, StoreError> {
    // One read transaction, so the state and the chunks agree even while the writer appends.
    let tx = conn.transaction()?;
    let st = load_state(&tx, task_id)?;
    let after = q.after_seq.unwrap_or(0);
    let tail = q.tail_bytes.is_some() || q.tail_lines.is_some();
    let chunks = {
        let order = if tail { "DESC" } else { "ASC" };
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT seq, stream, time_ms, data FROM task_logs WHERE task_id = ?1 AND seq > ?2 ORDER BY seq {order}"
        ))?;
        let mut rows = stmt.query(params![task_id.as_str(), to_i64(after)])?;
        if tail { read_tail(&mut rows, task_id, q)? } else { read_forward(&mut rows, task_id, q)? }
    };
    let next_seq = match chunks.last() {
        Some(c) => c.seq,
        None => after.max(st.next_seq.saturating_sub(1)),
    };
    Ok(LogPage { chunks, dropped_bytes: st.dropped_bytes, next_seq })
}

/// Oldest first, up to `limit_bytes` (always one chunk when there is one).
fn read_forward(
    rows: &mut rusqlite::Rows<'_>,
    task_id: &TaskId,
    q: LogQuery,
) -> Result<Vec<StoredChunk>, StoreError> {
    let mut chunks = Vec::new();
    let mut total = 0u64;
    while let Some(row) = rows.next()? {
        let c = decode_chunk(row, task_id)?;
        total += c.data.len() as u64;
        if q.limit_bytes.is_some_and(|limit| total > limit) && !chunks.is_empty() {
            break;
        }
        chunks.push(c);
    }
    Ok(chunks)
}

/// Where the kept part of `data` starts when `wanted` more lines are asked for and `found`
/// newlines were already passed (newer chunks); counts the newlines it passes.
fn line_start(data: &[u8], wanted: u64, found: &mut u64) -> Option<usize> {
    for (pos, _) in data.iter().enumerate().rev().filter(|(_, b)| **b == b'\n') {
        *found += 1;
        if *found == wanted.saturating_add(1) {
            return Some(pos + 1);
        }
    }
    None
}

/// Newest first, until `tail_bytes` or `tail_lines` is covered; the oldest chunk is cut to
/// fit, and the result is in log order. `limit_bytes` then keeps its start.
fn read_tail(
    rows: &mut rusqlite::Rows<'_>,
    task_id: &TaskId,
    q: LogQuery,
) -> Result<Vec<StoredChunk>, StoreError> {
    let max_bytes = q.tail_bytes.unwrap_or(u64::MAX);
    let mut chunks = Vec::new();
    let mut total = 0u64;
    // Newlines passed, counting from the end; one that ends the log ends the last line, so
    // it is counted as if it were there for a last line without one.
    let mut newlines = 0u64;
    let mut newest = true;
    while total < max_bytes && q.tail_lines != Some(0) {
        let Some(row) = rows.next()? else { break };
        let mut c = decode_chunk(row, task_id)?;
        if newest && !c.data.ends_with(b"\n") {
            newlines += 1;
        }
        newest = false;
        if let Some(lines) = q.tail_lines
            && let Some(start) = line_start(&c.data, lines, &mut newlines)
        {
            c.data.drain(..start);
            total += c.data.len() as u64;
            if !c.data.is_empty() {
                chunks.push(c);
            }
            break;
        }
        total += c.data.len() as u64;
        chunks.push(c);
    }
    chunks.reverse();
    if let Some(first) = chunks.first_mut() {
        let cut = usize::try_from(total.saturating_sub(max_bytes)).unwrap_or(0);
        first.data.drain(..cut.min(first.data.len()));
    }
    if let Some(limit) = q.limit_bytes {
        let mut kept = 0u64;
        let n = chunks
            .iter()
            .take_while(|c| {
                kept += c.data.len() as u64;
                kept <= limit
            })
            .count();
        chunks.truncate(n.max(1));
    }
    Ok(chunks)
}
