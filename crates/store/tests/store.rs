//! Tasks, events, workers, key/value, restart and open behaviour of the SQLite store.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use cloudai_domain::{Outcome, Task, TaskId, TaskStatus, WorkerId};
use cloudai_store::{
    SCHEMA_VERSION, SqliteStore, Store, StoreConfig, StoreError, TaskCursor, TaskFilter, sqlite_path_from_url,
};
use common::{open, task};

fn wid(s: &str) -> WorkerId {
    WorkerId::parse(s).expect("worker id")
}

#[tokio::test]
async fn insert_get_and_list_by_status_and_worker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    // Inserted out of creation order: listing must follow created_at_ms.
    let mut t3 = task(3);
    let t1 = task(1);
    let mut t2 = task(2);
    for t in [&t3, &t1, &t2] {
        store.insert_task(t, &t.created_event()).await.expect("insert");
    }
    let e = t2.place(wid("w1"), vec![0], 10).expect("place");
    store.update_task(&t2, &e).await.expect("update");
    let e = t3.place(wid("w2"), vec![], 11).expect("place");
    store.update_task(&t3, &e).await.expect("update");

    assert_eq!(store.get_task(&t2.task_id).await.expect("get"), Some(t2.clone()));
    assert_eq!(store.get_task(&TaskId::generate()).await.expect("get"), None);

    let ids = |v: Vec<cloudai_domain::Task>| v.into_iter().map(|t| t.task_id).collect::<Vec<_>>();
    let all = store.list_tasks(&TaskFilter::default()).await.expect("list");
    assert_eq!(ids(all), vec![t1.task_id.clone(), t2.task_id.clone(), t3.task_id.clone()]);
    let queued = TaskFilter { status: Some(TaskStatus::Queued), ..Default::default() };
    assert_eq!(
        ids(store.list_tasks(&queued).await.expect("list")),
        vec![t2.task_id.clone(), t3.task_id.clone()]
    );
    let on_w2 = TaskFilter { worker_id: Some(wid("w2")), ..Default::default() };
    assert_eq!(store.list_tasks(&on_w2).await.expect("list"), vec![t3.clone()]);
    let both =
        TaskFilter { status: Some(TaskStatus::Pending), worker_id: Some(wid("w1")), ..Default::default() };
    assert!(store.list_tasks(&both).await.expect("list").is_empty());
    let first = TaskFilter { limit: Some(2), ..Default::default() };
    assert_eq!(
        ids(store.list_tasks(&first).await.expect("list")),
        vec![t1.task_id.clone(), t2.task_id.clone()]
    );
    let newest = TaskFilter { limit: Some(2), newest_first: true, ..Default::default() };
    assert_eq!(
        ids(store.list_tasks(&newest).await.expect("list")),
        vec![t3.task_id.clone(), t2.task_id.clone()]
    );
    // A page continues after its last task, in either order.
    let after_t1 = TaskFilter { after: Some(TaskCursor::of(&t1)), ..Default::default() };
    assert_eq!(
        ids(store.list_tasks(&after_t1).await.expect("list")),
        vec![t2.task_id.clone(), t3.task_id.clone()]
    );
    let before_t2 = TaskFilter { after: Some(TaskCursor::of(&t2)), newest_first: true, ..Default::default() };
    assert_eq!(ids(store.list_tasks(&before_t2).await.expect("list")), vec![t1.task_id.clone()]);

    let counts = store.count_by_status().await.expect("count");
    assert_eq!(counts.len(), TaskStatus::ALL.len());
    assert_eq!(counts[&TaskStatus::Pending], 1);
    assert_eq!(counts[&TaskStatus::Queued], 2);
    assert_eq!(counts[&TaskStatus::Completed], 0);
}

