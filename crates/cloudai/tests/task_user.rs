//! Process tasks run with least privilege: as `nobody` under a root worker, each in a
//! private working folder, with `CLOUDAI_TASK_USER` to choose another user.

mod common;

use std::time::Duration;

use common::*;

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// `id -u nobody` / `id -g nobody`, as the system says.
fn id_of_nobody(flag: &str) -> String {
    let out = std::process::Command::new("id").args([flag, "nobody"]).output().expect("run id");
    assert!(out.status.success(), "this machine has no user nobody");
    String::from_utf8(out.stdout).expect("utf-8").trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_root_worker_runs_process_tasks_as_nobody_in_a_private_folder() {
    if !is_root() {
        eprintln!("skipped: only a worker running as root switches tasks to nobody");
        return;
    }
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let config = worker_config(master.grpc_addr, "w1");
    let data_dir = config.data_dir.clone();
    let worker = InProcessWorker::start(config);
    let api = format!("http://{}", master.http_addr);

    let task = submit(&api, shell_task("id -u; id -g; stat -c %a .")).await;
    let id = task["task_id"].as_str().expect("id");
    wait_status(&api, id, "completed").await;
    let expected = format!("{}\n{}\n700\n", id_of_nobody("-u"), id_of_nobody("-g"));
    assert_eq!(task_output(&api, id).await, expected);

    // Its folder is the only place in the worker's data folder it may write; the tasks
    // folder cannot even be listed, so other tasks' folders are not found there.
    let task = submit(&api, shell_task("touch ../../intruder; touch ../intruder; ls ..")).await;
    let id = task["task_id"].as_str().expect("id");
    wait_status(&api, id, "failed").await;
    let out = task_output(&api, id).await;
    assert_eq!(out.matches("Permission denied").count(), 3, "{out}");
    assert!(!data_dir.join("intruder").exists() && !data_dir.join("tasks/intruder").exists());
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test]
async fn an_unknown_task_user_stops_the_worker_naming_it() {
    let data = tempfile::tempdir().expect("tempdir");
    let data = data.path().display().to_string();
    let env = [
        ("CLOUDAI_TASK_USER", "cloudai-no-such-user"),
        ("CLOUDAI_DRIVERS", "process"),
        ("WORKER_DATA_DIR", data.as_str()),
        ("CLOUDAI_DATA_DIR", data.as_str()),
    ];
    for args in [
        &["worker"][..],
        &["dev", "--no-console", "--http-port", "127.0.0.1:0", "--grpc-port", "127.0.0.1:0"],
    ] {
        let mut worker = Proc::spawn(args, &env, None);
        let code = worker.wait_exit(DEADLINE).await;
        worker.wait_for_line("error:").await;
        let out = worker.output();
        assert_eq!(code, Some(1), "{args:?}: {out}");
        assert!(out.contains("unknown CLOUDAI_TASK_USER \"cloudai-no-such-user\""), "{args:?}: {out}");
    }
}

#[tokio::test]
async fn a_root_worker_told_to_run_tasks_as_root_warns() {
    if !is_root() {
        eprintln!("skipped: only a worker running as root may run tasks as root");
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let data = data.path().display().to_string();
    // No master is running: the user is resolved before the worker registers.
    let env =
        [("CLOUDAI_TASK_USER", "root"), ("CLOUDAI_DRIVERS", "process"), ("WORKER_DATA_DIR", data.as_str())];
    let worker =
        Proc::spawn(&["worker", "--master-addr", &format!("http://127.0.0.1:{}", free_port())], &env, None);
    worker.wait_for_line("CLOUDAI_TASK_USER names the superuser").await;
    let line = worker.wait_for_line("process tasks run as this user").await;
    assert!(line.contains("user=\"root\"") || line.contains("user=root"), "{line}");
    assert!(line.contains("uid=0"), "{line}");
}

#[tokio::test]
async fn a_worker_that_is_not_root_cannot_run_tasks_as_someone_else() {
    if !is_root() {
        eprintln!("skipped: the test starts the worker as nobody, which needs root");
        return;
    }
    let uid: u32 = id_of_nobody("-u").parse().expect("uid");
    let gid: u32 = id_of_nobody("-g").parse().expect("gid");
    let mut worker = tokio::process::Command::new(bin());
    worker
        .args(["worker", "--drivers", "process", "--task-user", "root"])
        .env_remove("RUST_LOG")
        .env("WORKER_DATA_DIR", "/nonexistent")
        .uid(uid)
        .gid(gid);
    let out = tokio::time::timeout(DEADLINE, worker.output()).await.expect("exits").expect("runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("CLOUDAI_TASK_USER=root needs a worker running as root"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudai_dev_in_a_folder_nobody_cannot_enter_still_runs_tasks_as_nobody() {
    if !is_root() {
        eprintln!("skipped: only a root cloudai dev switches tasks to nobody");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    // As `cloudai dev` run as root from a checkout under /root (0700).
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let data = home.path().join("cloudai-data").display().to_string();
    let dev = Proc::spawn(
        &["dev", "--no-console", "--http-port", "127.0.0.1:0", "--grpc-port", "127.0.0.1:0"],
        &[("CLOUDAI_DATA_DIR", data.as_str())],
        None,
    );
    let line = dev.wait_for_line("HTTP API listening on").await;
    let api = format!("http://{}", line.split_whitespace().last().expect("address"));
    dev.wait_for_line("registered with master").await;
    let task = submit(&api, shell_task("id -u")).await;
    let id = task["task_id"].as_str().expect("id");
    wait_status(&api, id, "completed").await;
    assert_eq!(task_output(&api, id).await, format!("{}\n", id_of_nobody("-u")));
    assert!(dev.output().contains("their folders go to the temp dir"), "{}", dev.output());
}
