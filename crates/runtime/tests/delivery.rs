//! Delivery to the master: retries while it is away, the bounded log buffer,
//! stale tasks, and shutdown.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

#[tokio::test]
async fn reports_and_logs_survive_an_unreachable_master() {
    let h = Harness::new();
    h.link.set_unreachable(true);
    let done_file = h.scratch("done");
    let mut cmd = start("t-away", &["sh", "-c", "echo out; echo err >&2; touch \"$DONE\""]);
    cmd.env = BTreeMap::from([("DONE".to_owned(), done_file.display().to_string())]);
    h.runtime.start(cmd);
    wait_until("the task to run while the master is away", || exists(&done_file)).await;
    let refused = h.link.refused_calls();
    wait_until("a few retries", || h.link.refused_calls() >= refused + 3).await;
    assert!(h.link.statuses("t-away").is_empty());

    h.link.set_unreachable(false);
    let done = h.finished("t-away").await;
    assert_eq!(done.status, "completed");
    assert_eq!(h.link.statuses("t-away"), ["queued", "running", "completed"]);
    assert_eq!(h.link.stdout("t-away"), "out\n");
    assert_eq!(h.link.stderr("t-away"), "err\n");
    let last = h.link.final_report("t-away").expect("final report");
    assert_eq!(last.log_bytes_before, "out\nerr\n".len());
}

#[tokio::test]
async fn bounded_buffer_drops_the_oldest_output_with_a_marker() {
    const LIMIT: usize = 1000;
    const BATCH: usize = 200;
    const TOTAL: usize = 10_000;
    let h = Harness::with(|c| {
        c.log_buffer_bytes = LIMIT;
        c.log_batch_bytes = BATCH;
    });
    h.link.set_unreachable(true);
    let done_file = h.scratch("done");
    // 1000 lines of 10 bytes, each numbered so order can be checked. Pipe writes this small are
    // atomic and the limits are multiples of 10, so whole lines are kept or dropped.
    let script = "i=1000; while [ $i -lt 2000 ]; do echo \"line-$i\"; i=$((i+1)); done; touch \"$DONE\"";
    let mut cmd = start("t-flood", &["sh", "-c", script]);
    cmd.env = BTreeMap::from([("DONE".to_owned(), done_file.display().to_string())]);
    h.runtime.start(cmd);
    wait_until("the task to write its output", || exists(&done_file)).await;
    // Ended, so all of its output is in the buffer: one overflow, one marker.
    wait_until("the task to end", || h.runtime.running_tasks().is_empty()).await;
    let refused = h.link.refused_calls();
    wait_until("a few retries", || h.link.refused_calls() >= refused + 3).await;

    h.link.set_unreachable(false);
    assert_eq!(h.finished("t-flood").await.status, "completed");
    let stdout = h.link.stdout("t-flood");
    // Markers may come more than once (an overflow can happen before the first batch goes).
    let mut kept = String::new();
    let mut dropped = 0;
    for line in stdout.split_inclusive('\n') {
        match line.strip_prefix("[cloudai: ").and_then(|m| m.strip_suffix(" bytes of output dropped]\n")) {
            Some(n) => dropped += n.parse::<usize>().unwrap_or_else(|_| panic!("bad marker {line:?}")),
            None => kept.push_str(line),
        }
    }
    assert!(dropped > 0, "a drop marker: {stdout:?}");
    assert_eq!(kept.len() + dropped, TOTAL, "every byte is shipped or counted as dropped: {stdout:?}");
    // At most the buffer plus the batch that was in flight when the master went away.
    assert!(kept.len() <= LIMIT + BATCH, "kept {} bytes", kept.len());
    assert!(kept.ends_with("line-1999\n"), "the newest output is kept");
    let numbers: Vec<u32> =
        kept.lines().map(|l| l.trim_start_matches("line-").parse().expect("a whole line")).collect();
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "order kept: {numbers:?}");
}

#[tokio::test]
async fn stop_task_kills_without_a_final_report() {
    let h = Harness::new();
    h.runtime.start(start("t-stale", &["sh", "-c", "echo $$; sleep 1000 & sleep 1000"]));
    let pgid = h.pgid("t-stale").await;
    wait_until("running reported", || h.link.has_status("t-stale", "running")).await;
    h.runtime.stop_task("t-stale");
    assert!(h.runtime.running_tasks().is_empty(), "a stale task is no longer reported as running");
    wait_group_gone(pgid).await;
    wait_until("the working folder to be removed", || !exists(&h.workdir("t-stale"))).await;
    // A barrier: a later task's completion, then the stale one must still have no final report.
    h.runtime.start(start("t-barrier", &["true"]));
    h.finished("t-barrier").await;
    assert_eq!(h.link.statuses("t-stale"), ["queued", "running"]);
}

#[tokio::test]
async fn ack_keep_running_false_stops_the_task() {
    let h = Harness::new();
    let pid_file = h.scratch("pid");
    h.link.mark_stale("t-unwanted");
    let mut cmd = start("t-unwanted", &["sh", "-c", "echo $$ > \"$PIDFILE\"; exec sleep 1000"]);
    cmd.env = BTreeMap::from([("PIDFILE".to_owned(), pid_file.display().to_string())]);
    h.runtime.start(cmd);
    wait_until("the master to see the task queued", || h.link.has_status("t-unwanted", "queued")).await;
    // Whether or not the process got to start, it is stopped and its folder removed.
    wait_until("the task to be cleaned up", || {
        h.runtime.running_tasks().is_empty() && !exists(&h.workdir("t-unwanted"))
    })
    .await;
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        let pid = nix::unistd::Pid::from_raw(pid.trim().parse().expect("pid"));
        wait_group_gone(pid).await;
    }
    h.runtime.start(start("t-barrier", &["true"]));
    h.finished("t-barrier").await;
    assert!(h.link.final_report("t-unwanted").is_none());
}

