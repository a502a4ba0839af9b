//! Random operation sequences never over-commit a worker and keep the books consistent.

use std::collections::HashMap;

use cloudai_scheduler::{
    Driver, PendingTask, Policy, Scheduler, TaskId, WorkerId, WorkerResources, WorkerView,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Upsert { worker: u8, cpu: u8, memory: u8, gpus: u8, drivers: u8, active: bool },
    SetActive { worker: u8, active: bool },
    Remove { worker: u8 },
    Enqueue { task: u8, priority: i8, cpu: u8, memory: u8, gpus: u8, process: bool },
    Cancel { task: u8 },
    Reserve { worker: u8, task: u8, cpu: u8, memory: u8, gpus: Vec<u8> },
    Release { task: u8 },
    Schedule,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..6u8, 0..17u8, 0..9u8, 0..5u8, 1..4u8, any::<bool>()).prop_map(
            |(worker, cpu, memory, gpus, drivers, active)| Op::Upsert { worker, cpu, memory, gpus, drivers, active }
        ),
        1 => (0..6u8, any::<bool>()).prop_map(|(worker, active)| Op::SetActive { worker, active }),
        1 => (0..6u8).prop_map(|worker| Op::Remove { worker }),
        3 => (0..40u8, -2..3i8, 0..9u8, 0..5u8, 0..3u8, any::<bool>()).prop_map(
            |(task, priority, cpu, memory, gpus, process)| Op::Enqueue { task, priority, cpu, memory, gpus, process }
        ),
        1 => (0..40u8).prop_map(|task| Op::Cancel { task }),
        1 => (0..6u8, 0..40u8, 0..5u8, 0..3u8, prop::collection::vec(0..5u8, 0..3)).prop_map(
            |(worker, task, cpu, memory, gpus)| Op::Reserve { worker, task, cpu, memory, gpus }
        ),
        2 => (0..40u8).prop_map(|task| Op::Release { task }),
        3 => Just(Op::Schedule),
    ]
}

fn wid(n: u8) -> WorkerId {
    WorkerId::parse(&format!("w{n}")).expect("valid")
}

fn tid(n: u8) -> TaskId {
    TaskId::parse(&format!("t{n}")).expect("valid")
}

/// What the test believes each task holds: worker, millicores, MB, GPUs.
type Books = HashMap<TaskId, (WorkerId, u64, u64, Vec<u32>)>;