#[tokio::test]
async fn updates_append_events_in_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut t = task(100);
    let mut events = vec![t.created_event()];
    store.insert_task(&t, &events[0]).await.expect("insert");
    events.push(t.place(wid("w1"), vec![1, 3], 101).expect("place"));
    store.update_task(&t, events.last().expect("event")).await.expect("update");
    events.push(t.transition(TaskStatus::Running, "started", Outcome::default(), 102).expect("run"));
    store.update_task(&t, events.last().expect("event")).await.expect("update");
    let outcome = Outcome { exit_code: Some(2), error: None };
    events.push(t.transition(TaskStatus::Failed, "exited with code 2", outcome, 103).expect("fail"));
    store.update_task(&t, events.last().expect("event")).await.expect("update");

    assert_eq!(store.task_events(&t.task_id).await.expect("events"), events);
    assert_eq!(store.get_task(&t.task_id).await.expect("get"), Some(t.clone()));
    assert!(store.task_events(&TaskId::generate()).await.expect("events").is_empty());
}

#[tokio::test]
async fn duplicate_insert_and_unknown_update_are_refused_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let t = task(1);
    store.insert_task(&t, &t.created_event()).await.expect("insert");
    // Queue the refused operations among good ones, so they share a batch.
    let mut joins = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(&store);
        let dup = t.clone();
        joins.push(tokio::spawn(async move {
            let fresh = task(10 + i);
            let good = store.insert_task(&fresh, &fresh.created_event()).await;
            let dup = store.insert_task(&dup, &dup.created_event()).await;
            let missing = task(0);
            let unknown = store.update_task(&missing, &missing.created_event()).await;
            (good, dup, unknown)
        }));
    }
    for j in joins {
        let (good, dup, unknown) = j.await.expect("join");
        good.expect("good insert");
        assert!(matches!(dup, Err(StoreError::AlreadyExists(_))), "{dup:?}");
        assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
    }
    assert_eq!(store.list_tasks(&TaskFilter::default()).await.expect("list").len(), 21);
    // The refused duplicates wrote no event.
    assert_eq!(store.task_events(&t.task_id).await.expect("events").len(), 1);
}

#[tokio::test]
async fn restart_keeps_tasks_and_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut expected_unfinished = Vec::new();
    let mut expected_events = BTreeMap::new();
    {
        let store = open(dir.path());
        for i in 0..12 {
            let mut t = task(i);
            let mut events = vec![t.created_event()];
            store.insert_task(&t, &events[0]).await.expect("insert");
            if i % 3 != 0 {
                events.push(t.place(wid("w1"), vec![], 100 + i).expect("place"));
                store.update_task(&t, events.last().expect("event")).await.expect("update");
            }
            if i % 3 == 2 {
                let e =
                    t.transition(TaskStatus::Completed, "exited", Outcome::default(), 200 + i).expect("done");
                events.push(e);
                store.update_task(&t, events.last().expect("event")).await.expect("update");
            }
            if !t.status().is_final() {
                expected_unfinished.push(t.clone());
            }
            expected_events.insert(t.task_id.clone(), events);
        }
        // Neither closed nor dropped: no flush or checkpoint runs, as when the master is
        // killed. Acknowledged writes must already be in the WAL.
        std::mem::forget(store);
        forget_lock(dir.path());
    }
    let store = open(dir.path());
    assert_eq!(store.unfinished_tasks().await.expect("unfinished"), expected_unfinished);
    for (id, events) in expected_events {
        assert_eq!(store.task_events(&id).await.expect("events"), events);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_inserts_all_land() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let joins: Vec<_> = (0..50)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for i in 0..40 {
                    let t = task(i);
                    store.insert_task(&t, &t.created_event()).await.expect("insert");
                }
            })
        })
        .collect();
    for j in joins {
        j.await.expect("join");
    }
    assert_eq!(store.count_by_status().await.expect("count")[&TaskStatus::Pending], 2000);
    assert_eq!(store.list_tasks(&TaskFilter::default()).await.expect("list").len(), 2000);
}

