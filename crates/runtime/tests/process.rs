//! The runtime with the process driver and real processes.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use cloudai_domain::Driver;
use common::*;

#[tokio::test]
async fn echo_completes_with_its_output_shipped_first() {
    let h = Harness::new();
    h.runtime.start(start("t-echo", &["echo", "hello"]));
    let done = h.finished("t-echo").await;
    assert_eq!(done.status, "completed");
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.worker_id, "w1");
    assert_eq!(done.attempt, 1);
    assert_eq!(h.link.statuses("t-echo"), ["queued", "running", "completed"]);
    assert_eq!(h.link.stdout("t-echo"), "hello\n");
    let last = h.link.final_report("t-echo").expect("final report");
    assert_eq!(last.log_bytes_before, "hello\n".len(), "output must arrive before the final status");
    wait_until("the working folder to be removed", || !exists(&h.workdir("t-echo"))).await;
    wait_until("the task to leave the registry", || h.runtime.running_tasks().is_empty()).await;
}

#[tokio::test]
async fn nonzero_exit_fails_with_code_and_stderr() {
    let h = Harness::new();
    h.runtime.start(start("t-exit3", &["sh", "-c", "echo err >&2; exit 3"]));
    let done = h.finished("t-exit3").await;
    assert_eq!(done.status, "failed");
    assert_eq!(done.exit_code, Some(3));
    assert_eq!(done.error, "exited with code 3");
    assert_eq!(h.link.stderr("t-exit3"), "err\n");
    assert_eq!(h.link.stdout("t-exit3"), "");
}

#[tokio::test]
async fn env_gpus_and_task_id_are_visible() {
    let h = Harness::new();
    let mut cmd = start("t-env", &["sh", "-c", "echo $FOO $CUDA_VISIBLE_DEVICES $CLOUDAI_TASK_ID"]);
    cmd.env = BTreeMap::from([("FOO".to_owned(), "bar".to_owned())]);
    cmd.gpu_indices = vec![0, 2];
    h.runtime.start(cmd);
    assert_eq!(h.finished("t-env").await.status, "completed");
    assert_eq!(h.link.stdout("t-env"), "bar 0,2 t-env\n");

    h.runtime.start(start("t-nogpu", &["sh", "-c", "echo \"[${CUDA_VISIBLE_DEVICES-unset}]\""]));
    assert_eq!(h.finished("t-nogpu").await.status, "completed");
    assert_eq!(h.link.stdout("t-nogpu"), "[]\n");
}

#[tokio::test]
async fn runs_in_its_own_working_folder() {
    let h = Harness::new();
    h.runtime.start(start("t-pwd", &["pwd"]));
    assert_eq!(h.finished("t-pwd").await.status, "completed");
    assert_eq!(h.link.stdout("t-pwd"), format!("{}\n", h.workdir("t-pwd").display()));
    wait_until("the working folder to be removed", || !exists(&h.workdir("t-pwd"))).await;

    let keep = Harness::with(|c| c.keep_workdirs = true);
    keep.runtime.start(start("t-keep", &["sh", "-c", "echo data > out.txt"]));
    assert_eq!(keep.finished("t-keep").await.status, "completed");
    wait_until("the task to leave the registry", || keep.runtime.running_tasks().is_empty()).await;
    let kept = std::fs::read_to_string(keep.workdir("t-keep").join("out.txt")).expect("kept output file");
    assert_eq!(kept, "data\n");
}

