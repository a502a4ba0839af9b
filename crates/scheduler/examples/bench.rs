//! `cargo run --release -p cloudai-scheduler --example bench -- [workers] [tasks] [binpack|spread] [seed]`
//!
//! Prints one JSON line, like the other `cloudai bench` commands.

use cloudai_scheduler::{Policy, bench};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let number = |i: usize, default: u64| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let workers = number(0, 10_000) as usize;
    let tasks = number(1, 100_000) as usize;
    let policy = match args.get(2).map(String::as_str) {
        Some("spread") => Policy::Spread,
        _ => Policy::BinPack,
    };
    let seed = number(3, 42);
    let r = bench(workers, tasks, policy, seed);
    println!(
        "{{\"bench\":\"scheduler\",\"policy\":\"{policy:?}\",\"workers\":{},\"tasks\":{},\"passes\":{},\"placements\":{},\"pending_left\":{},\"elapsed_ms\":{:.1},\"placements_per_sec\":{:.0}}}",
        r.workers,
        r.tasks,
        r.passes,
        r.placements,
        r.pending_left,
        r.elapsed.as_secs_f64() * 1000.0,
        r.placements_per_sec
    );
}
