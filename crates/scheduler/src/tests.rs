//! Behaviour of the public API, one rule per test.

use std::collections::HashSet;

use crate::*;

fn wid(s: &str) -> WorkerId {
    WorkerId::parse(s).expect("valid worker id")
}

fn tid(s: &str) -> TaskId {
    TaskId::parse(s).expect("valid task id")
}

fn worker(id: &str, cpu: f64, memory_mb: u64, gpus: u32) -> WorkerResources {
    WorkerResources {
        worker_id: wid(id),
        cpu_cores: cpu,
        memory_mb,
        gpus: (0..gpus).collect(),
        drivers: vec![Driver::Docker, Driver::Process],
        active: true,
    }
}

fn task(id: &str, priority: i32, seq: u64, cpu: f64, memory_mb: u64, gpus: u32) -> PendingTask {
    PendingTask { task_id: tid(id), priority, seq, cpu, memory_mb, gpus, driver: Driver::Docker }
}

fn scheduler(policy: Policy, workers: &[WorkerResources]) -> Scheduler {
    let mut s = Scheduler::new(policy);
    for w in workers {
        s.upsert_worker(w.clone()).expect("valid worker");
    }
    s
}

fn placed_ids(placements: &[Placement]) -> Vec<&str> {
    placements.iter().map(|p| p.task_id.as_str()).collect()
}

#[test]
fn higher_priority_first_then_fifo() {
    let mut s = scheduler(Policy::BinPack, &[worker("w", 3.0, 3000, 0)]);
    s.enqueue(task("low", 1, 0, 1.0, 100, 0)).expect("enqueue");
    s.enqueue(task("high-b", 5, 2, 1.0, 100, 0)).expect("enqueue");
    s.enqueue(task("high-a", 5, 1, 1.0, 100, 0)).expect("enqueue");
    s.enqueue(task("mid", 3, 0, 1.0, 100, 0)).expect("enqueue");
    assert_eq!(placed_ids(&s.schedule()), ["high-a", "high-b", "mid"]);
    assert!(s.is_pending(&tid("low")));
}

#[test]
fn fits_higher_priority_wins_contested_room_but_small_tasks_backfill() {
    let mut s = scheduler(Policy::BinPack, &[worker("w", 4.0, 4000, 0)]);
    s.enqueue(task("huge", 9, 0, 8.0, 100, 0)).expect("enqueue");
    s.enqueue(task("big", 5, 1, 3.0, 100, 0)).expect("enqueue");
    s.enqueue(task("small", 1, 2, 2.0, 100, 0)).expect("enqueue");
    s.enqueue(task("tiny", 1, 3, 1.0, 100, 0)).expect("enqueue");
    // huge never fits; big takes the contested room before small; tiny backfills.
    assert_eq!(placed_ids(&s.schedule()), ["big", "tiny"]);
}

#[test]
fn new_high_priority_task_goes_before_old_ones_after_release() {
    let mut s = scheduler(Policy::BinPack, &[worker("w", 1.0, 1000, 0)]);
    s.enqueue(task("first", 0, 0, 1.0, 100, 0)).expect("enqueue");
    s.enqueue(task("old", 0, 1, 1.0, 100, 0)).expect("enqueue");
    assert_eq!(placed_ids(&s.schedule()), ["first"]);
    assert!(s.schedule().is_empty(), "nothing changed");
    s.enqueue(task("urgent", 7, 2, 1.0, 100, 0)).expect("enqueue");
    assert!(s.schedule().is_empty(), "still full");
    s.release(&tid("first")).expect("was placed");
    assert_eq!(placed_ids(&s.schedule()), ["urgent"]);
}

