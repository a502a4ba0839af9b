//! The docker driver against the real engine. Without one the tests print
//! "skipping: Docker engine not reachable" and pass, unless `CLOUDAI_REQUIRE_DOCKER=1`.

mod common;
mod docker_support;

use std::collections::BTreeMap;
use std::time::Duration;

use bollard::query_parameters::{PushImageOptionsBuilder, RemoveImageOptionsBuilder, TagImageOptionsBuilder};
use cloudai_domain::TaskId;
use cloudai_runtime::{DockerDriver, DockerOptions, Driver, Launch, error_chain};
use futures::StreamExt;

use crate::common::cancel;
use crate::docker_support::{
    DOCKER_DEADLINE, Registry, TEST_IMAGE, containers, docker_start, engine, harness, wait_docker,
    wait_no_containers, worker_id,
};

/// Waits for the final report (Docker's deadline).
async fn finished(h: &common::Harness, task_id: &str) -> common::Report {
    wait_docker(&format!("{task_id} to finish"), || h.link.final_report(task_id).is_some()).await;
    h.link.final_report(task_id).map(|r| r.report).expect("final report")
}

#[tokio::test]
async fn container_completes_with_its_output_shipped() {
    let Some(driver) = engine().await else { return };
    let worker = worker_id("output");
    let (h, _cleanup) = harness(&driver, &worker);
    let mut start =
        docker_start("ok", TEST_IMAGE, &["sh", "-c", "echo hello $GREETING $CLOUDAI_TASK_ID; echo oops >&2"]);
    start.env.insert("GREETING".to_owned(), "world".to_owned());
    h.runtime.start(start);
    let report = finished(&h, "ok").await;
    assert_eq!(report.status, "completed", "{report:?}");
    assert_eq!(report.exit_code, Some(0));
    assert_eq!(h.link.stdout("ok"), "hello world ok\n");
    assert_eq!(h.link.stderr("ok"), "oops\n");
    assert_eq!(h.link.statuses("ok"), ["queued", "running", "completed"]);
    wait_no_containers(driver.client(), &worker).await;
}

#[tokio::test]
async fn nonzero_exit_fails_with_its_code() {
    let Some(driver) = engine().await else { return };
    let worker = worker_id("exit");
    let (h, _cleanup) = harness(&driver, &worker);
    h.runtime.start(docker_start("bad", TEST_IMAGE, &["sh", "-c", "echo failing >&2; exit 3"]));
    let report = finished(&h, "bad").await;
    assert_eq!(report.status, "failed");
    assert_eq!(report.exit_code, Some(3));
    assert_eq!(report.error, "exited with code 3");
    assert_eq!(h.link.stderr("bad"), "failing\n");
    wait_no_containers(driver.client(), &worker).await;
}

#[tokio::test]
async fn memory_limit_is_enforced() {
    let Some(driver) = engine().await else { return };
    let worker = worker_id("oom");
    let (h, _cleanup) = harness(&driver, &worker);
    // 64 MB in a shell variable, with a 16 MB limit and no swap.
    let script = r#"x=$(head -c 64000000 /dev/zero | tr "\0" a); echo ${#x}"#;
    let mut start = docker_start("oom", TEST_IMAGE, &["sh", "-c", script]);
    start.memory_required_mb = 16;
    h.runtime.start(start);
    let report = finished(&h, "oom").await;
    assert_eq!(report.status, "failed", "{report:?}");
    assert!(report.error.contains("out of memory"), "{report:?}");
    assert_eq!(report.exit_code, Some(137), "{report:?}");
    wait_no_containers(driver.client(), &worker).await;
}

#[tokio::test]
async fn cancel_stops_and_removes_the_container() {
    let Some(driver) = engine().await else { return };
    let worker = worker_id("cancel");
    let (h, _cleanup) = harness(&driver, &worker);
    // PID 1 of a container ignores SIGTERM without a handler: the kill after the grace ends it.
    h.runtime.start(docker_start("long", TEST_IMAGE, &["sleep", "300"]));
    wait_docker("the container to run", || h.link.has_status("long", "running")).await;
    assert_eq!(containers(driver.client(), &worker).await.len(), 1);
    h.runtime.cancel(cancel("long", Duration::from_millis(300)));
    let report = finished(&h, "long").await;
    assert_eq!(report.status, "cancelled", "{report:?}");
    wait_no_containers(driver.client(), &worker).await;
}

