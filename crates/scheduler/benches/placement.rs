//! Hot paths: one placement into a 10k-worker fleet, and one pass over a full cluster
//! with about 10k tasks waiting.

use std::collections::HashMap;
use std::hint::black_box;

use cloudai_scheduler::{Driver, PendingTask, Policy, TaskId, bench};
use criterion::{Criterion, criterion_group, criterion_main};

const WORKERS: usize = 10_000;

/// A half-busy fleet: one placement then costs what it costs in steady state.
fn place_one(c: &mut Criterion) {
    for policy in [Policy::BinPack, Policy::Spread] {
        let mut s = bench::fleet(WORKERS, policy, 1);
        for t in bench::tasks(40_000, 1) {
            s.enqueue(t).expect("fresh id");
        }
        let _ = s.schedule();
        for t in bench::tasks(40_000, 1) {
            s.remove_pending(&t.task_id);
        }
        let probe = PendingTask {
            task_id: TaskId::parse("probe").expect("valid id"),
            priority: 0,
            seq: 0,
            cpu: 2.0,
            memory_mb: 4096,
            gpus: 0,
            driver: Driver::Docker,
        };
        s.enqueue(probe.clone()).expect("not queued");
        assert_eq!(s.schedule().len(), 1, "the probe must fit, or this measures a failed search");
        s.release(&probe.task_id);
        c.bench_function(&format!("place_one_into_10k_workers/{policy:?}"), |b| {
            b.iter(|| {
                s.enqueue(probe.clone()).expect("not queued");
                let placed = s.schedule();
                black_box(&placed);
                s.release(&probe.task_id);
                s.remove_pending(&probe.task_id);
            })
        });
    }
}

/// The cluster is full and ~10k tasks wait; each iteration one task ends, goes back to
/// the queue, and `schedule()` runs a full pass (room grew).
fn full_cluster_pass(c: &mut Criterion) {
    let mut s = bench::fleet(WORKERS, Policy::BinPack, 2);
    let all = bench::tasks(200_000, 2);
    let by_id: HashMap<TaskId, PendingTask> = all.iter().map(|t| (t.task_id.clone(), t.clone())).collect();
    for t in all {
        s.enqueue(t).expect("fresh id");
    }
    let mut running: Vec<TaskId> = s.schedule().into_iter().map(|p| p.task_id).collect();
    // Trim the queue to about 10k waiting tasks.
    let mut excess = s.pending_len().saturating_sub(10_000);
    for id in by_id.keys() {
        if excess == 0 {
            break;
        }
        if s.remove_pending(id) {
            excess -= 1;
        }
    }
    let mut seq = 1_000_000u64;
    let mut next = 0usize;
    c.bench_function("schedule_full_cluster_10k_pending", |b| {
        b.iter(|| {
            next = (next + 7919) % running.len();
            let ended = running[next].clone();
            s.release(&ended);
            let mut again = by_id[&ended].clone();
            seq += 1;
            again.seq = seq;
            s.enqueue(again).expect("released");
            let placed = s.schedule();
            // Keep the running list in step: the ended task may run again elsewhere.
            running.swap_remove(next);
            running.extend(placed.into_iter().map(|p| p.task_id));
        })
    });
    eprintln!("pending at end: {}", s.pending_len());
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30);
    targets = place_one, full_cluster_pass
}
criterion_main!(benches);
