//! Every acknowledgement means durable. With the master's disk full for real (a small tmpfs
//! filled with a file), a submit, a cancel and a worker's final report are refused with an
//! error that says the disk is full, nothing changes, and once there is room again (and after
//! a restart on the same folder) nothing acknowledged is lost and nothing runs twice.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A 16 MiB tmpfs as the master's data folder; unmounted when dropped.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    /// `None` (with a message) where mounting is not permitted, unless `CI` is set.
    fn mount() -> Option<Self> {
        let dir = tempfile::tempdir().expect("tempdir").keep();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", "size=16m", "tmpfs"]).arg(&dir).output();
        match out {
            Ok(o) if o.status.success() => Some(Self { dir }),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                    Err(e) => e.to_string(),
                };
                if std::env::var_os("CI").is_some() {
                    panic!("cannot mount a tmpfs for the full-disk tests (they need root): {why}");
                }
                eprintln!("SKIPPED: cannot mount a tmpfs for the full-disk tests (run as root): {why}");
                None
            }
        }
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    /// Writes a file until the filesystem has no room left.
    fn fill(&self) {
        let mut file = std::fs::File::create(self.filler()).expect("create filler");
        let chunk = vec![0u8; 64 * 1024];
        loop {
            match file.write_all(&chunk).and_then(|()| file.sync_data()) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        // The last partial pages too.
        for _ in 0..64 {
            if file.write_all(&[0u8; 512]).is_err() {
                break;
            }
        }
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).expect("remove filler");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

fn config_on(dir: &Path) -> cloudai_master::MasterConfig {
    let mut config = master_config(Duration::from_secs(5));
    config.database_url = format!("sqlite://{}", dir.join("cloudai.db").display());
    config
}

async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("JSON answer"))
}

fn assert_disk_full(what: &str, (status, body): &(u16, Value)) {
    assert_eq!(*status, 507, "{what}: {body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(error.contains("disk is full"), "{what}: {body}");
}

async fn events(api: &str, id: &str) -> Vec<String> {
    let (status, events) = get_json(&format!("{api}/api/tasks/{id}/events")).await;
    assert_eq!(status, 200, "{events}");
    events.as_array().expect("events").iter().filter_map(|e| e["to"].as_str().map(String::from)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_submit_and_cancel_and_changes_nothing() {
    let Some(disk) = SmallDisk::mount() else { return };
    let master = start_master(config_on(&disk.dir)).await;
    let api = format!("http://{}", master.http_addr);
    // No worker yet: both stay pending.
    let kept = submit(&api, shell_task("echo kept")).await;
    let kept = kept["task_id"].as_str().expect("id").to_string();
    let doomed = submit(&api, shell_task("echo doomed")).await;
    let doomed = doomed["task_id"].as_str().expect("id").to_string();

    disk.fill();
    let client = http_client();
    let refused = send(client.post(format!("{api}/api/tasks")).json(&shell_task("echo never"))).await;
    assert_disk_full("submit", &refused);
    let refused = send(client.delete(format!("{api}/api/tasks/{kept}"))).await;
    assert_disk_full("cancel", &refused);
    let refused = send(client.delete(format!("{api}/api/tasks/{doomed}"))).await;
    assert_disk_full("cancel", &refused);
    assert_eq!(
        get_task(&api, &kept).await["status"],
        "pending",
        "a cancel that was not written changed nothing"
    );
    let (_, tasks) = get_json(&format!("{api}/api/tasks")).await;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(2), "the refused submit left no task: {tasks}");

    // Room again: the retried cancel works, and the other task is still queued for placement.
    disk.free();
    let (status, cancelled) = send(client.delete(format!("{api}/api/tasks/{doomed}"))).await;
    assert_eq!((status, &cancelled["status"]), (200, &Value::from("cancelled")), "{cancelled}");
    let worker = InProcessWorker::start(worker_config(master.grpc_addr, "roomy"));
    wait_status(&api, &kept, "completed").await;
    worker.stop().await;

    // After a restart on the same folder the store says the same.
    master.shutdown().await;
    let master = start_master(config_on(&disk.dir)).await;
    let api = format!("http://{}", master.http_addr);
    assert_eq!(get_task(&api, &doomed).await["status"], "cancelled");
    assert_eq!(events(&api, &doomed).await, ["pending", "cancelled"]);
    let kept_task = get_task(&api, &kept).await;
    assert_eq!((&kept_task["status"], &kept_task["attempt"]), (&Value::from("completed"), &Value::from(1)));
    let (_, tasks) = get_json(&format!("{api}/api/tasks")).await;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(2), "{tasks}");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_final_report_to_a_full_disk_is_retried_until_durable_and_the_task_runs_once() {
    let Some(disk) = SmallDisk::mount() else { return };
    let (http_port, grpc_port) = (free_port(), free_port());
    let master = start_master_on(config_on(&disk.dir), http_port, grpc_port).await;
    let api = format!("http://{}", master.http_addr);
    let worker = InProcessWorker::start(worker_config(master.grpc_addr, "steady"));

    let scratch = tempfile::tempdir().expect("tempdir");
    // Writable by the task, which runs as nobody when the tests run as root.
    std::fs::set_permissions(scratch.path(), std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .expect("chmod");
    let (runs, go) = (scratch.path().join("runs"), scratch.path().join("go"));
    let script = format!(
        "echo run >> {runs}; while [ ! -e {go} ]; do sleep 0.05; done; echo exited >> {runs}",
        runs = runs.display(),
        go = go.display()
    );
    let task = submit(&api, shell_task(&script)).await;
    let id = task["task_id"].as_str().expect("id").to_string();
    wait_status(&api, &id, "running").await;

    disk.fill();
    std::fs::write(&go, "").expect("let the task finish");
    let read_runs = || std::fs::read_to_string(&runs).unwrap_or_default();
    wait_until(DEADLINE, "the task to exit", || async { read_runs().contains("exited").then_some(()) }).await;
    // Its report cannot be written: the master must not show (or acknowledge) the end.
    for _ in 0..10 {
        assert_eq!(get_task(&api, &id).await["status"], "running", "an end that is not durable is not shown");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A restart with room again: the worker's re-sent report lands; nothing ran twice.
    master.shutdown().await;
    disk.free();
    let master = start_master_on(config_on(&disk.dir), http_port, grpc_port).await;
    let done = wait_status(&api, &id, "completed").await;
    assert_eq!(done["attempt"], 1, "{done}");
    assert_eq!(read_runs(), "run\nexited\n", "the task ran once");
    assert_eq!(events(&api, &id).await, ["pending", "queued", "running", "completed"]);
    worker.stop().await;
    master.shutdown().await;
}
