//! `cloudai bench scheduler`: the placement engine alone, in process, over a simulated fleet.

use clap::Args;
use serde_json::json;

#[derive(Args, Debug)]
pub struct SchedulerArgs {
    /// Simulated workers (heterogeneous: CPU, memory, GPUs, drivers).
    #[arg(long, default_value_t = 10_000)]
    pub workers: usize,
    /// Tasks to place (mixed priorities and sizes).
    #[arg(long, default_value_t = 100_000)]
    pub tasks: usize,
    /// Placement policy: bin-pack or spread.
    #[arg(long, default_value = "bin-pack")]
    pub policy: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
}

pub fn run(args: SchedulerArgs) -> anyhow::Result<serde_json::Value> {
    let policy = match args.policy.as_str() {
        "bin-pack" | "binpack" => cloudai_scheduler::Policy::BinPack,
        "spread" => cloudai_scheduler::Policy::Spread,
        other => anyhow::bail!("unknown --policy {other:?}: expected bin-pack or spread"),
    };
    eprintln!("placing {} tasks on {} simulated workers ({:?})", args.tasks, args.workers, policy);
    let r = cloudai_scheduler::bench(args.workers, args.tasks, policy, args.seed);
    Ok(json!({
        "bench": "scheduler",
        "policy": args.policy,
        "workers": r.workers,
        "tasks": r.tasks,
        "placements": r.placements,
        "passes": r.passes,
        "pending_left": r.pending_left,
        "elapsed_s": r.elapsed.as_secs_f64(),
        "placements_per_sec": r.placements_per_sec,
    }))
}
