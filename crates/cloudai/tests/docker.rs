//! Docker tasks through the master: a container task end to end, and a worker
//! without a reachable engine never getting docker tasks.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::json;

/// Whether the Docker engine answers; with `CLOUDAI_REQUIRE_DOCKER=1` its absence fails the test.
fn docker_available() -> bool {
    let ok = Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
    if !ok {
        if std::env::var("CLOUDAI_REQUIRE_DOCKER").as_deref() == Ok("1") {
            panic!("CLOUDAI_REQUIRE_DOCKER=1 but the Docker engine is not reachable");
        }
        eprintln!("skipping: Docker engine not reachable");
    }
    ok
}

/// A tiny image from Debian's busybox-static, imported without any registry.
fn busybox_image() -> String {
    let image = "cloudai-test/e2e-busybox:1".to_string();
    if Command::new("docker").args(["image", "inspect", &image]).output().is_ok_and(|o| o.status.success()) {
        return image;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::copy("/bin/busybox", bin.join("busybox")).expect("busybox-static is installed (/bin/busybox)");
    for applet in ["sh", "echo", "sleep", "cat", "true", "false", "ls"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink");
    }
    let script = format!("tar -C {} -c . | docker import - {image}", root.path().display());
    let out = Command::new("sh").args(["-c", &script]).output().expect("docker import");
    assert!(out.status.success(), "docker import: {}", String::from_utf8_lossy(&out.stderr));
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_task_runs_through_the_master() {
    if !docker_available() {
        return;
    }
    let image = tokio::task::spawn_blocking(busybox_image).await.expect("image");
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    let mut config = sized_worker(master.grpc_addr, "docker-worker", 2.0, None);
    config.drivers = vec![cloudai_domain::Driver::Docker];
    let worker = InProcessWorker::start(config);
    wait_until(DEADLINE, "the worker to advertise docker", || async {
        let (status, w) = get_json(&format!("{api}/api/workers/docker-worker")).await;
        (status == 200 && w["drivers"] == json!(["docker"])).then_some(())
    })
    .await;

    let task = submit(
        &api,
        json!({
            "docker_image": image, "command": ["sh", "-c", "echo from a container; echo to stderr >&2"],
            "cpu_required": 0.5, "memory_required": 64
        }),
    )
    .await;
    let id = task["task_id"].as_str().expect("id");
    let done = wait_status(&api, id, "completed").await;
    assert_eq!(done["exit_code"], 0);
    let out = task_output(&api, id).await;
    assert!(out.contains("from a container\n") && out.contains("to stderr\n"), "{out}");

    let failing = submit(&api, json!({"docker_image": image, "command": ["sh", "-c", "exit 4"], "cpu_required": 0.5, "memory_required": 64})).await;
    let failed = wait_status(&api, failing["task_id"].as_str().expect("id"), "failed").await;
    assert_eq!(failed["exit_code"], 4);

    let (_, on_worker) = get_json(&format!("{api}/api/workers/docker-worker/tasks")).await;
    assert_eq!(on_worker["tasks"].as_array().map(Vec::len), Some(2), "{on_worker}");
    // The containers are gone once their tasks ended.
    let ps = Command::new("docker")
        .args(["ps", "-a", "--filter", "label=cloudai.worker_id=docker-worker", "-q"])
        .output()
        .expect("docker ps");
    assert!(String::from_utf8_lossy(&ps.stdout).trim().is_empty(), "containers left behind");
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_docker_never_receives_docker_tasks() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    let data = tempfile::tempdir().expect("tempdir");
    let env = [
        ("MASTER_ADDR", format!("http://{}", master.grpc_addr)),
        ("WORKER_ID", "no-docker".to_string()),
        ("HEARTBEAT_INTERVAL", "200ms".to_string()),
        ("CLOUDAI_DRIVERS", "process,docker".to_string()),
        ("DOCKER_HOST", "unix:///nonexistent/docker.sock".to_string()),
        ("WORKER_DATA_DIR", data.path().display().to_string()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let worker = Proc::spawn(&["worker"], &env, None);
    let warning = worker.wait_for_line("docker driver disabled").await;
    assert!(warning.contains("Docker engine"), "the worker says why: {warning}");
    let w = wait_until(DEADLINE, "the worker to register", || async {
        let (status, w) = get_json(&format!("{api}/api/workers/no-docker")).await;
        (status == 200).then_some(w)
    })
    .await;
    assert_eq!(w["drivers"], json!(["process"]), "only working drivers are advertised");

    let docker_task = submit(
        &api,
        json!({"docker_image": "busybox", "command": ["true"], "cpu_required": 0.1, "memory_required": 8}),
    )
    .await;
    let process_task = submit(&api, shell_task("echo still works")).await;
    wait_status(&api, process_task["task_id"].as_str().expect("id"), "completed").await;
    let t = get_task(&api, docker_task["task_id"].as_str().expect("id")).await;
    assert_eq!(t["status"], "pending", "{t}");
    assert!(t["pending_reason"].as_str().is_some_and(|r| r.contains("docker")), "{t}");
    drop(worker);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_progress_reported_by_a_worker_is_recorded_on_the_task() {
    use cloudai_proto::v1 as pb;
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    // A worker speaking the protocol directly, to report what a pulling docker driver says.
    let mut client =
        pb::master_service_client::MasterServiceClient::connect(format!("http://{}", master.grpc_addr))
            .await
            .expect("connect");
    let register = pb::RegisterWorkerRequest {
        worker_id: "puller".into(),
        cpu_cores: 4.0,
        memory_mb: 4096,
        drivers: vec![pb::Driver::Docker.into()],
        protocol_version: cloudai_proto::PROTOCOL_VERSION,
        ..Default::default()
    };
    client.register_worker(register).await.expect("register");
    let task = submit(
        &api,
        json!({"docker_image": "127.0.0.1:5000/big:1", "cpu_required": 1, "memory_required": 64}),
    )
    .await;
    let id = task["task_id"].as_str().expect("id").to_string();
    wait_status(&api, &id, "queued").await;
    for message in ["pulling image 127.0.0.1:5000/big:1", "pulled image 127.0.0.1:5000/big:1 in 2.5 s"] {
        let report = pb::TaskStatusReport {
            worker_id: "puller".into(),
            task_id: id.clone(),
            attempt: 1,
            update: Some(pb::task_status_report::Update::Progress(pb::Progress { message: message.into() })),
            ..Default::default()
        };
        let ack = client.report_task_status(report).await.expect("report").into_inner();
        assert!(ack.keep_running);
    }
    let events = wait_until(DEADLINE, "the pull events", || async {
        let (_, events) = get_json(&format!("{api}/api/tasks/{id}/events")).await;
        let reasons: Vec<String> =
            events.as_array()?.iter().filter_map(|e| e["reason"].as_str().map(str::to_string)).collect();
        (reasons.len() >= 4).then_some(reasons)
    })
    .await;
    assert_eq!(events[2], "pulling image 127.0.0.1:5000/big:1", "{events:?}");
    assert!(events[3].starts_with("pulled image"), "{events:?}");
    assert_eq!(get_task(&api, &id).await["status"], "queued", "progress is not a status change");
    master.shutdown().await;
}