#[tokio::test]
async fn close_flushes_queued_writes_then_refuses() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let joins: Vec<_> = (0..200)
        .map(|i| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let t = task(i);
                store.insert_task(&t, &t.created_event()).await.map(|()| t.task_id)
            })
        })
        .collect();
    tokio::task::yield_now().await;
    store.close().await;
    let mut acknowledged = Vec::new();
    for j in joins {
        match j.await.expect("join") {
            Ok(id) => acknowledged.push(id),
            Err(StoreError::Closed) => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    let t = task(1);
    assert!(matches!(store.insert_task(&t, &t.created_event()).await, Err(StoreError::Closed)));
    assert!(matches!(store.get_task(&t.task_id).await, Err(StoreError::Closed)));
    store.close().await;
    drop(store);

    // Every acknowledged write is in the file.
    let store = open(dir.path());
    for id in acknowledged {
        assert!(store.get_task(&id).await.expect("get").is_some(), "task {id} lost");
    }
}

#[tokio::test]
async fn corrupt_row_is_reported_with_its_table_and_id() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let t = task(1);
    store.insert_task(&t, &t.created_event()).await.expect("insert");
    let raw = rusqlite::Connection::open(store.path()).expect("raw open");
    raw.execute("UPDATE tasks SET spec = '{not json' WHERE task_id = ?1", [t.task_id.as_str()])
        .expect("damage");
    let err = store.get_task(&t.task_id).await.expect_err("corrupt");
    assert!(
        matches!(err, StoreError::Corrupt { table: "tasks", ref id, .. } if id == t.task_id.as_str()),
        "{err}"
    );
    raw.execute("UPDATE tasks SET spec = '{}', status = 'sleeping'", []).expect("damage");
    assert!(matches!(store.count_by_status().await, Err(StoreError::Corrupt { .. })));
}

#[tokio::test]
async fn a_placed_row_without_a_worker_reads_as_pending_and_a_workerless_completion_as_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = open(dir.path());
    let mut t = task(1);
    store.insert_task(&t, &t.created_event()).await.expect("insert");
    let placed = t.place(wid("w1"), vec![0], 2).expect("place");
    store.update_task(&t, &placed).await.expect("update");
    let raw = rusqlite::Connection::open(store.path()).expect("raw open");
    raw.execute("UPDATE tasks SET worker_id = NULL WHERE task_id = ?1", [t.task_id.as_str()])
        .expect("damage");
    let read = store.get_task(&t.task_id).await.expect("still readable").expect("not lost");
    assert_eq!(read.status(), TaskStatus::Pending);
    assert_eq!(read.pending_reason(), Some("queued without a worker: placement lost"));
    assert_eq!((read.attempt, &read.spec), (t.attempt, &t.spec));

    raw.execute("UPDATE tasks SET status = 'completed' WHERE task_id = ?1", [t.task_id.as_str()])
        .expect("damage");
    let err = store.get_task(&t.task_id).await.expect_err("corrupt");
    assert!(
        matches!(err, StoreError::Corrupt { table: "tasks", ref id, ref reason } if id == t.task_id.as_str() && reason.contains("completed without a worker")),
        "{err}"
    );
}

#[tokio::test]
async fn reopen_is_idempotent_and_newer_schema_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t = task(1);
    let path = {
        let store = open(dir.path());
        store.insert_task(&t, &t.created_event()).await.expect("insert");
        store.close().await;
        store.path().to_path_buf()
    };
    for _ in 0..2 {
        let store = open(dir.path());
        assert!(store.get_task(&t.task_id).await.expect("get").is_some());
    }
    let raw = rusqlite::Connection::open(&path).expect("raw open");
    let version: u32 = raw.query_row("PRAGMA user_version", [], |r| r.get(0)).expect("version");
    assert_eq!(version, SCHEMA_VERSION);
    raw.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1)).expect("bump");
    drop(raw);
    let err = SqliteStore::open(&path, StoreConfig::default()).err().expect("newer schema refused");
    assert!(matches!(err, StoreError::Migration(ref m) if m.contains("newer")), "{err}");
}

