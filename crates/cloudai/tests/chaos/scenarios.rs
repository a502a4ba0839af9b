//! The faults, one scenario each, every one on a cluster of its own.
//!
//! Timing (see `cluster.rs`): a silent worker is inactive after 10 s and lost 15 s later, so a
//! fault shorter than 25 s must not re-queue anything, and a longer one must find the worker
//! already stopped its own tasks (never two runs at once).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use super::api::unix_ms;
use super::cluster::{
    Cluster, HEARTBEAT_INTERVAL, INACTIVITY_TIMEOUT, TASK_LOSS_GRACE, WorkerSpec, create_network,
};
use super::docker::docker;
use super::ledger::{Ledger, uptime};
use super::verdict::Outcome;

const WORKERS: [&str; 3] = ["w1", "w2", "w3"];
/// Tasks per scenario, as in the trial.
const TASKS: usize = 30;
/// How long the suite waits for tasks to start, and to end after the last fault.
const START: Duration = Duration::from_secs(60);
const SETTLE: Duration = Duration::from_secs(150);
/// Heartbeats after a partition heals or a pause ends: within 2 s.
const HEARTBEATS_BACK: f64 = 2.0;

/// Runs `body`, turning an error (a cluster that could not be set up, an API that stopped
/// answering) into a failure of the scenario.
async fn scenario<F>(name: &'static str, body: F) -> Outcome
where
    F: AsyncFnOnce(&mut Outcome) -> anyhow::Result<()>,
{
    let started = Instant::now();
    let mut outcome = Outcome::new(name);
    if let Err(e) = body(&mut outcome).await {
        outcome.fail(format!("{e:#}"));
    }
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome
}

async fn cluster(name: &str, image: &str) -> anyhow::Result<Cluster> {
    let mut c = Cluster::create(name, image).await?;
    c.start_master().await?;
    c.start_workers(&WORKERS).await?;
    Ok(c)
}

/// Every placed task of `worker`, as the master lists them.
fn placed_on<'a>(tasks: &'a [Value], ids: &[String], worker: &str) -> Vec<&'a Value> {
    tasks
        .iter()
        .filter(|t| t["worker_id"] == worker && ids.iter().any(|id| t["task_id"] == id.as_str()))
        .filter(|t| matches!(t["status"].as_str(), Some("queued" | "running")))
        .collect()
}

/// Tasks of `worker` whose work finished inside `[from, to]` (uptime seconds).
fn finished_during(ledger: &Ledger, ids: &[String], worker: &str, from: f64, to: f64) -> Vec<String> {
    ids.iter()
        .filter(|id| {
            ledger
                .runs_of(id)
                .iter()
                .any(|r| r.worker == worker && r.done.is_some_and(|d| d >= from && d <= to))
        })
        .cloned()
        .collect()
}

/// The latest sign of life, after `from`, of runs on `worker` that were alive at `from` and
/// never finished: when the worker stopped them (seconds after `from`).
fn stopped_after(ledger: &Ledger, ids: &[String], worker: &str, from: f64) -> Option<f64> {
    ids.iter()
        .flat_map(|id| ledger.runs_of(id).iter())
        .filter(|r| r.worker == worker && r.start < from && r.last >= from - 1.5 && r.done.is_none())
        .map(|r| r.last - from)
        .max_by(f64::total_cmp)
}

