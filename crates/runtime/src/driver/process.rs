//! Runs a task as a plain process in its own process group.
//!
//! The group is the unit of control: stop and kill signal the whole group, and
//! when the main process exits the rest of the group is killed too, so nothing
//! a task started outlives it (and its output pipes close). It is also the unit of
//! measure: a task's CPU and memory are its group's, sampled from `/proc`.
//!
//! A task starts with a clean environment, not the worker's: its own `env`, on top of a
//! minimal `PATH`, `LANG`, `HOME`, `USER` and `LOGNAME`, plus `CLOUDAI_TASK_ID` and
//! `CUDA_VISIBLE_DEVICES`. It runs as the driver's [`TaskUser`], in a working folder only
//! that user can open.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tracing::debug;

use super::user::{TaskUser, TaskUserError};
use super::{Driver, DriverError, Execution, ExitStatus, Launch, OutputChunk, TaskControl, Usage};
use cloudai_domain::LogStream;
use cloudai_domain::time::unix_ms;

/// Largest chunk read from a pipe at once.
const READ_BYTES: usize = 32 * 1024;
/// Chunks waiting for the runtime; the runtime drains them quickly, so this only smooths bursts.
const OUTPUT_CHANNEL: usize = 64;
/// How often a running task's CPU and memory are measured (heartbeats come every 5 s).
const USAGE_SAMPLE: Duration = Duration::from_secs(1);
/// Processes of one group measured at most (a fork bomb is not walked to its end).
const MAX_GROUP_PROCESSES: usize = 4096;

/// A task's environment before its own `env`: enough to find programs and write files.
const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const BASE_LANG: &str = "C.UTF-8";

/// The `process` driver: `command` as argv (no shell), stdin null.
#[derive(Clone, Debug)]
pub struct ProcessDriver {
    user: TaskUser,
    /// util-linux's `setpriv`, which switches to the task user in the child: a uid set on
    /// the `Command` makes std fork the whole worker instead of using `posix_spawn`
    /// (measured: 3× fewer tasks per second). Without it, std switches.
    setpriv: Option<std::path::PathBuf>,
}

/// Where util-linux installs `setpriv` (Debian: `/usr/bin`, merged `/bin`).
const SETPRIV: [&str; 2] = ["/usr/bin/setpriv", "/bin/setpriv"];

impl ProcessDriver {
    /// Runs tasks as `user` in working folders under `tasks_dir`, which is created here and
    /// checked to be reachable by `user` (so a worker that could start no task says so now).
    pub fn new(user: TaskUser, tasks_dir: &Path) -> Result<Self, TaskUserError> {
        user.prepare_tasks_dir(tasks_dir)?;
        let setpriv = if user.switches() {
            SETPRIV.iter().map(std::path::PathBuf::from).find(|p| p.is_file())
        } else {
            None
        };
        Ok(Self { user, setpriv })
    }

    pub fn user(&self) -> &TaskUser {
        &self.user
    }
}

