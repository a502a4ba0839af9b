//! Task output end to end: the master takes it only from the worker running the task, and
//! `?tail=N` is the last N lines however long the log.

mod common;

use std::time::Duration;

use cloudai_domain::TaskId;
use cloudai_proto::v1 as pb;
use cloudai_store::LogQuery;
use common::*;
use tonic::Code;

/// Bytes of the master's database files (the database and its write-ahead log).
fn database_bytes(config: &cloudai_master::MasterConfig) -> u64 {
    let db = cloudai_store::sqlite_path_from_url(&config.database_url).expect("a sqlite url");
    let wal = db.with_extension("db-wal");
    [db, wal].iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_taken_only_from_the_worker_running_the_task() {
    let mut config = master_config(Duration::from_secs(30));
    config.tasks.late_output = Duration::from_secs(2);
    let master = start_master(config.clone()).await;
    let api = format!("http://{}", master.http_addr);
    let mut w1 = RawWorker::join(master.grpc_addr, "w1").await;
    submit(&api, shell_task("echo hello")).await;
    let (task_id, attempt) = w1.next_start().await;
    let w2 = RawWorker::join(master.grpc_addr, "w2").await;
    w1.report(&task_id, attempt, pb::TaskStatus::Running, None, String::new()).await.expect("running");

    w1.ship(&task_id, b"hello\n").await.expect("the task's own worker ships its output");

    // Another worker: refused, saying where the task is (a worker speaks only for its own tasks).
    let err = w2.ship(&task_id, b"forged\n").await.expect_err("not w2's task");
    assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("placed on worker w1"), "{}", err.message());

    // A task that does not exist: refused, and a flood of it takes no room.
    let unknown = TaskId::generate();
    let before = database_bytes(&config);
    for _ in 0..50 {
        let err = w1.ship(unknown.as_str(), &vec![b'x'; 1 << 20]).await.expect_err("no such task");
        assert_eq!(err.code(), Code::NotFound, "{err:?}");
    }
    let grown = database_bytes(&config).saturating_sub(before);
    assert!(grown < 1 << 20, "50 MiB refused, yet the database grew by {grown} bytes");
    let stored = master.tasks.read_logs(&unknown, LogQuery::default()).await.expect("read");
    assert!(stored.chunks.is_empty(), "nothing stored for the unknown task");

    // A batch mixing the task with another is refused whole.
    let mixed = pb::LogBatch {
        worker_id: "w1".into(),
        chunks: [task_id.as_str(), unknown.as_str()]
            .map(|id| pb::LogChunk {
                task_id: id.into(),
                stream: pb::LogStream::Stdout.into(),
                data: b"mixed\n".to_vec(),
                timestamp_ms: 1,
            })
            .into(),
    };
    let err = w1.client.ship_logs(mixed).await.expect_err("one of its tasks is unknown");
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    // Output that lands right after the final report is still the task's.
    w1.report(&task_id, attempt, pb::TaskStatus::Completed, Some(0), String::new()).await.expect("done");
    let done = wait_status(&api, &task_id, "completed").await;
    let finished_at_ms = done["finished_at_ms"].as_i64().expect("finished_at_ms");
    w1.ship(&task_id, b"last words\n").await.expect("late output of a task that just ended here");
    let err = w2.ship(&task_id, b"forged\n").await.expect_err("still not w2's task");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(task_output(&api, &task_id).await, "hello\nlast words\n");

    // Not much later, though: then the task's log is closed.
    wait_until(DEADLINE, "the late-output window to pass", || async {
        (cloudai_domain::time::unix_ms() > finished_at_ms + 2000).then_some(())
    })
    .await;
    let err = w1.ship(&task_id, b"too late\n").await.expect_err("the log is closed");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("ended (completed) more than 2s ago"), "{}", err.message());
    assert_eq!(task_output(&api, &task_id).await, "hello\nlast words\n");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_is_the_last_lines_of_a_real_task() {
    let master = start_master(master_config(Duration::from_secs(30))).await;
    let api = format!("http://{}", master.http_addr);
    let worker = InProcessWorker::start(worker_config(master.grpc_addr, "w1"));
    let script = "i=1; while [ $i -le 10000 ]; do echo \"line $i\"; i=$((i+1)); done";
    let task = submit(&api, shell_task(script)).await;
    let id = task["task_id"].as_str().expect("id").to_string();
    wait_status(&api, &id, "completed").await;

    let (status, tail) = get_json(&format!("{api}/api/tasks/{id}/logs?tail=5")).await;
    assert_eq!(status, 200, "{tail}");
    let text: String =
        tail["logs"].as_array().expect("logs").iter().filter_map(|c| c["data"].as_str()).collect();
    let expected: String = (9996..=10000).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text, expected);
    let whole = task_output(&api, &id).await;
    assert_eq!(whole.lines().count(), 10000, "without tail, the whole log");
    assert!(whole.len() > 50 * text.len());
    let (status, all) = get_json(&format!("{api}/api/tasks/{id}/logs?tail={}", u64::MAX)).await;
    assert_eq!(status, 200, "more lines than there are is all of them: {all}");
    let all: String =
        all["logs"].as_array().expect("logs").iter().filter_map(|c| c["data"].as_str()).collect();
    assert_eq!(all, whole);

    // Follow from a tail on an ended task: the same lines, then the stream ends.
    let resp = http_client()
        .get(format!("{api}/api/tasks/{id}/logs?tail=2&follow=true"))
        .send()
        .await
        .expect("follow");
    let body = resp.text().await.expect("body");
    let followed: String = body
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("NDJSON line"))
        .filter_map(|v| v["data"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(followed, "line 9999\nline 10000\n");
    worker.stop().await;
    master.shutdown().await;
}
