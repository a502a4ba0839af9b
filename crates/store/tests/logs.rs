//! Task logs: sequence numbers, follow and tail reads, and the per-task bound.

mod common;

use cloudai_domain::TaskId;
use cloudai_store::{LogChunk, LogQuery, LogStream, Store, StoreConfig};
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
    let config = StoreConfig { max_log_bytes_per_task: 100, ..Default::default() };
    let t = TaskId::generate();
    {
        let store = open_with(dir.path(), config.clone());
        // Ten 30-byte chunks, in two batches: only the last three fit in 100 bytes.
        for batch in 0..2 {
            let chunks = (0..5)
                .map(|i| chunk(&t, LogStream::Stdout, &format!("{:0>30}", batch * 5 + i), i64::from(i)))
                .collect();
            store.append_logs(chunks).await.expect("append");
        }
        let page = store.read_logs(&t, LogQuery::default()).await.expect("read");
        assert_eq!(page.chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![8, 9, 10]);
        assert_eq!(page.dropped_bytes, 210);
        // A follower that fell behind continues from the oldest kept chunk.
        let behind = store.read_logs(&t, LogQuery { after_seq: Some(2), ..Default::default() }).await;
        assert_eq!(behind.expect("read").chunks.first().map(|c| c.seq), Some(8));
    }
    // The bound's bookkeeping survives a restart.
    let store = open_with(dir.path(), config);
    let big = "x".repeat(150) + &"y".repeat(100);
    store.append_logs(vec![chunk(&t, LogStream::Stderr, &big, 9)]).await.expect("append");
    let page = store.read_logs(&t, LogQuery::default()).await.expect("read");
    assert_eq!(text(&page), "y".repeat(100), "a chunk larger than the bound keeps its end");
    assert_eq!(page.chunks.iter().map(|c| c.seq).collect::<Vec<_>>(), vec![11]);
    assert_eq!(page.dropped_bytes, 210 + 150 + 90);
    assert_eq!(page.next_seq, 11);
}
