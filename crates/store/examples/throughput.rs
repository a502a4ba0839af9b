//! Write throughput of the SQLite store under the master's task load.
//!
//! Each task: insert (pending), place (queued), running, two log batches, completed: six
//! committed writes, ~10 rows. `CONCURRENCY` tasks are in flight at once.
//!
//! `cargo run --release -p cloudai-store --example throughput [TASKS] [CONCURRENCY]`
//! prints one JSON line per run and the median of 3 runs.

use std::sync::Arc;
use std::time::Instant;

use cloudai_domain::{Outcome, Task, TaskId, TaskSpec, TaskStatus, WorkerId};
use cloudai_store::{LogChunk, LogStream, SqliteStore, Store, StoreConfig};

const RUNS: usize = 3;
const WRITES_PER_TASK: usize = 6;

type Error = Box<dyn std::error::Error + Send + Sync>;

async fn one_task(store: &SqliteStore, spec: &TaskSpec, worker: &WorkerId, now: i64) -> Result<(), Error> {
    let mut t = Task::new(TaskId::generate(), spec.clone(), now);
    store.insert_task(&t, &t.created_event()).await?;
    let e = t.place(worker.clone(), vec![0], now + 1)?;
    store.update_task(&t, &e).await?;
    let e = t.transition(TaskStatus::Running, "started", Outcome::default(), now + 2)?;
    store.update_task(&t, &e).await?;
    for i in 0..2 {
        let data = format!("epoch {i}: loss 0.{i}42 accuracy 0.9{i} lr 3e-4 step {}\n", i * 100).repeat(4);
        let chunk = LogChunk {
            task_id: t.task_id.clone(),
            stream: LogStream::Stdout,
            data: data.into_bytes(),
            time_ms: now,
        };
        store.append_logs(vec![chunk]).await?;
    }
    let e = t.transition(TaskStatus::Completed, "exited with code 0", Outcome::default(), now + 3)?;
    Ok(store.update_task(&t, &e).await?)
}

async fn run(tasks: usize, concurrency: usize) -> Result<f64, Error> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("bench.db"), StoreConfig::default())?);
    let spec =
        TaskSpec::from_json(br#"{"docker_image":"python:3.12","cpu_required":2,"memory_required":4096}"#)?;
    let start = Instant::now();
    let mut joins = Vec::with_capacity(concurrency);
    for c in 0..concurrency {
        let (store, spec) = (Arc::clone(&store), spec.clone());
        let worker = WorkerId::parse(&format!("worker-{}", c % 50))?;
        let mine = tasks / concurrency + usize::from(c < tasks % concurrency);
        joins.push(tokio::spawn(async move {
            for i in 0..mine {
                one_task(&store, &spec, &worker, i as i64).await?;
            }
            Ok::<_, Error>(())
        }));
    }
    for j in joins {
        j.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    store.close().await;
    let rate = tasks as f64 / elapsed;
    println!(
        "{{\"tasks\":{tasks},\"concurrency\":{concurrency},\"seconds\":{elapsed:.3},\"tasks_per_s\":{rate:.0},\"writes_per_s\":{:.0}}}",
        rate * WRITES_PER_TASK as f64
    );
    Ok(rate)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let tasks: usize = args.next().map_or(Ok(20_000), |a| a.parse())?;
    let concurrency: usize = args.next().map_or(Ok(256), |a| a.parse())?.max(1);
    let mut rates = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        rates.push(run(tasks, concurrency).await?);
    }
    rates.sort_by(f64::total_cmp);
    println!("median tasks/s: {:.0}", rates[RUNS / 2]);
    Ok(())
}