fn check(s: &Scheduler, books: &Books) {
    for view in s.workers() {
        let held: Vec<_> = books.values().filter(|(w, ..)| *w == view.worker_id).collect();
        let cpu_m: u64 = held.iter().map(|h| h.1).sum();
        let memory: u64 = held.iter().map(|h| h.2).sum();
        let mut gpus: Vec<u32> = held.iter().flat_map(|h| h.3.clone()).collect();
        let n = gpus.len();
        gpus.sort_unstable();
        gpus.dedup();
        assert_eq!(gpus.len(), n, "a GPU held twice on {}", view.worker_id);
        assert_eq!((view.reserved.cpu * 1000.0).round() as u64, cpu_m, "cpu books of {}", view.worker_id);
        assert_eq!(view.reserved.memory_mb, memory);
        assert_eq!(view.reserved.gpus as usize, n);
        assert_eq!(view.tasks, held.len());
        assert!(view.free_gpu_indices.iter().all(|g| gpus.binary_search(g).is_err()), "free GPU is held");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_never_over_commit(policy in prop_oneof![Just(Policy::BinPack), Just(Policy::Spread)],
                                           ops in prop::collection::vec(op(), 1..120)) {
        let mut s = Scheduler::new(policy);
        let mut books: Books = HashMap::new();
        let mut seq = 0u64;
        let mut pending: HashMap<TaskId, PendingTask> = HashMap::new();
        for op in ops {
            match op {
                Op::Upsert { worker, cpu, memory, gpus, drivers, active } => {
                    let drivers = [Driver::Docker, Driver::Process]
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| drivers & 1 << i != 0)
                        .map(|(_, d)| d)
                        .collect();
                    let w = WorkerResources {
                        worker_id: wid(worker),
                        cpu_cores: f64::from(cpu) / 2.0,
                        memory_mb: u64::from(memory) * 1000,
                        gpus: (0..u32::from(gpus)).map(|g| g * 2).collect(),
                        drivers,
                        active,
                    };
                    s.upsert_worker(w).expect("valid");
                }
                Op::SetActive { worker, active } => {
                    let known = s.worker(&wid(worker)).is_some();
                    prop_assert_eq!(s.set_active(&wid(worker), active).is_ok(), known);
                }
                Op::Remove { worker } => {
                    let mut gone = s.remove_worker(&wid(worker));
                    let mut want: Vec<TaskId> =
                        books.iter().filter(|(_, h)| h.0 == wid(worker)).map(|(t, _)| t.clone()).collect();
                    gone.sort();
                    want.sort();
                    prop_assert_eq!(&gone, &want);
                    for t in gone {
                        books.remove(&t);
                    }
                }
                Op::Enqueue { task, priority, cpu, memory, gpus, process } => {
                    seq += 1;
                    let t = PendingTask {
                        task_id: tid(task),
                        priority: i32::from(priority),
                        seq,
                        cpu: f64::from(cpu) / 2.0,
                        memory_mb: u64::from(memory) * 1000,
                        gpus: u32::from(gpus),
                        driver: if process { Driver::Process } else { Driver::Docker },
                    };
                    let known = books.contains_key(&t.task_id) || s.is_pending(&t.task_id);
                    prop_assert_eq!(s.enqueue(t.clone()).is_err(), known);
                    if !known {
                        pending.insert(t.task_id.clone(), t);
                    }
                }
                Op::Cancel { task } => {
                    let was_pending = s.is_pending(&tid(task));
                    prop_assert_eq!(s.remove_pending(&tid(task)), was_pending);
                    pending.remove(&tid(task));
                }
                Op::Reserve { worker, task, cpu, memory, gpus } => {
                    let gpus: Vec<u32> = gpus.into_iter().map(|g| u32::from(g) * 2).collect();
                    let (cpu, memory_mb) = (f64::from(cpu) / 2.0, u64::from(memory) * 1000);
                    // Keep within free room so capacity limits stay checkable.
                    let fits = s.worker(&wid(worker)).is_some_and(|v| v.free.cpu >= cpu && v.free.memory_mb >= memory_mb);
                    if fits && s.reserve(&wid(worker), tid(task), cpu, memory_mb, &gpus).is_ok() {
                        let mut sorted = gpus.clone();
                        sorted.sort_unstable();
                        books.insert(tid(task), (wid(worker), (cpu * 1000.0) as u64, memory_mb, sorted));
                    }
                }
                Op::Release { task } => {
                    let released = s.release(&tid(task));
                    let held = books.remove(&tid(task));
                    prop_assert_eq!(released.is_some(), held.is_some());
                    if let (Some(r), Some(h)) = (released, held) {
                        prop_assert_eq!(r.worker_id, h.0);
                        prop_assert_eq!(r.gpu_indices, h.3);
                    }
                }
                Op::Schedule => {
                    let before: HashMap<WorkerId, WorkerView> = s.workers().map(|v| (v.worker_id.clone(), v)).collect();
                    let placed = s.schedule();
                    let mut used: HashMap<WorkerId, (u64, u64, Vec<u32>)> = HashMap::new();
                    for p in &placed {
                        let r = s.reservation(&p.task_id).expect("placed task holds room");
                        prop_assert_eq!(&r.worker_id, &p.worker_id);
                        prop_assert!(!s.is_pending(&p.task_id));
                        pending.remove(&p.task_id);
                        let cpu_m = (r.cpu * 1000.0).round() as u64;
                        let u = used.entry(p.worker_id.clone()).or_default();
                        u.0 += cpu_m;
                        u.1 += r.memory_mb;
                        u.2.extend(&p.gpu_indices);
                        books.insert(p.task_id.clone(), (p.worker_id.clone(), cpu_m, r.memory_mb, p.gpu_indices.clone()));
                    }
                    // The pass placed only within the free room each worker had before it.
                    for (worker, (cpu_m, memory_mb, gpus)) in used {
                        let free = &before[&worker];
                        prop_assert!(free.active, "placed on an inactive worker");
                        prop_assert!(cpu_m <= (free.free.cpu * 1000.0).round() as u64, "cpu over-committed on {}", worker);
                        prop_assert!(memory_mb <= free.free.memory_mb, "memory over-committed on {}", worker);
                        prop_assert!(gpus.iter().all(|g| free.free_gpu_indices.contains(g)), "GPU not free on {}", worker);
                    }
                    check(&s, &books);
                    // The pass was complete: nothing left waiting fits anywhere now.
                    for t in pending.values() {
                        let fits = s.workers().any(|v| {
                            v.active
                                && v.drivers.contains(&t.driver)
                                && v.free.cpu >= t.cpu
                                && v.free.memory_mb >= t.memory_mb
                                && v.free.gpus >= t.gpus
                        });
                        prop_assert!(!fits, "{:?} was left waiting but fits", t);
                    }
                    // A second pass with nothing changed places nothing.
                    prop_assert!(s.schedule().is_empty());
                }
            }
            check(&s, &books);
        }
        // Every task still waiting has a reason.
        for t in 0..40 {
            prop_assert_eq!(s.pending_reason(&tid(t)).is_some(), s.is_pending(&tid(t)));
            prop_assert_eq!(pending.contains_key(&tid(t)), s.is_pending(&tid(t)));
        }
    }
}