#[async_trait]
impl Driver for ProcessDriver {
    async fn start(&self, launch: &Launch) -> Result<Execution, DriverError> {
        let (program, args) = launch.command.split_first().ok_or(DriverError::EmptyCommand)?;
        let path = launch.env.get("PATH").map_or(BASE_PATH, String::as_str);
        // The supervisor just created it; nothing of the task runs yet to race with.
        self.user
            .own_workdir(&launch.workdir)
            .map_err(|e| DriverError::Workdir { dir: launch.workdir.clone(), source: plain_io_error(e) })?;
        let user = &self.user;
        let program_path = find_program(program, path);
        // A program that is not there is left to the spawn, which says so as it always does.
        let setpriv = self.setpriv.as_ref().filter(|_| program_path.is_file());
        let mut command = match (setpriv, user.switches()) {
            (Some(setpriv), true) => {
                let mut command = Command::new(setpriv);
                command
                    .args(["--reuid", &user.uid().to_string(), "--regid", &user.gid().to_string()])
                    .args(["--clear-groups", "--"])
                    .arg(&program_path);
                command
            }
            (None, true) => {
                let mut command = Command::new(&program_path);
                // std also drops the worker's supplementary groups (setgroups(0)) before setuid.
                command.uid(user.uid()).gid(user.gid());
                command
            }
            (_, false) => Command::new(&program_path),
        };
        // The worker's own variables (its credentials, its paths) are not the task's.
        command
            .args(args)
            .env_clear()
            .env("PATH", BASE_PATH)
            .env("HOME", user.home().unwrap_or(&launch.workdir))
            .env("USER", user.name())
            .env("LOGNAME", user.name())
            .env("LANG", BASE_LANG)
            .envs(&launch.env)
            .env("CUDA_VISIBLE_DEVICES", launch.cuda_visible_devices())
            .env("CLOUDAI_TASK_ID", launch.task_id.as_str())
            .current_dir(&launch.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .process_group(0);
        let spawn_error = |source| DriverError::Spawn { program: program.clone(), source };
        let mut child = command.spawn().map_err(|e| spawn_error(plain_io_error(e)))?;
        // A freshly spawned, unreaped child always has an id; the group id equals it (process_group(0)).
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| spawn_error(std::io::Error::other("the process has no id")))?;

        let (tx, output) = mpsc::channel(OUTPUT_CHANNEL);
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(pump(stdout, LogStream::Stdout, tx.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(pump(stderr, LogStream::Stderr, tx));
        }
        debug!(task_id = %launch.task_id, pgid = pgid.as_raw(), "process started");
        let control = Arc::new(GroupControl { pgid, usage: Mutex::new(None) });
        tokio::spawn(sample_usage(Arc::downgrade(&control)));
        Ok(Execution {
            output,
            exit: Box::pin(wait(child, pgid)),
            control,
            handle: pgid.as_raw().to_string(),
        })
    }
}

/// The program as a path, looked up in the task's `PATH` here: a program left to the spawn
/// to look up in a changed `PATH` makes std fork the whole worker instead of using
/// `posix_spawn` (measured: 4× fewer tasks per second under `cloudai dev`). Not found: the
/// name as given, so the spawn reports it missing.
fn find_program(program: &str, path: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        return program.into();
    }
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .unwrap_or_else(|| program.into())
}

/// Waits for the group leader, then kills what is left of its group.
async fn wait(mut child: Child, pgid: Pid) -> Result<ExitStatus, DriverError> {
    // If this future is dropped before the leader is reaped, the guard kills the group;
    // the unreaped leader keeps the group id from being reused until then.
    let mut guard = GroupGuard { pgid, armed: true };
    let status = child.wait().await;
    // Nothing may outlive the task's main process: leftovers would hold its pipes open.
    // The leader is reaped, but the id cannot be reused while group members remain.
    signal_group(pgid, Signal::SIGKILL).ok();
    guard.armed = false;
    let status = status.map_err(DriverError::Wait)?;
    match (status.code(), status.signal()) {
        (Some(code), _) => Ok(ExitStatus::Exited(code)),
        (None, Some(signal)) => Ok(ExitStatus::Signaled(signal)),
        (None, None) => {
            Err(DriverError::Wait(std::io::Error::other(format!("unknown exit status {status}"))))
        }
    }
}

struct GroupGuard {
    pgid: Pid,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::SIGKILL).ok();
        }
    }
}

struct GroupControl {
    pgid: Pid,
    /// The latest sample; `None` until the first one.
    usage: Mutex<Option<Usage>>,
}

#[async_trait]
impl TaskControl for GroupControl {
    async fn terminate(&self) -> Result<(), DriverError> {
        signal_group(self.pgid, Signal::SIGTERM)
    }

    async fn kill(&self) -> Result<(), DriverError> {
        signal_group(self.pgid, Signal::SIGKILL)
    }

    fn usage(&self) -> Option<Usage> {
        *self.usage.lock()
    }
}

/// Measures the group until the task ends (its control is dropped): CPU as the share of one
/// core over the last interval (200 = two cores), memory as resident bytes. The first look
/// is one interval after the start, against the start (a new group has used no CPU yet), so
/// a short task is never measured at all.
async fn sample_usage(control: Weak<GroupControl>) {
    let clock_ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    let page_bytes = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().unwrap_or(4096);
    let mut last = (0u64, Instant::now());
    loop {
        tokio::time::sleep(USAGE_SAMPLE).await;
        let Some(control) = control.upgrade() else { return };
        let pgid = control.pgid;
        let now = Instant::now();
        let group = tokio::task::spawn_blocking(move || group_usage(pgid)).await.unwrap_or_default();
        let (ticks, at) = last;
        let seconds = now.duration_since(at).as_secs_f64().max(1e-3);
        let cpu_percent =
            group.ticks.saturating_sub(ticks) as f64 / clock_ticks.max(1) as f64 / seconds * 100.0;
        last = (group.ticks, now);
        let memory_bytes = group.resident_pages.saturating_mul(u64::try_from(page_bytes).unwrap_or(4096));
        *control.usage.lock() = Some(Usage { cpu_percent, memory_bytes });
    }
}