#[tokio::test]
async fn running_containers_report_their_usage() {
    let Some(driver) = engine().await else { return };
    let worker = worker_id("usage");
    let (h, _cleanup) = harness(&driver, &worker);
    h.runtime.start(docker_start("busy", TEST_IMAGE, &["sh", "-c", "while :; do :; done"]));
    wait_docker("cpu and memory figures", || {
        h.runtime
            .running_tasks()
            .iter()
            .any(|t| t.task_id == "busy" && t.cpu_percent > 5.0 && t.memory_bytes > 0)
    })
    .await;
    h.runtime.cancel(cancel("busy", Duration::from_millis(100)));
    assert_eq!(finished(&h, "busy").await.status, "cancelled");
    wait_no_containers(driver.client(), &worker).await;
}

#[tokio::test]
async fn unknown_image_fails_with_a_clear_error() {
    let Some(driver) = engine().await else { return };
    let worker = worker_id("noimage");
    let (h, _cleanup) = harness(&driver, &worker);
    // A loopback registry that is not there: no internet needed, fails at once.
    let image = "127.0.0.1:9/cloudai-test/missing:1";
    h.runtime.start(docker_start("ghost", image, &["true"]));
    let report = finished(&h, "ghost").await;
    assert_eq!(report.status, "failed");
    assert!(report.error.starts_with(&format!("cannot pull image {image:?}: ")), "{}", report.error);
    eprintln!("pull error: {}", report.error);
    assert!(containers(driver.client(), &worker).await.is_empty());
}

#[tokio::test]
async fn a_cancel_during_a_pull_stops_the_task_at_once() {
    let Some(driver) = engine().await else { return };
    let worker = worker_id("pullcancel");
    let (h, _cleanup) = harness(&driver, &worker);
    // A registry that accepts connections and never answers: the pull hangs.
    let registry = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = registry.local_addr().expect("addr").port();
    let connected = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let held = {
        let connected = connected.clone();
        tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = registry.accept().await {
                connected.store(true, std::sync::atomic::Ordering::SeqCst);
                open.push(conn);
            }
        })
    };
    let image = format!("127.0.0.1:{port}/cloudai-test/hang:1");
    h.runtime.start(docker_start("hang", &image, &["true"]));
    wait_docker("the engine to reach the registry", || connected.load(std::sync::atomic::Ordering::SeqCst))
        .await;

    h.runtime.cancel(cancel("hang", Duration::from_millis(100)));
    let started = std::time::Instant::now();
    let report = finished(&h, "hang").await;
    assert_eq!(report.status, "cancelled", "{report:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "cancelled only after {:?}", started.elapsed());
    assert!(containers(driver.client(), &worker).await.is_empty(), "no container was created");
    held.abort();
}

#[tokio::test]
async fn image_is_pulled_from_a_registry() {
    let Some(driver) = engine().await else { return };
    let Some(registry) = Registry::start().await else { return };
    let docker = driver.client();
    let image = format!("{}/cloudai-test/pulled", registry.addr);
    let tag = TagImageOptionsBuilder::default().repo(&image).tag("1").build();
    docker.tag_image(TEST_IMAGE, Some(tag)).await.expect("tag the test image");
    let mut push = docker.push_image(&image, Some(PushImageOptionsBuilder::default().tag("1").build()), None);
    while let Some(item) = push.next().await {
        let info = item.expect("push the test image");
        assert!(info.error_detail.is_none(), "push: {info:?}");
    }
    let reference = format!("{image}:1");
    let untag = RemoveImageOptionsBuilder::default().build();
    docker.remove_image(&reference, Some(untag), None).await.expect("remove the local copy");
    assert!(docker.inspect_image(&reference).await.is_err());

    let worker = worker_id("pull");
    let (h, _cleanup) = harness(&driver, &worker);
    h.runtime.start(docker_start("pulled", &reference, &["echo", "pulled"]));
    let report = finished(&h, "pulled").await;
    assert_eq!(report.status, "completed", "{report:?}");
    assert_eq!(h.link.stdout("pulled"), "pulled\n");
    // The pull is reported on the task: events (queued reports with a message) and log lines.
    let notes: Vec<String> =
        h.link.reports("pulled").into_iter().map(|r| r.report.message).filter(|m| !m.is_empty()).collect();
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert_eq!(notes[0], format!("pulling image {reference}"));
    assert!(notes[1].starts_with(&format!("pulled image {reference} in ")), "{notes:?}");
    let log = h.link.stderr("pulled");
    assert!(log.starts_with(&format!("[cloudai] pulling image {reference}\n")), "{log}");
    assert!(log.contains("[cloudai] pulled image"), "{log}");
    docker.remove_image(&reference, Some(RemoveImageOptionsBuilder::default().build()), None).await.ok();
}

