//! The chaos suite: a master and workers, each in its own container on a private Docker
//! network, with TLS and tokens on, running tasks that record every run in a shared file; then
//! faults injected with `docker kill`, `docker network disconnect` and `docker pause`.
//!
//! It asserts what issue 12 asks: every task completed (or failed past its retries with the
//! reason), none lost, never two runs at once, none completed twice, finished work kept where
//! allowed, and recovery within its bounds. It prints a table (also written to
//! `target/chaos-table.md`) and then fails naming every assertion that did not hold.
//!
//! Without a Docker engine it prints `skipping: …` and passes, unless `CLOUDAI_REQUIRE_DOCKER=1`.
//! `CHAOS_PARALLEL` (default 4) is how many scenarios run at once.

#[path = "chaos/api.rs"]
mod api;
#[path = "chaos/cluster.rs"]
mod cluster;
#[path = "chaos/docker.rs"]
mod docker;
#[path = "chaos/ledger.rs"]
mod ledger;
#[path = "chaos/scenarios.rs"]
mod scenarios;
#[path = "chaos/verdict.rs"]
mod verdict;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use verdict::{Outcome, TABLE_HEAD};

type Scenario = Pin<Box<dyn Future<Output = Outcome> + Send>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos() {
    if !docker::available() {
        return;
    }
    let started = Instant::now();
    docker::remove_runs(None);
    let _guard = docker::RunGuard;
    let image = docker::build_image(std::path::Path::new(env!("CARGO_BIN_EXE_cloudai")))
        .await
        .expect("build the image");
    let size = docker::docker(&["image", "inspect", "-f", "{{.Size}}", &image]).await.expect("image size");
    let size_mb = size.parse::<f64>().unwrap_or(0.0) / 1e6;
    eprintln!("chaos: image {image} ({size_mb:.0} MB) built in {:.0} s", started.elapsed().as_secs_f64());

    // Longest first, so the waves end together.
    let runs: Vec<Scenario> = vec![
        Box::pin(scenarios::master_cut(image.clone())),
        Box::pin(scenarios::worker_partition(image.clone(), 60)),
        Box::pin(scenarios::worker_sigkill(image.clone())),
        Box::pin(scenarios::master_sigkill(image.clone())),
        Box::pin(scenarios::master_pause(image.clone())),
        Box::pin(scenarios::worker_partition(image.clone(), 12)),
        Box::pin(scenarios::read_only_worker(image.clone())),
        Box::pin(scenarios::nat_worker(image.clone())),
    ];
    let parallel = std::env::var("CHAOS_PARALLEL").ok().and_then(|v| v.parse().ok()).unwrap_or(4usize).max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut handles = Vec::new();
    for run in runs {
        let slots = slots.clone();
        handles.push(tokio::spawn(async move {
            let _slot = slots.acquire_owned().await.expect("semaphore");
            let outcome = run.await;
            eprintln!(
                "chaos: {} done in {:.0} s: {} failures",
                outcome.scenario,
                outcome.seconds,
                outcome.failures.len()
            );
            outcome
        }));
    }
    let mut outcomes = Vec::new();
    for handle in handles {
        outcomes.push(handle.await.expect("scenario task"));
    }

    let wall = started.elapsed().as_secs_f64();
    let mut table = format!("{TABLE_HEAD}\n");
    for o in &outcomes {
        table.push_str(&o.row());
        table.push('\n');
    }
    table.push_str(&format!(
        "\n{} scenarios, {parallel} at a time, in {wall:.0} s; image {size_mb:.0} MB.\n",
        outcomes.len()
    ));
    println!("\n{table}");
    let path = cluster::target_dir().join("chaos-table.md");
    if let Err(e) = std::fs::write(&path, &table) {
        eprintln!("chaos: cannot write {}: {e}", path.display());
    }
    let failures: Vec<String> = outcomes
        .iter()
        .flat_map(|o| o.failures.iter().map(move |f| format!("{}: {f}", o.scenario)))
        .collect();
    assert!(failures.is_empty(), "{} assertions did not hold:\n{}", failures.len(), failures.join("\n"));
}
