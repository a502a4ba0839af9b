//! Load generators: `cloudai bench …`. Each prints one JSON line of results last.

#![forbid(unsafe_code)]

pub mod bare;
pub mod heartbeats;
pub mod mtls;
mod phases;
mod proxy;
pub mod scheduler;
pub mod tasks;

use clap::Subcommand;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Simulate N workers that register and heartbeat over real gRPC.
    Heartbeats(heartbeats::HeartbeatArgs),
    /// The scheduler alone, in process, over simulated workers.
    Scheduler(scheduler::SchedulerArgs),
    /// Submit N trivial tasks to a running cluster and wait for all of them.
    Tasks(tasks::TasksArgs),
    /// A bare tonic `MasterService` (heartbeats decoded and dropped), the baseline of
    /// `heartbeats --against-bare-server`; prints its address on stdout.
    #[command(hide = true)]
    BareServer(bare::BareServerArgs),
}

impl BenchCommand {
    pub async fn run(self) -> anyhow::Result<()> {
        let result = match self {
            BenchCommand::Heartbeats(args) if args.bare.against_bare_server => bare::compare(args).await?,
            BenchCommand::Heartbeats(args) => heartbeats::run(args).await?,
            BenchCommand::Scheduler(args) => {
                tokio::task::spawn_blocking(move || scheduler::run(args)).await??
            }
            BenchCommand::Tasks(args) => tasks::run(args).await?,
            BenchCommand::BareServer(args) => return bare::serve(args).await,
        };
        println!("{result}");
        Ok(())
    }
}

/// Resident memory of a process in bytes, from `/proc/PID/status` (Linux).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU time (user + system) a process has used, in seconds, from `/proc/PID/stat` (Linux).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}
