//! Listing tasks page by page: a cluster with 20,000 finished tasks (many created in the
//! same millisecond) and a few still pending is walked exactly once, in either order, and
//! every bad page query gets a JSON error naming the parameter.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use cloudai_domain::{Outcome, Task, TaskId, TaskSpec, TaskStatus, WorkerId};
use cloudai_store::{SqliteStore, Store, StoreConfig};
use common::{get_json, master_config, start_master, submit};
use serde_json::{Value, json};

const FINISHED: usize = 20_000;
const PENDING: usize = 7;

/// Writes `FINISHED` completed tasks into the master's store before it starts, 50 per
/// millisecond, so page boundaries fall inside groups of tasks with the same creation time.
async fn fill_store(database_url: &str) -> HashSet<String> {
    let store = SqliteStore::open_url(database_url, StoreConfig { init: true, ..StoreConfig::default() })
        .expect("open store");
    let spec = TaskSpec::from_json(
        br#"{"driver": "process", "command": ["echo", "old"], "env": {"SECRET": "hunter2"}, "cpu_required": 1, "memory_required": 8}"#,
    )
    .expect("spec");
    let worker = WorkerId::parse("w-old").expect("worker id");
    let mut ids = HashSet::new();
    let mut writes = Vec::new();
    for i in 0..FINISHED {
        let at = 1_700_000_000_000 + (i / 50) as i64;
        let mut task = Task::new(TaskId::generate(), spec.clone(), at);
        let created = task.created_event();
        task.place(worker.clone(), vec![], at).expect("place");
        let done =
            task.transition(TaskStatus::Completed, "exit 0", Outcome::default(), at).expect("complete");
        ids.insert(task.task_id.to_string());
        writes.push((task, created, done));
    }
    // Concurrent writes share the writer's transactions.
    futures::future::join_all(writes.iter().map(|(task, created, done)| {
        let store = &store;
        async move {
            store.insert_task(task, created).await.expect("insert");
            store.update_task(task, done).await.expect("update");
        }
    }))
    .await;
    store.close().await;
    ids
}

/// Walks every page of `query` (a query string without `after`), returning the ids in the
/// order seen and the number of pages.
async fn walk(api: &str, query: &str) -> (Vec<String>, usize) {
    let mut seen = Vec::new();
    let mut pages = 0;
    let mut after = String::new();
    loop {
        let (status, page) = get_json(&format!("{api}/api/tasks?{query}{after}")).await;
        assert_eq!(status, 200, "{page}");
        pages += 1;
        let tasks = page["tasks"].as_array().expect("tasks");
        seen.extend(tasks.iter().map(|t| t["task_id"].as_str().expect("id").to_string()));
        match page["next"].as_str() {
            Some(next) => after = format!("&after={next}"),
            None => {
                assert!(page["next"].is_null(), "the last page says so: {}", page["next"]);
                return (seen, pages);
            }
        }
        assert!(pages < 1000, "the walk does not end");
    }
}

fn created_order(api_tasks: &[Value]) -> Vec<(i64, String)> {
    api_tasks
        .iter()
        .map(|t| (t["created_at_ms"].as_i64().expect("created"), t["task_id"].as_str().expect("id").into()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_tasks_are_walked_exactly_once_in_either_order() {
    let config = master_config(Duration::from_secs(30));
    let mut expected = fill_store(&config.database_url).await;
    let master = start_master(config).await;
    let api = format!("http://{}", master.http_addr);
    // No worker: these stay pending, held by the task actor as well as the store.
    for _ in 0..PENDING {
        let t = submit(
            &api,
            json!({"driver": "process", "command": ["true"], "cpu_required": 1, "memory_required": 8}),
        )
        .await;
        expected.insert(t["task_id"].as_str().expect("id").to_string());
    }

    let (oldest_first, pages) = walk(&api, "limit=1000").await;
    assert_eq!(oldest_first.len(), FINISHED + PENDING, "every task once");
    assert_eq!(oldest_first.iter().cloned().collect::<HashSet<_>>(), expected);
    assert!(pages >= 21, "pages of at most 1000: {pages}");

    let (newest_first, _) = walk(&api, "limit=777&order=newest").await;
    let mut reversed = newest_first.clone();
    reversed.reverse();
    assert_eq!(reversed, oldest_first, "newest first is the same walk backwards");

    let (pending, _) = walk(&api, "status=pending&limit=3").await;
    assert_eq!(pending.len(), PENDING);
    assert_eq!(&oldest_first[FINISHED..], &pending[..], "the pending tasks are the newest");

    // The default page: 100, oldest first, in creation order.
    let (_, first) = get_json(&format!("{api}/api/tasks")).await;
    let tasks = first["tasks"].as_array().expect("tasks");
    assert_eq!(tasks.len(), 100);
    let order = created_order(tasks);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(order, sorted);
    assert_eq!(tasks[0]["env"]["SECRET"], "hunter2", "a full listing has the env");

    // Brief: the big fields are left out.
    let (_, brief) = get_json(&format!("{api}/api/tasks?limit=5&brief=true")).await;
    let task = &brief["tasks"][0];
    assert!(task.get("env").is_none() && task.get("command").is_none(), "{task}");
    assert_eq!(task["status"], "completed");

    // A worker's tasks are pages too.
    let (_, on_worker) = get_json(&format!("{api}/api/workers/w-old/tasks?limit=10&order=newest")).await;
    assert_eq!(on_worker["tasks"].as_array().map(Vec::len), Some(10));
    assert!(on_worker["next"].is_string(), "{}", on_worker["next"]);

    master.shutdown().await;
}

#[tokio::test]
async fn a_bad_page_query_names_the_parameter() {
    let master = start_master(master_config(Duration::from_secs(30))).await;
    let api = format!("http://{}", master.http_addr);
    for (query, named) in [
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        ("limit=ten", "limit"),
        ("order=sideways", "order"),
        ("brief=maybe", "brief"),
        ("after=not%20an%20id", "after"),
        ("after=0190b1e2-0000-7000-8000-000000000000", "after"),
        ("status=sleeping", "status"),
    ] {
        let (status, body) = get_json(&format!("{api}/api/tasks?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        let message = body["error"].as_str().unwrap_or_default();
        assert!(message.starts_with(&format!("{named}:")), "{query}: {message}");
    }
    let (status, body) = get_json(&format!("{api}/api/tasks?limit=1000")).await;
    assert_eq!((status, body["tasks"].as_array().map(Vec::len)), (200, Some(0)));
    assert!(body["next"].is_null());
    master.shutdown().await;
}
