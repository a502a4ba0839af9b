//! Task logs: chunks numbered per task, bounded per task by deleting the oldest.

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

/// Per-task bookkeeping (`task_log_state`).
struct State {
    next_seq: u64,
    kept_bytes: u64,
    dropped_bytes: u64,
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
        return Ok(State { next_seq: 1, kept_bytes: 0, dropped_bytes: 0 });
    };
    Ok(State {
        next_seq: to_u64(next, S, task_id, "next_seq")?,
        kept_bytes: to_u64(kept, S, task_id, "kept_bytes")?,
        dropped_bytes: to_u64(dropped, S, task_id, "dropped_bytes")?,
    })
}

/// Appends one task's chunks (in order) and enforces the bound `max` on kept bytes.
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
        for c in chunks {
            let len = c.data.len() as u64;
            // A chunk larger than the whole bound keeps only its end.
            let cut = len.saturating_sub(max);
            st.dropped_bytes += cut;
            let data = &c.data[usize::try_from(cut).unwrap_or(c.data.len())..];
            if data.is_empty() {
                continue;
            }
            insert.execute(params![
                task_id.as_str(),
                to_i64(st.next_seq),
                stream_code(c.stream),
                c.time_ms,
                data
            ])?;
            st.next_seq += 1;
            st.kept_bytes += data.len() as u64;
        }
    }
    if st.kept_bytes > max {
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
        to_i64(st.kept_bytes),
        to_i64(st.dropped_bytes)
    ])?;
    Ok(())
}

/// Deletes the oldest whole chunks until at most `max` bytes are kept.
fn trim(tx: &Transaction<'_>, task_id: &TaskId, st: &mut State, max: u64) -> Result<(), StoreError> {
    let mut excess = st.kept_bytes - max;
    let mut removed = 0u64;
    let mut last_removed: Option<i64> = None;
    {
        let mut oldest =
            tx.prepare_cached("SELECT seq, length(data) FROM task_logs WHERE task_id = ?1 ORDER BY seq")?;
        let mut rows = oldest.query([task_id.as_str()])?;
        while excess > 0 {
            let Some(row) = rows.next()? else { break };
            let seq: i64 = col(row, 0, T, task_id.as_str())?;
            let len = to_u64(col(row, 1, T, task_id.as_str())?, T, task_id, "chunk length")?;
            removed += len;
            excess = excess.saturating_sub(len);
            last_removed = Some(seq);
        }
    }
    if let Some(seq) = last_removed {
        tx.prepare_cached("DELETE FROM task_logs WHERE task_id = ?1 AND seq <= ?2")?
            .execute(params![task_id.as_str(), seq])?;
    }
    st.kept_bytes = st.kept_bytes.saturating_sub(removed);
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
    let mut chunks = Vec::new();
    {
        let order = if q.tail_bytes.is_some() { "DESC" } else { "ASC" };
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT seq, stream, time_ms, data FROM task_logs WHERE task_id = ?1 AND seq > ?2 ORDER BY seq {order}"
        ))?;
        let mut rows = stmt.query(params![task_id.as_str(), to_i64(after)])?;
        let mut total = 0u64;
        match q.tail_bytes {
            Some(tail) => {
                // Newest first until the tail is covered, then cut the oldest chunk to fit.
                while total < tail {
                    let Some(row) = rows.next()? else { break };
                    let c = decode_chunk(row, task_id)?;
                    total += c.data.len() as u64;
                    chunks.push(c);
                }
                chunks.reverse();
                if let Some(first) = chunks.first_mut() {
                    let cut = usize::try_from(total.saturating_sub(tail)).unwrap_or(0);
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
            }
            None => {
                while let Some(row) = rows.next()? {
                    let c = decode_chunk(row, task_id)?;
                    total += c.data.len() as u64;
                    if q.limit_bytes.is_some_and(|limit| total > limit) && !chunks.is_empty() {
                        break;
                    }
                    chunks.push(c);
                }
            }
        }
    }
    let next_seq = match chunks.last() {
        Some(c) => c.seq,
        None => after.max(st.next_seq.saturating_sub(1)),
    };
    Ok(LogPage { chunks, dropped_bytes: st.dropped_bytes, next_seq })
}