#[test]
fn bin_pack_picks_the_fullest_fitting_worker_and_spread_the_emptiest() {
    let workers =
        [worker("big", 16.0, 16000, 0), worker("small", 4.0, 4000, 0), worker("tiny", 1.0, 1000, 0)];
    for (policy, want) in [(Policy::BinPack, "small"), (Policy::Spread, "big")] {
        let mut s = scheduler(policy, &workers);
        s.enqueue(task("t", 0, 0, 2.0, 1000, 0)).expect("enqueue");
        let placed = s.schedule();
        assert_eq!(placed[0].worker_id.as_str(), want, "{policy:?}");
    }
}

#[test]
fn bin_pack_keeps_gpu_workers_for_gpu_tasks() {
    let mut s = scheduler(Policy::BinPack, &[worker("gpu", 4.0, 4000, 4), worker("cpu", 64.0, 64000, 0)]);
    s.enqueue(task("cpu-task", 0, 0, 2.0, 100, 0)).expect("enqueue");
    assert_eq!(s.schedule()[0].worker_id.as_str(), "cpu");
}

#[test]
fn gpus_are_lowest_free_indices_and_never_shared() {
    let mut w = worker("w", 64.0, 64000, 0);
    w.gpus = vec![7, 3, 5, 1, 0, 2, 6, 4];
    let mut s = scheduler(Policy::BinPack, &[w]);
    for i in 0..6 {
        s.enqueue(task(&format!("t{i}"), 0, i, 1.0, 100, if i % 2 == 0 { 1 } else { 2 })).expect("enqueue");
    }
    let placed = s.schedule();
    assert_eq!(placed[0].gpu_indices, [0]);
    assert_eq!(placed[1].gpu_indices, [1, 2]);
    assert_eq!(placed[2].gpu_indices, [3]);
    assert_eq!(placed[3].gpu_indices, [4, 5]);
    assert_eq!(placed[4].gpu_indices, [6]);
    // The 2-GPU task t5 needs more than the one GPU left.
    assert_eq!(placed.len(), 5);
    let all: Vec<u32> = placed.iter().flat_map(|p| p.gpu_indices.clone()).collect();
    assert_eq!(all.iter().collect::<HashSet<_>>().len(), all.len(), "no GPU twice");
    assert_eq!(s.pending_reason(&tid("t5")), Some(PendingReason::NoRoom));
}

#[test]
fn release_frees_exactly_the_tasks_gpus() {
    let mut s = scheduler(Policy::BinPack, &[worker("w", 64.0, 64000, 4)]);
    s.enqueue(task("a", 0, 0, 1.0, 100, 1)).expect("enqueue");
    s.enqueue(task("b", 0, 1, 1.0, 100, 2)).expect("enqueue");
    s.enqueue(task("c", 0, 2, 1.0, 100, 1)).expect("enqueue");
    assert_eq!(s.schedule().len(), 3);
    let released = s.release(&tid("b")).expect("b was placed");
    assert_eq!(released.gpu_indices, [1, 2]);
    assert_eq!(released.worker_id.as_str(), "w");
    assert_eq!(released.cpu, 1.0);
    let view = s.worker(&wid("w")).expect("known");
    assert_eq!(view.free_gpu_indices, [1, 2]);
    assert_eq!(view.free.gpus, 2);
    assert_eq!(view.reserved, Resources { cpu: 2.0, memory_mb: 200, gpus: 2 });
    assert_eq!(s.release(&tid("b")), None, "released once");
    s.enqueue(task("d", 0, 3, 1.0, 100, 2)).expect("enqueue");
    assert_eq!(s.schedule()[0].gpu_indices, [1, 2]);
}