#[tokio::test]
async fn open_url_forms() {
    let p = |u: &str| sqlite_path_from_url(u).map(|p| p.to_string_lossy().into_owned());
    assert_eq!(p("sqlite:///abs/path.db").expect("abs"), "/abs/path.db");
    assert_eq!(p("sqlite://relative/path.db").expect("rel"), "relative/path.db");
    assert_eq!(p("sqlite:plain.db").expect("plain"), "plain.db");
    assert_eq!(p("sqlite://data/c.db?mode=rwc").expect("options"), "data/c.db");
    for bad in ["postgres://u@h/db", "postgresql://h/db"] {
        let err = p(bad).expect_err("postgres");
        assert!(matches!(err, StoreError::UnsupportedUrl { .. }), "{err}");
        assert!(err.to_string().contains("PostgreSQL is not built"), "{err}");
    }
    for bad in ["mysql://h/db", "cloudai.db", "sqlite://", "sqlite://:memory:"] {
        assert!(matches!(p(bad), Err(StoreError::UnsupportedUrl { .. })), "{bad}");
    }

    let dir = tempfile::tempdir().expect("tempdir");
    let url = format!("sqlite://{}/nested/dir/x.db", dir.path().display());
    let store = SqliteStore::open_url(&url, StoreConfig::default()).expect("open_url");
    let t = task(1);
    store.insert_task(&t, &t.created_event()).await.expect("insert");
    assert!(dir.path().join("nested/dir/x.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_fails_alone_in_its_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open(dir.path()));
    let tasks: Vec<Task> = (0..100).map(task).collect();
    let bad = tasks[50].task_id.clone();
    // A trigger makes one insert fail inside SQLite, after the batch has begun.
    let raw = rusqlite::Connection::open(store.path()).expect("raw open");
    raw.execute_batch(&format!(
        "CREATE TRIGGER refuse_bad BEFORE INSERT ON tasks WHEN NEW.task_id = '{bad}' BEGIN SELECT RAISE(ABORT, 'boom'); END"
    ))
    .expect("trigger");
    let joins: Vec<_> = tasks
        .into_iter()
        .map(|t| {
            let store = Arc::clone(&store);
            tokio::spawn(async move { (t.task_id.clone(), store.insert_task(&t, &t.created_event()).await) })
        })
        .collect();
    for j in joins {
        let (id, result) = j.await.expect("join");
        if id == bad {
            assert!(matches!(result, Err(StoreError::Sqlite(_))), "{result:?}");
        } else {
            result.expect("good write");
        }
    }
    assert_eq!(store.list_tasks(&TaskFilter::default()).await.expect("list").len(), 99);
}

#[tokio::test]
async fn a_lock_held_elsewhere_fails_the_batch_once_then_writes_resume() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig { busy_timeout: std::time::Duration::from_millis(100), ..Default::default() };
    let store = Arc::new(common::open_with(dir.path(), config));
    let raw = rusqlite::Connection::open(store.path()).expect("raw open");
    raw.execute_batch("BEGIN IMMEDIATE").expect("hold the write lock");
    let joins: Vec<_> = (0..20)
        .map(|i| {
            let store = Arc::clone(&store);
            let t = task(i);
            tokio::spawn(async move { store.insert_task(&t, &t.created_event()).await })
        })
        .collect();
    for j in joins {
        let result = j.await.expect("join");
        assert!(matches!(result, Err(StoreError::Transaction(_))), "{result:?}");
    }
    raw.execute_batch("ROLLBACK").expect("release");
    let after = task(100);
    store.insert_task(&after, &after.created_event()).await.expect("write after the lock is released");
    assert_eq!(store.list_tasks(&TaskFilter::default()).await.expect("list").len(), 1);
}

/// Child half of `acknowledged_writes_survive_sigkill`: inserts tasks forever, printing each
/// id once its insert is acknowledged.
#[tokio::test]
#[ignore = "run by acknowledged_writes_survive_sigkill in a child process"]
async fn sigkill_child_writer() {
    use std::io::Write;
    let Some(path) = std::env::var_os("CLOUDAI_STORE_CRASH_DB") else { return };
    let store = SqliteStore::open(std::path::Path::new(&path), StoreConfig::default()).expect("open");
    let mut out = std::io::stdout().lock();
    for i in 0.. {
        let t = task(i);
        store.insert_task(&t, &t.created_event()).await.expect("insert");
        writeln!(out, "acked {}", t.task_id).and_then(|()| out.flush()).expect("stdout");
    }
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("crash.db");
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args(["--exact", "sigkill_child_writer", "--ignored", "--nocapture", "--test-threads=1"])
        .env("CLOUDAI_STORE_CRASH_DB", &path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("stdout");
    let mut acked = Vec::new();
    let mut lines = BufReader::new(stdout).lines();
    while acked.len() < 300 {
        let line = lines.next().expect("child ended early").expect("read");
        if let Some(id) = line.strip_prefix("acked ") {
            acked.push(TaskId::parse(id).expect("id"));
        }
    }
    child.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    child.wait().expect("reap");
    // Lines still in the pipe were acknowledged before the kill too.
    acked.extend(lines.map_while(Result::ok).filter_map(|l| TaskId::parse(l.strip_prefix("acked ")?).ok()));

    let store = SqliteStore::open(&path, StoreConfig::default()).expect("reopen");
    for id in &acked {
        assert!(store.get_task(id).await.expect("get").is_some(), "acknowledged task {id} lost");
    }
}

#[tokio::test]
async fn telemetry_minutes_survive_a_restart_and_are_pruned_by_age() {
    let dir = tempfile::tempdir().expect("tempdir");
    let minute = |w: &str, start_ms: i64, data: &[u8]| cloudai_store::TelemetryMinute {
        worker_id: wid(w),
        start_ms,
        data: data.to_vec(),
    };
    {
        let store = open(dir.path());
        let batch = vec![minute("w2", 60_000, b"a"), minute("w1", 120_000, b"b"), minute("w1", 60_000, b"c")];
        store.append_telemetry_minutes(batch).await.expect("append");
        // The same minute again (a re-sent bucket) replaces the first copy.
        store.append_telemetry_minutes(vec![minute("w1", 120_000, b"B")]).await.expect("replace");
        std::mem::forget(store);
        forget_lock(dir.path());
    }
    let store = open(dir.path());
    let w1 = store.telemetry_minutes(&wid("w1"), 0).await.expect("read");
    assert_eq!(w1, vec![minute("w1", 60_000, b"c"), minute("w1", 120_000, b"B")]);
    assert_eq!(store.telemetry_minutes(&wid("w2"), 0).await.expect("read"), vec![minute("w2", 60_000, b"a")]);
    let recent = store.telemetry_minutes(&wid("w1"), 120_000).await.expect("read");
    assert_eq!(recent, vec![minute("w1", 120_000, b"B")]);
    store.prune_telemetry_minutes(120_000).await.expect("prune");
    assert_eq!(
        store.telemetry_minutes(&wid("w1"), 0).await.expect("read"),
        vec![minute("w1", 120_000, b"B")]
    );
    assert!(store.telemetry_minutes(&wid("w2"), 0).await.expect("read").is_empty());
}

#[tokio::test]
async fn one_open_store_per_database_and_the_second_names_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = open(dir.path());
    let path = first.path().to_path_buf();
    let err = SqliteStore::open(&path, StoreConfig::default()).err().expect("a second open is refused");
    let message = err.to_string();
    assert!(
        matches!(err, StoreError::Locked { holder: Some(pid), .. } if pid == std::process::id()),
        "{message}"
    );
    assert!(message.contains("in use by another cloudai master") && message.contains("pid"), "{message}");
    // Closing lets the next one in (a restart).
    first.close().await;
    let again = SqliteStore::open(&path, StoreConfig::default()).expect("reopened after close");
    drop(again);
    SqliteStore::open(&path, StoreConfig::default()).expect("reopened after drop");
}

#[tokio::test]
async fn an_empty_database_file_is_refused_unless_init() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = {
        let store = open(dir.path());
        let t = task(1);
        store.insert_task(&t, &t.created_event()).await.expect("insert");
        store.close().await;
        store.path().to_path_buf()
    };
    // Truncated (a bad copy, a full disk during a restore): every task would silently be gone.
    std::fs::write(&path, b"").expect("truncate");
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    let err = SqliteStore::open(&path, StoreConfig::default()).err().expect("refused");
    assert!(matches!(err, StoreError::Empty { .. }), "{err}");
    assert!(err.to_string().contains("--init"), "says how to go on: {err}");
    let store =
        SqliteStore::open(&path, StoreConfig { init: true, ..StoreConfig::default() }).expect("--init");
    assert!(store.unfinished_tasks().await.expect("read").is_empty());
    store.close().await;
    // Once initialised it is a store like any other.
    SqliteStore::open(&path, StoreConfig::default()).expect("opens without --init now");
}

/// What a killed master leaves: its lock ends with its process. Here the process lives on
/// (the store was leaked), so its lock file goes instead; the next open locks a new one.
fn forget_lock(dir: &std::path::Path) {
    std::fs::remove_file(dir.join("data/cloudai.db.lock")).expect("remove the leaked store's lock");
}