/// Worker SIGKILL: its tasks run elsewhere within INACTIVITY_TIMEOUT + TASK_LOSS_GRACE + 2 s.
pub async fn worker_sigkill(image: String) -> Outcome {
    scenario("worker SIGKILL", async |o: &mut Outcome| {
        let c = cluster("wkill", &image).await?;
        let work = c.submit_work(TASKS, |_| 20, |_| false).await?;
        c.wait_running(&work.ids, START).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let tasks = c.tasks().await?;
        let victims: Vec<String> = placed_on(&tasks, &work.ids, "w1")
            .iter()
            .filter_map(|t| t["task_id"].as_str().map(str::to_owned))
            .collect();
        docker(&["kill", "-s", "KILL", &c.worker("w1")]).await?;
        let killed = Instant::now();
        let bound = (INACTIVITY_TIMEOUT + TASK_LOSS_GRACE).as_secs_f64() + 2.0;
        let mut elsewhere = None;
        while killed.elapsed() < Duration::from_secs(60) {
            let tasks = c.tasks().await.unwrap_or_default();
            let moved = victims.iter().all(|id| {
                tasks.iter().any(|t| {
                    t["task_id"] == id.as_str()
                        && (t["status"] == "completed"
                            || (t["status"] == "running" && t["worker_id"] != "w1"))
                })
            });
            if moved {
                elsewhere = Some(killed.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        o.recovery(&format!("{} tasks running elsewhere", victims.len()), elsewhere, bound);
        let tasks = c.wait_final(&work.ids, SETTLE).await;
        // A worker killed between finishing a task and reporting it may run it again: allowed.
        o.judge(&work.ids, &tasks, &c.ledger(), false);
        Ok(())
    })
    .await
}

/// A worker cut off for `secs`: heartbeats within 2 s of the network's return; shorter than
/// the loss deadline, nothing re-runs and what finished meanwhile is kept; longer, the worker
/// stops its own tasks before the master re-queues them, and `keep` tasks are left running.
pub async fn worker_partition(image: String, secs: u64) -> Outcome {
    let name = if secs < 25 { "worker partition 12 s" } else { "worker partition 60 s" };
    scenario(name, async |o: &mut Outcome| {
        let c = cluster(&format!("part{secs}"), &image).await?;
        let short = secs < (INACTIVITY_TIMEOUT + TASK_LOSS_GRACE).as_secs();
        // Short: 8–30 s, so some finish during the partition. Long: `stop` tasks (even) outlive
        // the loss deadline; `keep` tasks (odd) finish during the partition.
        let work = if short {
            c.submit_work(TASKS, |i| 8 + (i as u32 % 12) * 2, |_| false).await?
        } else {
            c.submit_work(TASKS, |i| if i % 2 == 0 { 45 } else { 15 + (i as u32 % 5) * 4 }, |i| i % 2 == 1)
                .await?
        };
        if let Some(why) = &work.refused_keep {
            o.fail(format!("on_disconnect=keep refused, tasks submitted without it: {why}"));
        }
        c.wait_running(&work.ids, START).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let w1 = c.worker("w1");
        let from = uptime();
        c.disconnect(&w1).await?;
        tokio::time::sleep(Duration::from_secs(secs)).await;
        c.connect(&w1, &c.worker_ip(0)).await?;
        let (healed, healed_ms, to) = (Instant::now(), unix_ms(), uptime());
        let back = c.heartbeats_back(&["w1"], healed, healed_ms, Duration::from_secs(30)).await;
        o.recovery("heartbeats after the heal", back, HEARTBEATS_BACK);
        let tasks = c.wait_final(&work.ids, SETTLE).await;
        let ledger = c.ledger();
        o.judge(&work.ids, &tasks, &ledger, true);
        let kept = finished_during(&ledger, &work.ids, "w1", from, to);
        o.recovery.push(format!("{} finished during it", kept.len()));
        if short {
            if o.ran_twice > 0 {
                o.fail(format!(
                    "{} tasks ran again after a {secs} s partition, shorter than the loss deadline",
                    o.ran_twice
                ));
            }
        } else {
            let rerun_keep: Vec<&String> =
                work.keep.iter().filter(|id| ledger.runs_of(id).len() > 1).collect();
            if !rerun_keep.is_empty() {
                o.fail(format!("{} on_disconnect=keep tasks ran again: {rerun_keep:?}", rerun_keep.len()));
            }
            match stopped_after(&ledger, &work.ids, "w1", from) {
                Some(s) => o.recovery.push(format!("w1 stopped its tasks {s:.0} s in")),
                None => o.recovery.push("w1 stopped no task".into()),
            }
        }
        Ok(())
    })
    .await
}

/// Master SIGKILL and restart on the same data: submissions accepted within 2 s of the
/// restart, then every worker back and receiving commands within one heartbeat interval.
pub async fn master_sigkill(image: String) -> Outcome {
    scenario("master SIGKILL + restart", async |o: &mut Outcome| {
        let c = cluster("mkill", &image).await?;
        let work = c.submit_work(TASKS, |_| 25, |_| false).await?;
        c.wait_running(&work.ids, START).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let master = c.master();
        docker(&["kill", "-s", "KILL", &master]).await?;
        let killed_unix = unix_secs();
        tokio::time::sleep(Duration::from_secs(3)).await;
        docker(&["start", &master]).await?;
        let restarted = Instant::now();
        let probe = json!({"driver": "process", "command": ["sh", "-c", "sleep 3"], "cpu_required": 0.1, "memory_required": 16});
        let mut probes = Vec::new();
        while restarted.elapsed() < Duration::from_secs(30) {
            if let Ok(id) = c.submit(&probe).await {
                probes.push(id);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let accepting = (!probes.is_empty()).then(|| restarted.elapsed().as_secs_f64());
        o.recovery("accepting submissions", accepting, 2.0);
        let accepted = Instant::now();
        for _ in 1..WORKERS.len() {
            probes.push(c.submit(&probe).await?);
        }
        // Back: every worker registered again, every task it runs claimed (running, not
        // queued), and the new tasks started on workers.
        let mut back = None;
        while accepted.elapsed() < Duration::from_secs(30) {
            let workers = c.workers().await.unwrap_or_default();
            let tasks = c.tasks().await.unwrap_or_default();
            let registered = WORKERS.iter().all(|id| {
                workers.iter().any(|w| {
                    w["worker_id"] == *id && w["is_active"] == true && w["registered_at"].as_u64().is_some_and(|t| t >= killed_unix)
                })
            });
            let claimed = work.ids.iter().chain(&probes).all(|id| {
                tasks.iter().any(|t| t["task_id"] == id.as_str() && (t["status"] == "running" || t["status"] == "completed"))
            });
            if registered && claimed {
                back = Some(accepted.elapsed().as_secs_f64());
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        o.recovery("workers back and running tasks", back, HEARTBEAT_INTERVAL.as_secs_f64());
        let tasks = c.wait_final(&work.ids, SETTLE).await;
        o.judge(&work.ids, &tasks, &c.ledger(), true);
        let probes_done = probes.iter().filter(|id| tasks.iter().any(|t| t["task_id"] == id.as_str() && t["status"] == "completed")).count();
        if probes_done != probes.len() {
            o.fail(format!("{probes_done} of {} tasks submitted after the restart completed", probes.len()));
        }
        if o.ran_twice > 0 {
            o.fail(format!("{} tasks ran again although their workers kept them through the restart", o.ran_twice));
        }
        Ok(())
    })
    .await
}

/// The master frozen (`docker pause`) 18 s: no worker marked inactive, no alert, nothing
/// re-run, heartbeats within 2 s.
pub async fn master_pause(image: String) -> Outcome {
    scenario("master pause 18 s", async |o: &mut Outcome| {
        let c = cluster("mpause", &image).await?;
        let work = c.submit_work(TASKS, |_| 30, |_| false).await?;
        c.wait_running(&work.ids, START).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let master = c.master();
        docker(&["pause", &master]).await?;
        tokio::time::sleep(Duration::from_secs(18)).await;
        docker(&["unpause", &master]).await?;
        let (resumed, resumed_ms) = (Instant::now(), unix_ms());
        let back = c.heartbeats_back(&WORKERS, resumed, resumed_ms, Duration::from_secs(30)).await;
        o.recovery("heartbeats after the pause", back, HEARTBEATS_BACK);
        let mut inactive = std::collections::BTreeSet::new();
        while resumed.elapsed() < Duration::from_secs(8) {
            for w in c.workers().await.unwrap_or_default() {
                let state = w.get("state").and_then(Value::as_str);
                if w["is_active"] != true || matches!(state, Some("inactive" | "lost" | "unhealthy")) {
                    inactive.insert(format!(
                        "{} ({})",
                        w["worker_id"],
                        w.get("state").unwrap_or(&w["is_active"])
                    ));
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !inactive.is_empty() {
            o.fail(format!("workers marked inactive after the pause: {inactive:?}"));
        }
        let tasks = c.wait_final(&work.ids, SETTLE).await;
        let alerts = c.alerts().await?;
        if !alerts.is_empty() {
            let rules: Vec<String> =
                alerts.iter().map(|a| format!("{} {} {}", a["rule"], a["worker_id"], a["status"])).collect();
            o.fail(format!("alerts fired: {rules:?}"));
        }
        o.judge(&work.ids, &tasks, &c.ledger(), true);
        if o.ran_twice > 0 {
            o.fail(format!(
                "{} tasks ran again after an 18 s pause, shorter than the loss deadline",
                o.ran_twice
            ));
        }
        Ok(())
    })
    .await
}

/// The master cut from every worker 40 s (past the loss deadline): the workers stop their
/// tasks before it re-queues them, finished work is kept, heartbeats within 2 s of the heal.
pub async fn master_cut(image: String) -> Outcome {
    scenario("master cut from all 40 s", async |o: &mut Outcome| {
        let c = cluster("mcut", &image).await?;
        // 20–60 s: some finish during the cut (kept), the others outlive the loss deadline.
        let work = c.submit_work(TASKS, |i| 20 + (i as u32 % 6) * 8, |_| false).await?;
        c.wait_running(&work.ids, START).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let master = c.master();
        let from = uptime();
        c.disconnect(&master).await?;
        tokio::time::sleep(Duration::from_secs(40)).await;
        c.connect(&master, &c.master_ip()).await?;
        let (healed, healed_ms, to) = (Instant::now(), unix_ms(), uptime());
        let back = c.heartbeats_back(&WORKERS, healed, healed_ms, Duration::from_secs(30)).await;
        o.recovery("heartbeats after the heal", back, HEARTBEATS_BACK);
        let tasks = c.wait_final(&work.ids, SETTLE).await;
        let ledger = c.ledger();
        o.judge(&work.ids, &tasks, &ledger, true);
        let finished: usize =
            WORKERS.iter().map(|w| finished_during(&ledger, &work.ids, w, from, to).len()).sum();
        o.recovery.push(format!("{finished} finished during it"));
        let stopped =
            WORKERS.iter().filter_map(|w| stopped_after(&ledger, &work.ids, w, from)).max_by(f64::total_cmp);
        if let Some(s) = stopped {
            o.recovery.push(format!("workers stopped their tasks {s:.0} s in"));
        }
        Ok(())
    })
    .await
}

/// A worker whose data folder turns read-only (it joined, then its disk was remounted
/// read-only and it restarted): it refuses to start, or is marked unhealthy, and gets few
/// tasks (at most 2 of 30); every task completes on the others.
pub async fn read_only_worker(image: String) -> Outcome {
    scenario("worker with read-only data", async |o: &mut Outcome| {
        let mut c = Cluster::create("rodata", &image).await?;
        c.start_master().await?;
        c.start_workers(&["w1", "w2"]).await?;
        let data = c.host_path("w3-data");
        std::fs::create_dir_all(data.join("worker"))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("worker"), std::fs::Permissions::from_mode(0o711))?;
        let w3 = WorkerSpec { data: Some((data.clone(), false)), ..WorkerSpec::plain("w3") };
        c.start_worker(2, &w3).await?;
        c.wait_workers_active(&["w3"], Duration::from_secs(40)).await?;
        // Stopped as a service manager would (SIGTERM: it unregisters), so the master places
        // nothing on it before it comes back read-only.
        docker(&["stop", "-t", "20", &c.worker("w3")]).await?;
        docker(&["rm", "-v", &c.worker("w3")]).await?;
        let w3 = WorkerSpec { data: Some((data, true)), ..WorkerSpec::plain("w3") };
        c.start_worker(2, &w3).await?;
        // Let it register again (or refuse to start) before the work arrives.
        let seen = Instant::now();
        let mut state = String::from("never registered again");
        while seen.elapsed() < Duration::from_secs(10) {
            let running =
                docker(&["inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", &c.worker("w3")]).await?;
            if running.starts_with("false") {
                let logs = std::process::Command::new("docker")
                    .args(["logs", "--tail", "1", &c.worker("w3")])
                    .output();
                let why =
                    logs.map(|l| String::from_utf8_lossy(&l.stderr).trim().to_owned()).unwrap_or_default();
                let why: String = why.chars().take(160).collect();
                state =
                    format!("refused to start (exit {}: {why})", running.split(' ').nth(1).unwrap_or("?"));
                break;
            }
            let workers = c.workers().await.unwrap_or_default();
            if let Some(w) = workers.iter().find(|w| w["worker_id"] == "w3" && w["is_active"] == true) {
                state = match w.get("state") {
                    Some(s) => format!("registered, {s}"),
                    None => "registered, active".to_owned(),
                };
                if w.get("state").is_some_and(|s| s == "unhealthy") || seen.elapsed() > Duration::from_secs(3)
                {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        let work = c.submit_work(TASKS, |_| 5, |_| false).await?;
        let tasks = c.wait_final(&work.ids, SETTLE).await;
        let mut on_w3 = 0;
        for id in &work.ids {
            if c.events(id).await?.iter().any(|e| e["worker_id"] == "w3") {
                on_w3 += 1;
            }
        }
        if let Some(w) = c.workers().await.unwrap_or_default().into_iter().find(|w| w["worker_id"] == "w3") {
            state = match w.get("state") {
                Some(s) => format!("{state}; then {s} {}", w.get("reason").unwrap_or(&Value::Null)),
                None => format!("{state}; then active={}", w["is_active"]),
            };
        }
        o.recovery.push(format!("w3 {state}, got {on_w3} tasks"));
        if on_w3 > 2 {
            o.fail(format!("the read-only worker got {on_w3} of {TASKS} tasks ({state})"));
        }
        o.judge(&work.ids, &tasks, &c.ledger(), true);
        Ok(())
    })
    .await
}

/// A worker on another network that reaches the master only through a port mapping (NAT).
pub async fn nat_worker(image: String) -> Outcome {
    scenario("worker behind NAT", async |o: &mut Outcome| {
        let mut c = Cluster::create("nat", &image).await?;
        let outside = format!("{}-nat", c.name);
        let prefix = create_network(&outside).await?;
        let gateway = format!("{prefix}.1");
        c.master_extra = vec!["-p".into(), format!("{gateway}::50051")];
        c.extra_san = vec![gateway.clone()];
        c.start_master().await?;
        let mapped = docker(&["port", &c.master(), "50051/tcp"]).await?;
        let mapped = mapped.lines().next().context("a mapped gRPC port")?.to_owned();
        let nat = |id: &str| WorkerSpec {
            network: Some(outside.clone()),
            master_addr: Some(format!("https://{mapped}")),
            ..WorkerSpec::plain(id)
        };
        let started = Instant::now();
        c.start_worker(0, &nat("nat1")).await?;
        // The one worker that finds its data folder from CLOUDAI_DATA_DIR alone.
        c.start_worker(1, &WorkerSpec { worker_data_dir: false, ..nat("nat2") }).await?;
        c.wait_workers_active(&["nat1"], Duration::from_secs(40)).await?;
        o.recovery.push(format!("registered through {mapped} in {:.1} s", started.elapsed().as_secs_f64()));
        if let Err(e) = c.wait_workers_active(&["nat2"], Duration::from_secs(5)).await {
            o.fail(format!("nat2, given only CLOUDAI_DATA_DIR: {e:#}"));
        }
        let work = c.submit_work(10, |_| 3, |_| false).await?;
        let tasks = c.wait_final(&work.ids, SETTLE).await;
        let ledger = c.ledger();
        o.judge(&work.ids, &tasks, &ledger, true);
        let elsewhere = work
            .ids
            .iter()
            .filter(|id| ledger.runs_of(id).iter().any(|r| !r.worker.starts_with("nat")))
            .count();
        if elsewhere > 0 {
            o.fail(format!("{elsewhere} tasks ran on a worker not behind NAT"));
        }
        Ok(())
    })
    .await
}

fn unix_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
