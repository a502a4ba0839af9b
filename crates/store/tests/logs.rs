//! Task logs: sequence numbers, follow and tail reads, and the per-task bound.

mod common;

use cloudai_domain::TaskId;
use cloudai_store::{LOG_ROW_OVERHEAD, LogChunk, LogQuery, LogStream, Store, StoreConfig};
use common::{open, open_with};

fn chunk(task_id: &TaskId, stream: LogStream, data: &str, time_ms: i64) -> LogChunk {
    LogChunk { task_id: task_id.clone(), stream, data: data.as_bytes().to_vec(), time_ms }
}

fn text(page: &cloudai_store::LogPage) -> String {
    page.chunks.iter().map(|c| String::from_utf8_lossy(&c.data).into_owned()).collect()
}

#[tokio::test]
async fn append_then_follow_and_tail() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let (a, b) = (TaskId::generate(), TaskId::generate());
    let empty = store.read_logs(&a, LogQuery::default()).await.expect("read");
    assert!(empty.chunks.is_empty());
    assert_eq!((empty.next_seq, empty.dropped_bytes), (0, 0));

    store
        .append_logs(vec![
            chunk(&a, LogStream::Stdout, "hello ", 1),
            chunk(&b, LogStream::Stdout, "other task", 1),
            chunk(&a, LogStream::Stderr, "", 2), // empty: skipped, takes no seq
            chunk(&a, LogStream::Stderr, "warn ", 2),
        ])
        .await
        .expect("append");
    let page = store.read_logs(&a, LogQuery::default()).await.expect("read");
    assert_eq!(page.chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(page.chunks[1].stream, LogStream::Stderr);
    assert_eq!(page.chunks[1].time_ms, 2);
    assert_eq!(text(&page), "hello warn ");
    assert_eq!(page.next_seq, 2);

    // A follower asks for what came after its last page.
    let cursor = page.next_seq;
    let nothing = store.read_logs(&a, LogQuery { after_seq: Some(cursor), ..Default::default() }).await;
    let nothing = nothing.expect("read");
    assert!(nothing.chunks.is_empty());
    assert_eq!(nothing.next_seq, cursor);
    store.append_logs(vec![chunk(&a, LogStream::Stdout, "world", 3)]).await.expect("append");
    let more = store.read_logs(&a, LogQuery { after_seq: Some(cursor), ..Default::default() }).await;
    let more = more.expect("read");
    assert_eq!(text(&more), "world");
    assert_eq!(more.next_seq, 3);

    // Tail: the last 8 bytes, the oldest chunk cut to fit.
    let tail = store.read_logs(&a, LogQuery { tail_bytes: Some(8), ..Default::default() }).await;
    let tail = tail.expect("read");
    assert_eq!(text(&tail), "rn world");
    assert_eq!(tail.chunks.first().map(|c| c.seq), Some(2));
    assert_eq!(tail.next_seq, 3);
    let whole = store.read_logs(&a, LogQuery { tail_bytes: Some(1000), ..Default::default() }).await;
    assert_eq!(text(&whole.expect("read")), "hello warn world");
    let none = store.read_logs(&a, LogQuery { tail_bytes: Some(0), ..Default::default() }).await;
    let none = none.expect("read");
    assert!(none.chunks.is_empty());
    assert_eq!(none.next_seq, 3, "tail 0 then follow starts at the end");

    // limit_bytes pages forward, always making progress.
    let first = store.read_logs(&a, LogQuery { limit_bytes: Some(7), ..Default::default() }).await;
    let first = first.expect("read");
    assert_eq!(text(&first), "hello ");
    let tiny =
        store.read_logs(&a, LogQuery { after_seq: Some(1), limit_bytes: Some(1), ..Default::default() });
    assert_eq!(text(&tiny.await.expect("read")), "warn ");

    let other = store.read_logs(&b, LogQuery::default()).await.expect("read");
    assert_eq!((text(&other).as_str(), other.next_seq), ("other task", 1));
}

#[tokio::test]
async fn bound_drops_oldest_bytes_and_reports_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Each row is charged its data plus LOG_ROW_OVERHEAD: 236 + 64 = 300 bytes.
    assert_eq!(LOG_ROW_OVERHEAD, 64);
    let config = StoreConfig { max_log_bytes_per_task: 1000, ..Default::default() };
    let t = TaskId::generate();
    {
        let store = open_with(dir.path(), config.clone());
        // Ten rows of 236 bytes, one batch each: only the last three fit in 1000 bytes.
        for i in 0..10 {
            let data = format!("{i:0>236}");
            store.append_logs(vec![chunk(&t, LogStream::Stdout, &data, i)]).await.expect("append");
        }
        let page = store.read_logs(&t, LogQuery::default()).await.expect("read");
        assert_eq!(page.chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![8, 9, 10]);
        assert_eq!(page.dropped_bytes, 7 * 236, "dropped counts output bytes, not the overhead");
        // A follower that fell behind continues from the oldest kept chunk.
        let behind = store.read_logs(&t, LogQuery { after_seq: Some(2), ..Default::default() }).await;
        assert_eq!(behind.expect("read").chunks.first().map(|c| c.seq), Some(8));
    }
    // The bound's bookkeeping survives a restart.
    let store = open_with(dir.path(), config);
    let big = "x".repeat(564) + &"y".repeat(936);
    store.append_logs(vec![chunk(&t, LogStream::Stderr, &big, 9)]).await.expect("append");
    let page = store.read_logs(&t, LogQuery::default()).await.expect("read");
    assert_eq!(text(&page), "y".repeat(936), "a chunk larger than the bound keeps its end");
    assert_eq!(page.chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![11]);
    assert_eq!(page.dropped_bytes, 7 * 236 + 564 + 3 * 236);
    assert_eq!(page.next_seq, 11);
}

