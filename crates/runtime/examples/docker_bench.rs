//! Containers per second through [`DockerDriver`] (image check, create, start, logs,
//! stats, wait, inspect, remove: what the runtime does per task) against the same
//! containers driven directly with bollard (create, start, wait, remove), alternating
//! in one run. Prints one JSON line.
//!
//! `cargo run --release -p cloudai-runtime --example docker_bench -- 100`

#[path = "../tests/docker_support/image.rs"]
mod image;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{RemoveContainerOptionsBuilder, WaitContainerOptionsBuilder};
use cloudai_domain::TaskId;
use cloudai_runtime::{DockerDriver, DockerOptions, Driver, Launch};
use futures::StreamExt;

use crate::image::{BoxError, TEST_IMAGE, ensure_test_image};

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let containers: usize = match std::env::args().nth(1) {
        Some(n) => n.parse().map_err(|e| format!("containers: {e}"))?,
        None => 100,
    };
    let driver =
        DockerDriver::connect(DockerOptions { client_config: None, ..DockerOptions::default() }).await?;
    ensure_test_image(driver.client()).await?;
    let workdir = std::env::temp_dir();
    let run = std::process::id();
    let (mut through_driver, mut direct) = (Duration::ZERO, Duration::ZERO);
    for i in 0..containers {
        let launch = Launch {
            task_id: TaskId::parse(&format!("bench-{run}-{i}"))?,
            worker_id: format!("bench-{run}"),
            attempt: 1,
            image: TEST_IMAGE.to_owned(),
            command: vec!["true".to_owned()],
            env: BTreeMap::new(),
            gpu_indices: Vec::new(),
            cpu_required: 1.0,
            memory_required_mb: 64,
            workdir: workdir.clone(),
        };
        // Alternate which goes first, so neither always meets a warmer (or busier) engine.
        if i % 2 == 0 {
            through_driver += run_driver(&driver, &launch).await?;
            direct += run_direct(driver.client()).await?;
        } else {
            direct += run_direct(driver.client()).await?;
            through_driver += run_driver(&driver, &launch).await?;
        }
    }
    let driver_per_sec = containers as f64 / through_driver.as_secs_f64();
    let direct_per_sec = containers as f64 / direct.as_secs_f64();
    let overhead_percent = (through_driver.as_secs_f64() / direct.as_secs_f64() - 1.0) * 100.0;
    println!(
        "{{\"containers\":{containers},\"driver_per_sec\":{driver_per_sec:.2},\"direct_per_sec\":{direct_per_sec:.2},\"overhead_percent\":{overhead_percent:.1}}}"
    );
    Ok(())
}

/// One task through the driver, its output read as the runtime reads it.
async fn run_driver(driver: &DockerDriver, launch: &Launch) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let execution = driver.start(launch).await?;
    let mut output = execution.output;
    let drain = async { while output.recv().await.is_some() {} };
    let (exit, ()) = tokio::join!(execution.exit, drain);
    exit?;
    Ok(started.elapsed())
}

/// The same container with bollard alone.
async fn run_direct(docker: &Docker) -> Result<Duration, BoxError> {
    let started = Instant::now();
    let body = ContainerCreateBody {
        image: Some(TEST_IMAGE.to_owned()),
        cmd: Some(vec!["true".to_owned()]),
        ..Default::default()
    };
    let id = docker.create_container(None, body).await?.id;
    docker.start_container(&id, None).await?;
    let wait = WaitContainerOptionsBuilder::default().condition("not-running").build();
    if let Some(waited) = docker.wait_container(&id, Some(wait)).next().await {
        waited?;
    }
    docker.remove_container(&id, Some(RemoveContainerOptionsBuilder::default().force(true).build())).await?;
    Ok(started.elapsed())
}