#[tokio::test]
async fn shutdown_stops_tasks_and_reports_them_interrupted() {
    let h = Harness::with(|c| c.default_grace = Duration::from_millis(300));
    h.runtime.start(start("t-long", &["sh", "-c", "trap '' TERM; echo $$; sleep 1000"]));
    let pgid = h.pgid("t-long").await;
    h.shutdown.cancel();
    tokio::time::timeout(DEADLINE, h.runtime.shutdown()).await.expect("shutdown within its deadline");
    let done = h.link.final_report("t-long").expect("final report delivered before shutdown returns").report;
    // Not the task's fault: the master runs it again elsewhere without spending a retry.
    assert_eq!(done.status, "interrupted (worker stopping)");
    assert_eq!(done.error, "worker shut down");
    wait_group_gone(pgid).await;

    h.runtime.start(start("t-late", &["true"]));
    let late = h.finished("t-late").await;
    assert_eq!(late.status, "interrupted (worker stopping)");
    assert_eq!(late.error, "the worker is shutting down");
}

#[tokio::test]
async fn shutdown_gives_up_on_an_unreachable_master() {
    let h = Harness::with(|c| {
        c.default_grace = Duration::from_millis(100);
        c.shutdown_flush_timeout = Duration::from_millis(300);
    });
    h.runtime.start(start("t-lost", &["sh", "-c", "echo $$; sleep 1000"]));
    let pgid = h.pgid("t-lost").await;
    h.link.set_unreachable(true);
    tokio::time::timeout(DEADLINE, h.runtime.shutdown()).await.expect("shutdown within its deadline");
    wait_group_gone(pgid).await;
    assert!(h.link.final_report("t-lost").is_none());
}

#[tokio::test]
async fn output_the_master_refuses_is_dropped_not_retried() {
    for code in [tonic::Code::NotFound, tonic::Code::FailedPrecondition] {
        let h = Harness::with(|c| c.log_batch_interval = Duration::from_millis(20));
        let task = format!("t-refused-{}", code as i32);
        h.link.refuse_output(&task, code);
        // Output in many batches: a line, then a pause, ten times.
        let script = "i=0; while [ $i -lt 10 ]; do echo \"line $i\"; sleep 0.1; i=$((i+1)); done";
        h.runtime.start(start(&task, &["sh", "-c", script]));
        let done = h.finished(&task).await;
        assert_eq!(done.status, "completed", "the task ends as it would have: {code:?}");
        assert_eq!(h.link.stdout(&task), "", "nothing was taken");
        assert_eq!(h.link.output_calls(), 1, "{code:?}: one refusal stops the shipping, no retries");
    }
}

#[tokio::test]
async fn fencing_stops_stop_tasks_with_a_reason_and_leaves_keep_tasks_running() {
    let h = Harness::new();
    h.runtime.start(start("t-stop", &["sh", "-c", "trap '' TERM; echo $$; sleep 1000"]));
    let mut keep = start("t-keep", &["sh", "-c", "echo started; sleep 1000"]);
    keep.on_disconnect = cloudai_domain::OnDisconnect::Keep;
    h.runtime.start(keep);
    let pgid = h.pgid("t-stop").await;
    wait_until("both tasks to run", || h.link.has_status("t-keep", "running")).await;

    // The master is out of reach: the reports wait, the stop does not.
    h.link.set_unreachable(true);
    let stopped = h.runtime.fence(Duration::from_millis(200), "no heartbeat acknowledged for 20s");
    assert_eq!(stopped, 1, "only the task that must not run twice is stopped");
    wait_group_gone(pgid).await;
    let running: Vec<String> = h.runtime.running_tasks().into_iter().map(|t| t.task_id).collect();
    assert_eq!(running, ["t-keep"]);
    assert_eq!(h.runtime.ending_tasks(), ["t-stop"], "its report is still to be delivered");

    h.link.set_unreachable(false);
    let done = h.finished("t-stop").await;
    assert_eq!(done.status, "interrupted (fenced)");
    assert_eq!(done.error, "no heartbeat acknowledged for 20s");
    assert!(
        h.link.stderr("t-stop").contains("stopped by worker w1: no heartbeat acknowledged for 20s"),
        "the task's log says why: {:?}",
        h.link.stderr("t-stop")
    );
    assert!(h.runtime.ending_tasks().is_empty());
}

#[tokio::test]
async fn a_task_folder_that_cannot_be_made_is_the_workers_fault() {
    let h = Harness::new();
    // A file where the task folders go: no working folder can be made under it.
    let tasks = h.workdir("x").parent().expect("tasks dir").to_path_buf();
    std::fs::create_dir_all(tasks.parent().expect("data dir")).expect("data dir");
    let _ = std::fs::remove_dir_all(&tasks);
    std::fs::write(&tasks, b"not a folder").expect("file");
    for id in ["t-env-1", "t-env-2", "t-env-3"] {
        h.runtime.start(start(id, &["true"]));
        let done = h.finished(id).await;
        assert_eq!(done.status, "interrupted (environment)", "{done:?}");
        assert!(done.error.contains("cannot create working folder"), "{}", done.error);
    }
    let why = h.runtime.health().await.expect("unhealthy");
    assert!(why.contains("task folder"), "{why}");
    std::fs::remove_file(&tasks).expect("remove");
    let why = h.runtime.health().await.expect("still unhealthy from the recent failures");
    assert!(why.contains("3 tasks could not run here"), "{why}");
}