#[tokio::test]
async fn cancel_stops_the_whole_process_group() {
    let h = Harness::new();
    h.runtime.start(start("t-cancel", &["sh", "-c", "echo $$; sleep 1000 & sleep 1000"]));
    let pgid = h.pgid("t-cancel").await;
    assert!(group_exists(pgid));
    let running = h.runtime.running_tasks();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].task_id, "t-cancel");
    assert_eq!(running[0].status.as_str(), "running");
    assert!(running[0].started_at > 0);

    // SIGTERM alone ends it: the final report comes well before the 60 s grace.
    h.runtime.cancel(cancel("t-cancel", Duration::from_secs(60)));
    let done = h.finished("t-cancel").await;
    assert_eq!(done.status, "cancelled");
    assert_eq!(done.error, "cancelled by user");
    assert_eq!(done.exit_code, Some(128 + 15));
    wait_group_gone(pgid).await;
    assert_eq!(h.link.statuses("t-cancel"), ["queued", "running", "cancelled"]);
    wait_until("no task running", || h.runtime.running_tasks().is_empty()).await;
}

#[tokio::test]
async fn cancel_kills_a_group_that_ignores_sigterm() {
    let h = Harness::new();
    // The trap is set before the pid is printed, so the cancel comes after it.
    h.runtime.start(start("t-stubborn", &["sh", "-c", "trap '' TERM; echo $$; sleep 1000 & sleep 1000"]));
    let pgid = h.pgid("t-stubborn").await;
    h.runtime.cancel(cancel("t-stubborn", Duration::from_millis(300)));
    let done = h.finished("t-stubborn").await;
    assert_eq!(done.status, "cancelled");
    assert_eq!(done.exit_code, Some(128 + 9));
    wait_group_gone(pgid).await;
}

#[tokio::test]
async fn cancel_of_an_unknown_task_is_a_no_op() {
    let h = Harness::new();
    h.runtime.cancel(cancel("t-nobody", Duration::ZERO));
    h.runtime.stop_task("t-nobody");
    h.runtime.start(start("t-after", &["true"]));
    assert_eq!(h.finished("t-after").await.status, "completed");
    assert!(h.link.statuses("t-nobody").is_empty());
}

#[tokio::test]
async fn missing_program_fails_with_a_clear_error() {
    let h = Harness::new();
    h.runtime.start(start("t-missing", &["cloudai-no-such-program", "x"]));
    let done = h.finished("t-missing").await;
    assert_eq!(done.status, "failed");
    assert_eq!(done.exit_code, None);
    assert_eq!(done.error, "cannot start \"cloudai-no-such-program\": No such file or directory");
    assert_eq!(h.link.statuses("t-missing"), ["queued", "failed"]);
}

#[tokio::test]
async fn unknown_driver_fails() {
    let h = Harness::new();
    let mut cmd = start("t-docker", &["echo", "hi"]);
    cmd.driver = Driver::Docker;
    h.runtime.start(cmd);
    let done = h.finished("t-docker").await;
    assert_eq!(done.status, "failed");
    assert_eq!(done.error, "driver \"docker\" is not enabled on this worker (enabled: process)");
    assert_eq!(h.link.statuses("t-docker"), ["failed"]);
}

#[tokio::test]
async fn invalid_task_id_fails_without_touching_the_disk() {
    let h = Harness::new();
    h.runtime.start(start("..", &["true"]));
    let done = h.finished("..").await;
    assert_eq!(done.status, "failed");
    assert!(done.error.starts_with("invalid task id"), "{}", done.error);
}

#[tokio::test]
async fn duplicate_start_is_ignored() {
    let h = Harness::new();
    let cmd = start("t-dup", &["sh", "-c", "echo $$; sleep 1000"]);
    h.runtime.start(cmd.clone());
    h.runtime.start(cmd.clone());
    let pgid = h.pgid("t-dup").await;
    h.runtime.start(cmd.clone());
    assert_eq!(h.runtime.running_tasks().len(), 1);
    h.runtime.cancel(cancel("t-dup", Duration::ZERO));
    assert_eq!(h.finished("t-dup").await.status, "cancelled");
    wait_group_gone(pgid).await;
    wait_until("the task to leave the registry", || h.runtime.running_tasks().is_empty()).await;

    // Also once finished: the same attempt does not run again.
    h.runtime.start(cmd);
    h.runtime.start(start("t-barrier", &["true"]));
    h.finished("t-barrier").await;
    assert_eq!(h.link.statuses("t-dup"), ["queued", "running", "cancelled"]);
    assert_eq!(h.link.stdout("t-dup").lines().count(), 1, "one process only");
}

