//! Test harness: an in-memory master link and a runtime with short intervals.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use cloudai_domain::{
    Driver, LogBatch, LogChunk, TaskCancel, TaskId, TaskLaunch, TaskReport, TaskUpdate, WorkerId,
};
use cloudai_runtime::{MasterLink, ProcessDriver, ReportAck, RuntimeConfig, TaskRuntime, TaskUser};
use nix::errno::Errno;
use nix::sys::signal::killpg;
use nix::unistd::Pid;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub const DEADLINE: Duration = Duration::from_secs(10);

/// A report as the master received it, with how much of the task's output had arrived before it.
#[derive(Clone, Debug)]
pub struct Received {
    pub report: Report,
    pub log_bytes_before: usize,
}

/// A [`TaskReport`] with its status by name, as the tests check it: `status` is empty for
/// progress, whose text is in `message`; `error` is empty when there is none.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    pub worker_id: String,
    pub task_id: String,
    pub attempt: u32,
    pub status: String,
    pub exit_code: Option<i32>,
    pub error: String,
    pub message: String,
}

impl From<TaskReport> for Report {
    fn from(r: TaskReport) -> Self {
        let (status, exit_code, error, message) = match r.update {
            TaskUpdate::Status { status, outcome } => (
                status.as_str().to_owned(),
                outcome.exit_code,
                outcome.error.unwrap_or_default(),
                String::new(),
            ),
            TaskUpdate::Progress(message) => (String::new(), None, String::new(), message),
            // "interrupted (fenced)", "interrupted (environment)", …
            update @ TaskUpdate::Interrupted { .. } => {
                let TaskUpdate::Interrupted { message, .. } = &update else { unreachable!() };
                (update.to_string(), None, message.clone(), String::new())
            }
        };
        Self {
            worker_id: r.worker_id.to_string(),
            task_id: r.task_id.to_string(),
            attempt: r.attempt,
            status,
            exit_code,
            error,
            message,
        }
    }
}

/// A master that records what it accepts, and can be switched off.
#[derive(Default)]
pub struct Recorder {
    reports: Mutex<Vec<Received>>,
    chunks: Mutex<Vec<LogChunk>>,
    stale: Mutex<HashSet<String>>,
    unreachable: AtomicBool,
    refused_calls: AtomicUsize,
    /// The worker whose logs are expected.
    worker_id: Mutex<Option<WorkerId>>,
    /// Refuse output of these tasks with this code, as a master does for a task it does
    /// not run here.
    refuse_output: Mutex<HashMap<String, tonic::Code>>,
    output_calls: AtomicUsize,
}

#[async_trait]
impl MasterLink for Recorder {
    async fn report_status(&self, report: TaskReport) -> Result<ReportAck, Status> {
        if self.unreachable.load(Ordering::SeqCst) {
            self.refused_calls.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unavailable("master down"));
        }
        let report = Report::from(report);
        let keep_running = !self.stale.lock().contains(&report.task_id);
        let log_bytes_before = self.log_bytes(&report.task_id);
        self.reports.lock().push(Received { report, log_bytes_before });
        Ok(ReportAck { keep_running })
    }

    async fn ship_logs(&self, batch: LogBatch) -> Result<(), Status> {
        if self.unreachable.load(Ordering::SeqCst) {
            self.refused_calls.fetch_add(1, Ordering::SeqCst);
            return Err(Status::unavailable("master down"));
        }
        let expected = self.worker_id.lock().clone().expect("the harness sets the worker id");
        assert_eq!(batch.worker_id, expected);
        self.output_calls.fetch_add(1, Ordering::SeqCst);
        let refused =
            batch.chunks.iter().find_map(|c| self.refuse_output.lock().get(c.task_id.as_str()).copied());
        if let Some(code) = refused {
            return Err(Status::new(code, "task not placed on this worker"));
        }
        self.chunks.lock().extend(batch.chunks);
        Ok(())
    }
}

impl Recorder {
    pub fn set_unreachable(&self, unreachable: bool) {
        self.unreachable.store(unreachable, Ordering::SeqCst);
    }

    /// Refuse this task's output with `code` from now on.
    pub fn refuse_output(&self, task_id: &str, code: tonic::Code) {
        self.refuse_output.lock().insert(task_id.to_owned(), code);
    }

    /// Calls to ship output, accepted or refused (not counting those while unreachable).
    pub fn output_calls(&self) -> usize {
        self.output_calls.load(Ordering::SeqCst)
    }

    pub fn refused_calls(&self) -> usize {
        self.refused_calls.load(Ordering::SeqCst)
    }

    /// Answer `keep_running = false` to this task's reports from now on.
    pub fn mark_stale(&self, task_id: &str) {
        self.stale.lock().insert(task_id.to_owned());
    }

    pub fn reports(&self, task_id: &str) -> Vec<Received> {
        self.reports.lock().iter().filter(|r| r.report.task_id == task_id).cloned().collect()
    }

    /// The statuses reported, in order (progress reports are not statuses).
    pub fn statuses(&self, task_id: &str) -> Vec<String> {
        self.reports(task_id).into_iter().map(|r| r.report.status).filter(|s| !s.is_empty()).collect()
    }

    /// The final report, once the master has it.
    pub fn final_report(&self, task_id: &str) -> Option<Received> {
        self.reports(task_id).into_iter().find(|r| {
            matches!(r.report.status.as_str(), "completed" | "failed" | "cancelled")
                || r.report.status.starts_with("interrupted")
        })
    }