#[test]
fn inactive_workers_get_nothing() {
    let mut s = scheduler(Policy::Spread, &[worker("a", 8.0, 8000, 0), worker("b", 8.0, 8000, 0)]);
    s.set_active(&wid("a"), false).expect("known");
    for i in 0..3 {
        s.enqueue(task(&format!("t{i}"), 0, i, 1.0, 100, 0)).expect("enqueue");
    }
    assert!(s.schedule().iter().all(|p| p.worker_id.as_str() == "b"));
    s.set_active(&wid("b"), false).expect("known");
    s.enqueue(task("late", 0, 9, 1.0, 100, 0)).expect("enqueue");
    assert!(s.schedule().is_empty());
    assert_eq!(s.pending_reason(&tid("late")), Some(PendingReason::NoRoom));
    s.set_active(&wid("a"), true).expect("known");
    assert_eq!(s.schedule()[0].worker_id.as_str(), "a");
    assert!(matches!(s.set_active(&wid("nope"), true), Err(SchedulerError::UnknownWorker(_))));
}

#[test]
fn tasks_go_only_to_workers_with_their_driver() {
    let mut docker_only = worker("docker", 64.0, 64000, 0);
    docker_only.drivers = vec![Driver::Docker];
    let mut process_only = worker("process", 2.0, 2000, 0);
    process_only.drivers = vec![Driver::Process];
    let mut s = scheduler(Policy::Spread, &[docker_only, process_only]);
    let mut p = task("p", 0, 0, 1.0, 100, 0);
    p.driver = Driver::Process;
    s.enqueue(p).expect("enqueue");
    s.enqueue(task("d", 0, 1, 1.0, 100, 0)).expect("enqueue");
    let placed = s.schedule();
    let on = |t: &str| placed.iter().find(|p| p.task_id.as_str() == t).map(|p| p.worker_id.as_str());
    assert_eq!(on("p"), Some("process"));
    assert_eq!(on("d"), Some("docker"));
}

#[test]
fn never_fits_says_what_is_missing() {
    let mut docker_only = worker("w", 16.0, 32000, 4);
    docker_only.drivers = vec![Driver::Docker];
    let mut s = scheduler(Policy::BinPack, &[docker_only]);
    s.set_active(&wid("w"), false).expect("known");
    let mut process = task("process", 0, 0, 1.0, 100, 0);
    process.driver = Driver::Process;
    s.enqueue(process).expect("enqueue");
    s.enqueue(task("gpus", 0, 1, 1.0, 100, 8)).expect("enqueue");
    s.enqueue(task("cpu", 0, 2, 32.0, 100, 0)).expect("enqueue");
    s.enqueue(task("memory", 0, 3, 1.0, 64000, 0)).expect("enqueue");
    s.enqueue(task("fits-when-active", 0, 4, 16.0, 32000, 4)).expect("enqueue");
    assert!(s.schedule().is_empty());
    let reason = |t: &str| s.pending_reason(&tid(t)).expect("pending").to_string();
    assert_eq!(reason("process"), "cannot run on any known worker: no worker runs the process driver");
    assert_eq!(
        reason("gpus"),
        "cannot run on any known worker: needs 8 GPUs; the largest known docker worker has 4"
    );
    assert!(reason("cpu").contains("needs 32 cores; the largest known docker worker has 16"));
    assert!(reason("memory").contains("needs 64000 MB of memory"));
    assert_eq!(reason("fits-when-active"), "waiting for room: no active worker has room right now");
    assert_eq!(s.pending_reason(&tid("unknown")), None);
}

#[test]
fn never_fits_when_no_single_worker_has_everything() {
    let mut s = scheduler(Policy::BinPack, &[worker("cpu", 64.0, 1000, 0), worker("mem", 1.0, 64000, 0)]);
    s.enqueue(task("both", 0, 0, 32.0, 32000, 0)).expect("enqueue");
    assert!(s.schedule().is_empty());
    let Some(PendingReason::NeverFits(why)) = s.pending_reason(&tid("both")) else { panic!("never fits") };
    assert!(why.contains("on one worker"), "{why}");
}