/// Bytes of the database's pages holding task output (the table and its key).
fn log_table_bytes(db: &std::path::Path) -> u64 {
    let conn = rusqlite::Connection::open(db).expect("open the database");
    conn.query_row("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = 'task_logs'", [], |r| {
        r.get::<_, i64>(0)
    })
    .map(|n| u64::try_from(n).unwrap_or(0))
    .expect("dbstat")
}

#[tokio::test]
async fn output_sent_byte_by_byte_is_bounded_in_database_bytes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let max = 256 * 1024;
    let store = open_with(dir.path(), StoreConfig { max_log_bytes_per_task: max, ..Default::default() });
    let (mixed, plain) = (TaskId::generate(), TaskId::generate());
    // 1 MiB of output in 1-byte chunks, 8192 per batch. `mixed` alternates stdout and
    // stderr, so no two neighbours can be merged: every byte is a row of its own.
    for batch in 0..128 {
        let chunks = (0..8192)
            .map(|i| {
                let stream = if i % 2 == 0 { LogStream::Stdout } else { LogStream::Stderr };
                LogChunk { task_id: mixed.clone(), stream, data: vec![b'a' + (i % 26) as u8], time_ms: batch }
            })
            .collect();
        store.append_logs(chunks).await.expect("append");
    }
    let db = dir.path().join("data/cloudai.db");
    let bytes = log_table_bytes(&db);
    assert!(bytes <= max + max / 2, "{bytes} bytes of database for a bound of {max}");
    let page = store.read_logs(&mixed, LogQuery::default()).await.expect("read");
    let kept: u64 = page.chunks.iter().map(|c| c.data.len() as u64).sum();
    assert_eq!(kept + page.dropped_bytes, 1 << 20, "what is not kept is reported dropped");
    assert!(kept * (1 + LOG_ROW_OVERHEAD) <= max, "{kept} one-byte rows kept");

    // The same output on one stream is merged into few rows, so most of it is kept.
    for batch in 0..128 {
        let chunks = (0..8192)
            .map(|_| LogChunk {
                task_id: plain.clone(),
                stream: LogStream::Stdout,
                data: vec![b'z'],
                time_ms: batch,
            })
            .collect();
        store.append_logs(chunks).await.expect("append");
    }
    let page = store.read_logs(&plain, LogQuery::default()).await.expect("read");
    assert!(page.chunks.len() < 64, "{} rows for 1 MiB", page.chunks.len());
    let kept: u64 = page.chunks.iter().map(|c| c.data.len() as u64).sum();
    assert!(kept > max - 32 * 1024 && kept <= max, "{kept} bytes kept of a bound of {max}");
    assert_eq!(kept + page.dropped_bytes, 1 << 20);
    assert!(text(&page).bytes().all(|b| b == b'z'));
    // Both tasks together stay within their two bounds.
    let bytes = log_table_bytes(&db);
    assert!(bytes <= 2 * max + max / 2, "{bytes} bytes of database for two bounds of {max}");
}

#[tokio::test]
async fn tail_lines_are_the_last_lines_of_a_log_bigger_than_a_page() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig { max_log_bytes_per_task: 32 << 20, ..Default::default() };
    let store = open_with(dir.path(), config);
    let t = TaskId::generate();
    // 10 MiB of numbered lines (more than the API's 8 MiB page), in 64 KiB-ish batches.
    let lines = 10 * 1024 * 1024 / 16;
    let mut n = 0;
    while n < lines {
        let mut data = String::new();
        while data.len() < 64 * 1024 && n < lines {
            data.push_str(&format!("line {n:0>10}\n"));
            n += 1;
        }
        store.append_logs(vec![chunk(&t, LogStream::Stdout, &data, 1)]).await.expect("append");
    }
    let tail = |lines: u64, bytes: Option<u64>| {
        let store = &store;
        let t = t.clone();
        async move {
            let query = LogQuery { tail_lines: Some(lines), tail_bytes: bytes, ..Default::default() };
            store.read_logs(&t, query).await.expect("read")
        }
    };
    let last = lines - 1;
    let expected: String = (last - 4..=last).map(|i| format!("line {i:0>10}\n")).collect();
    let page = tail(5, None).await;
    assert_eq!(text(&page), expected, "exactly the last 5 lines");
    let whole = store.read_logs(&t, LogQuery::default()).await.expect("read");
    assert_eq!(page.next_seq, whole.next_seq, "a follower goes on from the end");

    // Bounded in bytes too: the newest bytes of the lines asked for.
    let page = tail(1_000_000, Some(40)).await;
    assert_eq!(text(&page), expected[expected.len() - 40..]);

    // A last line without its newline counts as a line; a log shorter than asked is whole.
    store.append_logs(vec![chunk(&t, LogStream::Stderr, "partial", 2)]).await.expect("append");
    let page = tail(2, None).await;
    assert_eq!(text(&page), format!("line {last:0>10}\npartial"));
    let short = TaskId::generate();
    store.append_logs(vec![chunk(&short, LogStream::Stdout, "a\nb\n", 1)]).await.expect("append");
    let page = store.read_logs(&short, LogQuery { tail_lines: Some(10), ..Default::default() });
    assert_eq!(text(&page.await.expect("read")), "a\nb\n");
    let page = store.read_logs(&short, LogQuery { tail_lines: Some(u64::MAX), ..Default::default() });
    assert_eq!(text(&page.await.expect("read")), "a\nb\n", "any count is fine");
}