    pub fn has_status(&self, task_id: &str, status: &str) -> bool {
        self.statuses(task_id).iter().any(|s| s == status)
    }

    pub fn output(&self, task_id: &str, stream: &str) -> Vec<u8> {
        let chunks = self.chunks.lock();
        chunks
            .iter()
            .filter(|c| c.task_id.as_str() == task_id && c.stream.as_str() == stream)
            .flat_map(|c| c.data.clone())
            .collect()
    }

    pub fn stdout(&self, task_id: &str) -> String {
        String::from_utf8_lossy(&self.output(task_id, "stdout")).into_owned()
    }

    pub fn stderr(&self, task_id: &str) -> String {
        String::from_utf8_lossy(&self.output(task_id, "stderr")).into_owned()
    }

    fn log_bytes(&self, task_id: &str) -> usize {
        self.chunks.lock().iter().filter(|c| c.task_id.as_str() == task_id).map(|c| c.data.len()).sum()
    }
}

pub struct Harness {
    pub runtime: TaskRuntime,
    pub link: Arc<Recorder>,
    pub data_dir: PathBuf,
    pub shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Harness {
    pub fn new() -> Self {
        Self::with(|_| {})
    }

    /// A runtime with the process driver and test-sized intervals, adjusted by `adjust`.
    pub fn with(adjust: impl FnOnce(&mut RuntimeConfig)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        // The canonical path, so it compares equal to what `pwd` prints.
        let data_dir = dir.path().canonicalize().expect("canonical temp dir");
        // Tasks run as the production default (`nobody` when the tests run as root), who
        // must pass through the data folder to reach their own.
        set_mode(&data_dir, 0o711);
        let scratch = data_dir.join("scratch");
        std::fs::create_dir(&scratch).expect("scratch folder");
        set_mode(&scratch, 0o1777);
        let worker_id = WorkerId::parse("w1").expect("worker id");
        let mut config = RuntimeConfig::new(worker_id, &data_dir);
        let user = TaskUser::resolve(None).expect("the default task user");
        let process = ProcessDriver::new(user, &config.tasks_dir()).expect("process driver");
        config = config.with_driver(Driver::Process, Arc::new(process));
        config.default_grace = Duration::from_secs(5);
        config.log_batch_interval = Duration::from_millis(20);
        config.max_retry_backoff = Duration::from_millis(100);
        config.call_timeout = Duration::from_secs(2);
        config.shutdown_flush_timeout = Duration::from_secs(2);
        adjust(&mut config);
        let link = Arc::new(Recorder::default());
        *link.worker_id.lock() = Some(config.worker_id.clone());
        let shutdown = CancellationToken::new();
        let runtime = TaskRuntime::new(config, link.clone(), shutdown.clone());
        Self { runtime, link, data_dir, shutdown, _dir: dir }
    }

    pub fn workdir(&self, task_id: &str) -> PathBuf {
        self.data_dir.join("tasks").join(task_id)
    }

    /// A path in the data folder but outside any task's working folder, that tasks may
    /// write (a folder like `/tmp`).
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.data_dir.join("scratch").join(name)
    }

    /// Waits for the task's final report and returns it.
    pub async fn finished(&self, task_id: &str) -> Report {
        wait_until(&format!("{task_id} to finish"), || self.link.final_report(task_id).is_some()).await;
        self.link.final_report(task_id).map(|r| r.report).expect("final report")
    }

    /// Waits until the task printed its process group id (`echo $$` first thing) and returns it.
    pub async fn pgid(&self, task_id: &str) -> Pid {
        wait_until("the task to print its pid", || self.link.stdout(task_id).contains('\n')).await;
        let stdout = self.link.stdout(task_id);
        let first = stdout.lines().next().unwrap_or_default();
        Pid::from_raw(first.trim().parse().expect("a pid on the first line"))
    }
}

pub fn start(task_id: &str, argv: &[&str]) -> TaskLaunch {
    TaskLaunch {
        task_id: TaskId::parse(task_id).expect("task id"),
        attempt: 1,
        driver: Driver::Process,
        image: String::new(),
        command: argv.iter().map(|s| (*s).to_owned()).collect(),
        env: BTreeMap::new(),
        cpu_required: 1.0,
        memory_required_mb: 64,
        gpu_indices: Vec::new(),
        on_disconnect: cloudai_domain::OnDisconnect::Stop,
    }
}

/// A cancel with this grace period; zero: the runtime's default.
pub fn cancel(task_id: &str, grace: Duration) -> TaskCancel {
    TaskCancel {
        task_id: TaskId::parse(task_id).expect("task id"),
        grace: (!grace.is_zero()).then_some(grace),
        reason: "cancelled by user".to_owned(),
    }
}

pub fn group_exists(pgid: Pid) -> bool {
    match killpg(pgid, None) {
        Ok(()) => true,
        Err(Errno::ESRCH) => false,
        Err(e) => panic!("cannot probe process group {pgid}: {e}"),
    }
}

pub async fn wait_group_gone(pgid: Pid) {
    wait_until(&format!("process group {pgid} to be gone"), || !group_exists(pgid)).await;
}

pub fn exists(path: &Path) -> bool {
    path.try_exists().expect("stat")
}

/// Polls `condition` until it holds; fails the test after [`DEADLINE`].
pub async fn wait_until(what: &str, condition: impl FnMut() -> bool) {
    wait_until_within(DEADLINE, what, condition).await;
}

pub async fn wait_until_within(deadline: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + deadline;
    while !condition() {
        assert!(tokio::time::Instant::now() < until, "timed out after {deadline:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}
