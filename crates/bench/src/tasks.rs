//! `cloudai bench tasks`: submits N trivial tasks to a running cluster over HTTP and
//! waits until all have ended.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde_json::{Value, json};

use cloudai_api::parse::{parse_duration, parse_url};
use cloudai_api::{ApiClient, SubmitTask, TaskSummary};
use cloudai_domain::Driver;

#[derive(Args, Debug)]
pub struct TasksArgs {
    /// The master's HTTP API.
    #[arg(long, value_parser = parse_url)]
    pub api: String,
    #[arg(long, default_value_t = 1000)]
    pub tasks: usize,
    /// Submissions in flight at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// process or docker.
    #[arg(long, default_value = "process", value_parser = parse_driver)]
    pub driver: Driver,
    /// Image for docker tasks.
    #[arg(long)]
    pub image: Option<String>,
    /// Memory per task in MB (Docker refuses limits under 6 MB).
    #[arg(long, default_value_t = 16)]
    pub memory_mb: u64,
    /// Give up waiting after this long.
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub timeout: Duration,
}

fn parse_driver(raw: &str) -> Result<Driver, String> {
    raw.parse::<Driver>().map_err(|e| e.to_string())
}

fn finished(summary: &TaskSummary) -> (u64, u64, u64) {
    (summary.completed, summary.failed, summary.cancelled)
}

pub async fn run(args: TasksArgs) -> anyhow::Result<Value> {
    if args.tasks == 0 {
        bail!("--tasks must be at least 1");
    }
    let client = ApiClient::new(&args.api);
    let before = client.tasks_summary().await.context("reading the task summary")?;
    let (c0, f0, x0) = finished(&before);
    let mut body = SubmitTask::process(vec!["true".into()], 0.01, args.memory_mb);
    body.driver = Some(args.driver);
    body.docker_image.clone_from(&args.image);
    let histogram = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?));
    eprintln!("submitting {} tasks ({} in flight)", args.tasks, args.concurrency);
    let start = Instant::now();
    let errors = futures::stream::iter(0..args.tasks)
        .map(|_| {
            let (client, body, histogram) = (client.clone(), body.clone(), histogram.clone());
            async move {
                let t0 = Instant::now();
                let result = client.submit_task(&body).await;
                let _ = histogram.lock().record(t0.elapsed().as_micros().max(1) as u64);
                result.is_err()
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .filter(|failed| futures::future::ready(*failed))
        .count()
        .await;
    let submitted_in = start.elapsed().as_secs_f64();
    let accepted = (args.tasks - errors) as u64;
    eprintln!("submitted in {submitted_in:.2}s; waiting for {accepted} tasks to end");
    let (completed, failed) = loop {
        let now = client.tasks_summary().await?;
        let (c, f, x) = finished(&now);
        let (c, f, x) = (c - c0.min(c), f - f0.min(f), x - x0.min(x));
        if c + f + x >= accepted {
            break (c, f);
        }
        if start.elapsed() > args.timeout {
            bail!("timed out: {c} completed, {f} failed of {accepted}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let elapsed = start.elapsed().as_secs_f64();
    let h = histogram.lock();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    Ok(json!({
        "bench": "tasks",
        "driver": args.driver.as_str(),
        "tasks": args.tasks,
        "concurrency": args.concurrency,
        "submit_errors": errors,
        "completed": completed,
        "failed": failed,
        "elapsed_s": elapsed,
        "tasks_per_sec": accepted as f64 / elapsed,
        "submit_per_sec": args.tasks as f64 / submitted_in,
        "submit_p50_ms": ms(0.5),
        "submit_p99_ms": ms(0.99),
    }))
}