#[tokio::test]
async fn a_restarted_runtime_adopts_a_running_container_once() {
    let Some(driver) = engine().await else { return };
    let worker = worker_id("adopt");
    // The first worker process lives on its own runtime, so it can die abruptly.
    let first =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let first_driver = first
        .spawn(DockerDriver::connect(DockerOptions { client_config: None, ..DockerOptions::default() }))
        .await
        .expect("join")
        .expect("connect");
    let (a, _cleanup) = harness(&first_driver, &worker);
    {
        let _in_first = first.enter();
        a.runtime.start(docker_start(
            "adopted",
            TEST_IMAGE,
            &["sh", "-c", "echo before; sleep 5; echo after"],
        ));
    }
    wait_docker("the container to run", || a.link.has_status("adopted", "running")).await;
    first.shutdown_background(); // the worker process dies; its container does not
    assert_eq!(containers(driver.client(), &worker).await.len(), 1);

    let (b, _cleanup_b) = harness(&driver, &worker);
    assert_eq!(b.runtime.adopt_existing().await, 1);
    let listed = b.runtime.running_tasks();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].task_id.as_str(), listed[0].status.as_str()), ("adopted", "running"));
    let report = finished(&b, "adopted").await;
    assert_eq!(report.status, "completed", "{report:?}");
    assert!(b.link.stdout("adopted").contains("after"), "{:?}", b.link.stdout("adopted"));
    wait_no_containers(driver.client(), &worker).await;
    let finals = |h: &common::Harness| {
        h.link.statuses("adopted").iter().filter(|s| *s != "queued" && *s != "running").count()
    };
    assert_eq!((finals(&a), finals(&b)), (0, 1), "exactly one final report");
    // A second adoption finds nothing left to report.
    assert_eq!(b.runtime.adopt_existing().await, 0);
}

#[tokio::test]
async fn a_container_that_ended_while_the_worker_was_away_reports_its_end() {
    let Some(driver) = engine().await else { return };
    let worker = worker_id("ended");
    let (h, _cleanup) = harness(&driver, &worker);
    let launch = Launch {
        task_id: TaskId::parse("ended").expect("task id"),
        worker_id: worker.clone(),
        attempt: 1,
        image: TEST_IMAGE.to_owned(),
        command: vec!["sh".to_owned(), "-c".to_owned(), "exit 7".to_owned()],
        env: BTreeMap::new(),
        gpu_indices: Vec::new(),
        cpu_required: 0.5,
        memory_required_mb: 32,
        workdir: h.workdir("ended"),
    };
    // Started by a worker that died before it saw the end.
    drop(driver.start(&launch).await.expect("start"));
    assert_eq!(h.runtime.adopt_existing().await, 1);
    let report = finished(&h, "ended").await;
    assert_eq!((report.status.as_str(), report.exit_code), ("failed", Some(7)), "{report:?}");
    wait_no_containers(driver.client(), &worker).await;
}

#[tokio::test]
async fn a_worker_without_docker_detects_it() {
    let missing = "unix:///nonexistent/cloudai/docker.sock";
    let options = DockerOptions { host: Some(missing.to_owned()), ..DockerOptions::default() };
    let error = error_chain(&DockerDriver::connect(options).await.expect_err("no engine there"));
    assert!(error.starts_with(&format!("cannot reach the Docker engine at {missing}: ")), "{error}");

    // A socket that accepts connections but never answers: the connect timeout decides.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("docker.sock");
    let _silent = tokio::net::UnixListener::bind(&path).expect("bind");
    let options = DockerOptions {
        host: Some(path.display().to_string()),
        connect_timeout: Duration::from_millis(300),
        ..DockerOptions::default()
    };
    let started = tokio::time::Instant::now();
    let error = error_chain(&DockerDriver::connect(options).await.expect_err("silent engine"));
    assert!(error.contains("cannot reach the Docker engine at unix://"), "{error}");
    assert!(error.contains("no answer within"), "{error}");
    assert!(started.elapsed() < DOCKER_DEADLINE);
}