#[test]
fn reserve_records_running_tasks_for_reconciliation() {
    let mut s = scheduler(Policy::BinPack, &[worker("w", 8.0, 8000, 4)]);
    s.reserve(&wid("w"), tid("running"), 6.0, 1000, &[2, 0]).expect("reserve");
    let view = s.worker(&wid("w")).expect("known");
    assert_eq!(view.free_gpu_indices, [1, 3]);
    assert_eq!(view.free.cpu, 2.0);
    let err = |r: Result<(), SchedulerError>| r.expect_err("refused");
    assert!(matches!(
        err(s.reserve(&wid("w"), tid("running"), 1.0, 1, &[])),
        SchedulerError::AlreadyPlaced { .. }
    ));
    assert!(matches!(
        err(s.reserve(&wid("w"), tid("x"), 1.0, 1, &[0])),
        SchedulerError::GpuInUse { gpu: 0, .. }
    ));
    assert!(matches!(
        err(s.reserve(&wid("w"), tid("x"), 1.0, 1, &[9])),
        SchedulerError::UnknownGpu { gpu: 9, .. }
    ));
    assert!(matches!(
        err(s.reserve(&wid("w"), tid("x"), 1.0, 1, &[1, 1])),
        SchedulerError::DuplicateGpu { gpu: 1 }
    ));
    assert!(matches!(err(s.reserve(&wid("nope"), tid("x"), 1.0, 1, &[])), SchedulerError::UnknownWorker(_)));
    assert!(matches!(
        err(s.reserve(&wid("w"), tid("x"), f64::NAN, 1, &[])),
        SchedulerError::InvalidCpu { .. }
    ));
    // A failed reserve changed nothing.
    assert_eq!(s.worker(&wid("w")).expect("known").free_gpu_indices, [1, 3]);
    s.enqueue(task("next", 0, 0, 3.0, 100, 1)).expect("enqueue");
    assert!(s.schedule().is_empty(), "only 2 cores left");
    assert_eq!(s.release(&tid("running")).expect("held").gpu_indices, [0, 2]);
    assert_eq!(s.schedule()[0].gpu_indices, [0]);
}

#[test]
fn reserve_beyond_capacity_is_kept_and_blocks_new_placements() {
    let mut s = scheduler(Policy::BinPack, &[worker("w", 2.0, 1000, 0)]);
    s.reserve(&wid("w"), tid("a"), 3.0, 1000, &[]).expect("facts win");
    let view = s.worker(&wid("w")).expect("known");
    assert_eq!(view.free.cpu, 0.0);
    assert_eq!(view.reserved.cpu, 3.0);
    s.enqueue(task("b", 0, 0, 0.5, 10, 0)).expect("enqueue");
    assert!(s.schedule().is_empty());
}

#[test]
fn remove_worker_returns_its_tasks_and_drops_their_reservations() {
    let mut s = scheduler(Policy::BinPack, &[worker("a", 2.0, 2000, 0), worker("b", 8.0, 8000, 0)]);
    s.enqueue(task("t1", 0, 0, 2.0, 100, 0)).expect("enqueue");
    s.enqueue(task("t2", 0, 1, 4.0, 100, 0)).expect("enqueue");
    s.reserve(&wid("a"), tid("t0"), 0.0, 0, &[]).expect("reserve");
    let placed = s.schedule();
    assert_eq!(placed.len(), 2);
    assert_eq!(s.remove_worker(&wid("a")).iter().map(TaskId::as_str).collect::<Vec<_>>(), ["t0", "t1"]);
    assert_eq!(s.release(&tid("t1")), None);
    assert!(s.remove_worker(&wid("a")).is_empty(), "already gone");
    assert_eq!(s.totals().placed_tasks, 1);
    // The slot is reused by a new worker that starts empty.
    s.upsert_worker(worker("c", 2.0, 2000, 0)).expect("valid");
    assert_eq!(s.worker(&wid("c")).expect("known").tasks, 0);
    // A task that was on the removed worker can be queued again.
    s.enqueue(task("t1", 0, 2, 2.0, 100, 0)).expect("enqueue again");
    assert_eq!(s.schedule()[0].worker_id.as_str(), "c");
}