/// CPU time and resident memory of every process in a group, summed.
#[derive(Debug, Default, PartialEq)]
struct GroupUsage {
    /// User plus system time, in clock ticks.
    ticks: u64,
    resident_pages: u64,
}

/// Sums `/proc/<pid>/stat` over the group's processes, found from its leader down through
/// `/proc/<pid>/task/<tid>/children` (the cost is the group's size, not the machine's
/// process count). A process that left the tree but stayed in the group is missed; one
/// that ends meanwhile is skipped.
fn group_usage(pgid: Pid) -> GroupUsage {
    let mut total = GroupUsage::default();
    let mut todo = vec![pgid.as_raw()];
    let mut seen = std::collections::HashSet::new();
    while let Some(pid) = todo.pop() {
        if !seen.insert(pid) || seen.len() > MAX_GROUP_PROCESSES {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        if let Some((group, ticks, pages)) = parse_stat(&stat)
            && group == pgid.as_raw()
        {
            total.ticks += ticks;
            total.resident_pages += pages;
        }
        let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { continue };
        for thread in threads.flatten() {
            let Ok(children) = std::fs::read_to_string(thread.path().join("children")) else { continue };
            todo.extend(children.split_whitespace().filter_map(|c| c.parse::<i32>().ok()));
        }
    }
    total
}

/// (process group, utime + stime, rss pages) from a `/proc/<pid>/stat` line. The command
/// name (field 2) may hold spaces and parentheses: fields are counted after its last `)`.
fn parse_stat(stat: &str) -> Option<(i32, u64, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    // After the name: state(3) ppid(4) pgrp(5) ... utime(14) stime(15) ... rss(24).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    let group = field(5)?.parse().ok()?;
    let ticks = field(14)?.parse::<u64>().ok()? + field(15)?.parse::<u64>().ok()?;
    let pages = field(24)?.parse::<i64>().ok()?.max(0) as u64;
    Some((group, ticks, pages))
}

/// Signals every process of the group; a group that is already gone is fine.
fn signal_group(pgid: Pid, signal: Signal) -> Result<(), DriverError> {
    match killpg(pgid, signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(DriverError::Signal(e)),
    }
}

/// Forwards one pipe's bytes until end of file (or the runtime stopped listening).
async fn pump(mut pipe: impl AsyncRead + Unpin, stream: LogStream, tx: mpsc::Sender<OutputChunk>) {
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => n,
            Err(e) => {
                debug!(stream = stream.as_str(), error = %e, "cannot read task output");
                return;
            }
        };
        let chunk = OutputChunk { stream, data: buf[..n].to_vec(), timestamp_ms: unix_ms() };
        if tx.send(chunk).await.is_err() {
            return;
        }
    }
}

/// "No such file or directory" rather than "No such file or directory (os error 2)":
/// the message goes to people reading a task's error.
fn plain_io_error(e: std::io::Error) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => std::io::Error::new(e.kind(), Errno::from_raw(code).desc()),
        None => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_name() {
        let stat = "4242 (my (odd) prog) R 1 4240 4240 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 1 0 \
                    12345 10000000 321 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_stat(stat), Some((4240, 300, 321)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn programs_are_found_in_the_tasks_path() {
        let sh = find_program("sh", BASE_PATH);
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(find_program("./run.sh", BASE_PATH), std::path::Path::new("./run.sh"));
        assert_eq!(
            find_program("no-such-program-xyz", BASE_PATH),
            std::path::Path::new("no-such-program-xyz")
        );
        assert_eq!(find_program("sh", "/nowhere::/bin"), std::path::Path::new("/bin/sh"));
    }

    #[test]
    fn a_group_is_measured_from_its_leader_down() {
        use std::os::unix::process::CommandExt;
        // A shell (the group leader) and its child, in a group of their own.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5 & wait"])
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pgid = Pid::from_raw(i32::try_from(child.id()).expect("pid"));
        std::thread::sleep(Duration::from_millis(200));
        let usage = group_usage(pgid);
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait();
        assert!(usage.resident_pages > 0, "{usage:?}");
    }
}
