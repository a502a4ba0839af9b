//! Docker test support: the engine gate, the test image, a loopback registry, and
//! cleanup of a test's containers even when it fails.
#![allow(dead_code)]

pub mod image;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptionsBuilder, RemoveContainerOptionsBuilder};
use cloudai_domain::{Driver, TaskLaunch, WorkerId};
use cloudai_runtime::{DockerDriver, DockerOptions, error_chain};

use crate::common::{Harness, wait_until_within};

pub use self::image::TEST_IMAGE;

/// Docker is slower than a process: image pulls, container setup on a shared machine.
pub const DOCKER_DEADLINE: Duration = Duration::from_secs(60);
const REGISTRY_BINARY: &str = "/usr/bin/docker-registry";

fn required() -> bool {
    std::env::var("CLOUDAI_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// Skips the test (prints why) unless `CLOUDAI_REQUIRE_DOCKER=1`, which makes it fail.
pub fn skip(why: &str) {
    assert!(!required(), "CLOUDAI_REQUIRE_DOCKER=1 but {why}");
    eprintln!("skipping: {why}");
}

/// The driver on the local engine with the test image present, or `None` (skip) without an engine.
pub async fn engine() -> Option<DockerDriver> {
    let driver = match DockerDriver::connect(DockerOptions {
        client_config: None,
        ..DockerOptions::default()
    })
    .await
    {
        Ok(driver) => driver,
        Err(e) => {
            skip(&format!("Docker engine not reachable ({})", error_chain(&e)));
            return None;
        }
    };
    if let Err(e) = image::ensure_test_image(driver.client()).await {
        panic!("cannot create the test image: {e}");
    }
    Some(driver)
}

/// A worker id of its own per test, so tests running in parallel never see each other's containers.
pub fn worker_id(test: &str) -> String {
    format!("dt-{test}-{}", std::process::id())
}

/// A runtime with the docker driver under `worker_id`, plus cleanup of its containers.
pub fn harness(driver: &DockerDriver, worker_id: &str) -> (Harness, Cleanup) {
    let harness = Harness::with(|config| {
        config.worker_id = WorkerId::parse(worker_id).expect("worker id");
        config.drivers.clear();
        config.drivers.push((Driver::Docker, Arc::new(driver.clone())));
    });
    (harness, Cleanup { worker_id: worker_id.to_owned() })
}

pub fn docker_start(task_id: &str, image: &str, argv: &[&str]) -> TaskLaunch {
    let mut start = crate::common::start(task_id, argv);
    start.driver = Driver::Docker;
    start.image = image.to_owned();
    start
}

/// Containers of `worker_id` (all states).
pub async fn containers(docker: &Docker, worker_id: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![format!("cloudai.worker_id={worker_id}")])]);
    let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
    let list = docker.list_containers(Some(options)).await.expect("list containers");
    list.into_iter().filter_map(|c| c.id).collect()
}

/// Polls until the engine has no container of `worker_id` left.
pub async fn wait_no_containers(docker: &Docker, worker_id: &str) {
    let until = tokio::time::Instant::now() + DOCKER_DEADLINE;
    loop {
        let left = containers(docker, worker_id).await;
        if left.is_empty() {
            return;
        }
        assert!(tokio::time::Instant::now() < until, "containers of {worker_id} still there: {left:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn wait_docker(what: &str, condition: impl FnMut() -> bool) {
    wait_until_within(DOCKER_DEADLINE, what, condition).await;
}

/// Removes the test's containers when dropped, pass or fail.
pub struct Cleanup {
    pub worker_id: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let worker_id = self.worker_id.clone();
        // Its own thread and runtime: this may run inside (or after) the test's runtime.
        let cleaned = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async {
                let Ok(docker) = Docker::connect_with_local_defaults() else { return };
                let Ok(docker) = docker.negotiate_version().await else { return };
                for id in containers(&docker, &worker_id).await {
                    let options = RemoveContainerOptionsBuilder::default().force(true).build();
                    docker.remove_container(&id, Some(options)).await.ok();
                }
            });
        });
        cleaned.join().ok();
    }
}

/// Debian's `docker-registry` on a loopback port, storing in a temporary folder.
pub struct Registry {
    child: Child,
    pub addr: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// `None` (skipped) when the binary is missing.
    pub async fn start() -> Option<Self> {
        if !Path::new(REGISTRY_BINARY).exists() {
            skip(&format!("{REGISTRY_BINARY} missing (install Debian's docker-registry)"));
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n  secret: cloudai-test\n",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let child = Command::new(REGISTRY_BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = Self { child, addr, _dir: dir };
        let addr = registry.addr.clone();
        wait_docker("the registry to listen", || std::net::TcpStream::connect(&addr).is_ok()).await;
        Some(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}