#[test]
fn re_register_keeps_reservations_and_updates_capacity() {
    let mut s = scheduler(Policy::BinPack, &[worker("w", 4.0, 4000, 2)]);
    s.enqueue(task("a", 0, 0, 3.0, 1000, 1)).expect("enqueue");
    assert_eq!(s.schedule()[0].gpu_indices, [0]);
    s.upsert_worker(worker("w", 16.0, 16000, 4)).expect("valid");
    let view = s.worker(&wid("w")).expect("known");
    assert_eq!(view.free, Resources { cpu: 13.0, memory_mb: 15000, gpus: 3 });
    assert_eq!(view.free_gpu_indices, [1, 2, 3]);
    // Shrinking below the reservation keeps it; GPU 0 stays held, nothing is free.
    let mut shrunk = worker("w", 1.0, 500, 0);
    shrunk.gpus = vec![];
    s.upsert_worker(shrunk).expect("valid");
    let view = s.worker(&wid("w")).expect("known");
    assert_eq!(view.free, Resources { cpu: 0.0, memory_mb: 0, gpus: 0 });
    assert_eq!(view.reserved.gpus, 1);
    assert_eq!(s.release(&tid("a")).expect("held").gpu_indices, [0]);
    assert_eq!(s.worker(&wid("w")).expect("known").free_gpu_indices, Vec::<u32>::new());
}

#[test]
fn enqueue_rejects_duplicates_and_bad_cpu_and_cancel_works() {
    let mut s = scheduler(Policy::BinPack, &[]);
    s.enqueue(task("a", 0, 0, 1.0, 1, 0)).expect("enqueue");
    assert!(matches!(s.enqueue(task("a", 0, 1, 1.0, 1, 0)), Err(SchedulerError::AlreadyPending(_))));
    assert!(matches!(s.enqueue(task("b", 0, 1, -1.0, 1, 0)), Err(SchedulerError::InvalidCpu { .. })));
    assert!(s.remove_pending(&tid("a")));
    assert!(!s.remove_pending(&tid("a")));
    assert_eq!(s.pending_len(), 0);
    let mut w = worker("w", f64::INFINITY, 1, 0);
    assert!(s.upsert_worker(w.clone()).is_err());
    w.cpu_cores = 1.0;
    s.upsert_worker(w).expect("valid");
    assert!(s.schedule().is_empty(), "cancelled task is not placed");
}

#[test]
fn totals_sum_capacity_and_reservations() {
    let mut s = scheduler(Policy::BinPack, &[worker("a", 8.0, 8000, 2), worker("b", 4.0, 4000, 0)]);
    s.set_active(&wid("b"), false).expect("known");
    s.enqueue(task("t", 0, 0, 1.5, 500, 1)).expect("enqueue");
    s.enqueue(task("u", 0, 1, 100.0, 500, 0)).expect("enqueue");
    assert_eq!(s.schedule().len(), 1);
    let t = s.totals();
    assert_eq!((t.workers, t.active_workers, t.pending_tasks, t.placed_tasks), (2, 1, 1, 1));
    assert_eq!(t.capacity, Resources { cpu: 12.0, memory_mb: 12000, gpus: 2 });
    assert_eq!(t.active_capacity, Resources { cpu: 8.0, memory_mb: 8000, gpus: 2 });
    assert_eq!(t.reserved, Resources { cpu: 1.5, memory_mb: 500, gpus: 1 });
    assert_eq!(s.workers().count(), 2);
}

#[test]
fn bench_places_and_reports() {
    let report = bench(200, 2_000, Policy::BinPack, 7);
    assert!(report.placements > 1_000, "{report:?}");
    assert_eq!(report.passes, 11);
    assert_eq!(bench(200, 2_000, Policy::BinPack, 7).placements, report.placements, "deterministic");
}