#[tokio::test]
async fn newer_attempt_replaces_the_running_one() {
    let h = Harness::new();
    h.runtime.start(start("t-retry", &["sh", "-c", "echo $$; sleep 1000"]));
    let pgid = h.pgid("t-retry").await;
    let mut second = start("t-retry", &["echo", "second"]);
    second.attempt = 2;
    h.runtime.start(second);
    let done = h.finished("t-retry").await;
    assert_eq!(done.attempt, 2);
    assert_eq!(done.status, "completed");
    wait_group_gone(pgid).await;
    let attempts: Vec<_> =
        h.link.reports("t-retry").iter().map(|r| (r.report.attempt, r.report.status.clone())).collect();
    assert!(!attempts.iter().any(|(a, s)| *a == 1 && s != "queued" && s != "running"), "{attempts:?}");
}

#[tokio::test]
async fn runs_as_the_task_user_in_a_private_folder() {
    let user = cloudai_runtime::TaskUser::resolve(None).expect("default task user");
    if !user.switches() {
        eprintln!("note: not root, so tasks run as the worker's own user; the switch is not exercised");
    }
    let h = Harness::new();
    let script = "id -u; id -g; id -G; stat -c '%a %u' .; echo \"$HOME $USER $LOGNAME\"";
    h.runtime.start(start("t-user", &["sh", "-c", script]));
    assert_eq!(h.finished("t-user").await.status, "completed");
    let workdir = h.workdir("t-user");
    let expected = format!(
        "{uid}\n{gid}\n{gid}\n700 {uid}\n{home} {name} {name}\n",
        uid = user.uid(),
        gid = user.gid(),
        home = user.home().unwrap_or(&workdir).display(),
        name = user.name(),
    );
    if user.switches() {
        // The worker's supplementary groups are gone too: `id -G` lists the primary group alone.
        assert_eq!(h.link.stdout("t-user"), expected);
    } else {
        // A worker's own user keeps its groups.
        let out = h.link.stdout("t-user");
        let lines: Vec<&str> = out.lines().collect();
        let want: Vec<&str> = expected.lines().collect();
        assert_eq!((lines[0], lines[1], lines[3], lines[4]), (want[0], want[1], want[3], want[4]), "{out}");
    }

    // The task's own variables win.
    let mut cmd = start("t-home", &["sh", "-c", "echo \"$HOME $USER\""]);
    cmd.env = BTreeMap::from([("HOME".to_owned(), "/srv".to_owned()), ("USER".to_owned(), "me".to_owned())]);
    h.runtime.start(cmd);
    assert_eq!(h.finished("t-home").await.status, "completed");
    assert_eq!(h.link.stdout("t-home"), "/srv me\n");
}

#[tokio::test]
async fn a_task_writes_only_in_its_own_folder() {
    if !nix::unistd::Uid::effective().is_root() {
        eprintln!("skipped: tasks run as the worker's own user unless the worker is root");
        return;
    }
    let h = Harness::new();
    // The data folder and the tasks folder are the worker's; the tasks folder cannot be listed.
    let script = "touch mine && echo wrote mine; \
                  touch ../intruder 2>&1; touch ../../intruder 2>&1; ls .. >/dev/null 2>&1 || echo cannot list";
    h.runtime.start(start("t-confined", &["sh", "-c", script]));
    assert_eq!(h.finished("t-confined").await.status, "completed");
    let out = h.link.stdout("t-confined");
    assert!(out.starts_with("wrote mine\n"), "{out}");
    assert_eq!(out.matches("Permission denied").count(), 2, "{out}");
    assert!(out.ends_with("cannot list\n"), "{out}");
    assert!(!exists(&h.data_dir.join("intruder")) && !exists(&h.data_dir.join("tasks").join("intruder")));
}
