//! Commands about one attempt of a task, the worker's reports on it, and its output.

use std::time::Duration;

use cloudai_domain::{
    Interruption, LogBatch, LogChunk, LogStream, OnDisconnect, Outcome, RunStatus, TaskCancel, TaskId,
    TaskLaunch, TaskReport, TaskUpdate, WorkerCommand, WorkerId,
};

use super::WireError;
use super::worker::driver;
use super::worker::limits::MAX_REPORT_TEXT_BYTES;
use crate::v1 as pb;
use crate::v1::task_status_report::Update;
use crate::v1::worker_command::Command;

fn task_id(field: &'static str, raw: &str) -> Result<TaskId, WireError> {
    TaskId::parse(raw).map_err(|e| WireError::id(field, e))
}

fn worker_id(raw: &str) -> Result<WorkerId, WireError> {
    WorkerId::parse(raw).map_err(|e| WireError::id("worker_id", e))
}

impl From<WorkerCommand> for pb::WorkerCommand {
    fn from(command: WorkerCommand) -> Self {
        let command = match command {
            WorkerCommand::Start(l) => Command::StartTask(pb::StartTask {
                task_id: l.task_id.to_string(),
                driver: pb::Driver::from(l.driver).into(),
                image: l.image,
                command: l.command,
                env: l.env.into_iter().collect(),
                cpu_required: l.cpu_required,
                memory_required_mb: l.memory_required_mb,
                gpu_indices: l.gpu_indices,
                attempt: l.attempt,
                keep_on_disconnect: l.on_disconnect == OnDisconnect::Keep,
            }),
            WorkerCommand::Cancel(c) => Command::CancelTask(pb::CancelTask {
                task_id: c.task_id.to_string(),
                grace_period_ms: c.grace.map_or(0, |g| u64::try_from(g.as_millis()).unwrap_or(u64::MAX)),
                reason: c.reason,
            }),
        };
        Self { command: Some(command) }
    }
}

impl TryFrom<pb::WorkerCommand> for WorkerCommand {
    type Error = WireError;

    fn try_from(command: pb::WorkerCommand) -> Result<Self, Self::Error> {
        match command.command {
            Some(Command::StartTask(s)) => Ok(WorkerCommand::Start(TaskLaunch {
                task_id: task_id("task_id", &s.task_id)?,
                attempt: s.attempt,
                driver: driver("driver", s.driver)?,
                image: s.image,
                command: s.command,
                env: s.env.into_iter().collect(),
                cpu_required: s.cpu_required,
                memory_required_mb: s.memory_required_mb,
                gpu_indices: s.gpu_indices,
                on_disconnect: if s.keep_on_disconnect { OnDisconnect::Keep } else { OnDisconnect::Stop },
            })),
            Some(Command::CancelTask(c)) => Ok(WorkerCommand::Cancel(TaskCancel {
                task_id: task_id("task_id", &c.task_id)?,
                grace: (c.grace_period_ms > 0).then(|| Duration::from_millis(c.grace_period_ms)),
                reason: c.reason,
            })),
            None => Err(WireError::new("command", "is missing")),
        }
    }
}

impl From<RunStatus> for pb::TaskStatus {
    fn from(s: RunStatus) -> Self {
        match s {
            RunStatus::Queued => pb::TaskStatus::Queued,
            RunStatus::Running => pb::TaskStatus::Running,
            RunStatus::Completed => pb::TaskStatus::Completed,
            RunStatus::Failed => pb::TaskStatus::Failed,
            RunStatus::Cancelled => pb::TaskStatus::Cancelled,
        }
    }
}

fn run_status(field: &'static str, raw: i32) -> Result<RunStatus, WireError> {
    match pb::TaskStatus::try_from(raw) {
        Ok(pb::TaskStatus::Queued) => Ok(RunStatus::Queued),
        Ok(pb::TaskStatus::Running) => Ok(RunStatus::Running),
        Ok(pb::TaskStatus::Completed) => Ok(RunStatus::Completed),
        Ok(pb::TaskStatus::Failed) => Ok(RunStatus::Failed),
        Ok(pb::TaskStatus::Cancelled) => Ok(RunStatus::Cancelled),
        Ok(pb::TaskStatus::Unspecified) | Err(_) => Err(WireError::enumeration(field, "task status", raw)),
    }
}

impl From<Interruption> for pb::Interruption {
    fn from(i: Interruption) -> Self {
        match i {
            Interruption::Fenced => pb::Interruption::Fenced,
            Interruption::Environment => pb::Interruption::Environment,
            Interruption::WorkerStopping => pb::Interruption::WorkerStopping,
        }
    }
}

fn interruption(field: &'static str, raw: i32) -> Result<Interruption, WireError> {
    match pb::Interruption::try_from(raw) {
        Ok(pb::Interruption::Fenced) => Ok(Interruption::Fenced),
        Ok(pb::Interruption::Environment) => Ok(Interruption::Environment),
        Ok(pb::Interruption::WorkerStopping) => Ok(Interruption::WorkerStopping),
        Ok(pb::Interruption::Unspecified) | Err(_) => Err(WireError::enumeration(field, "interruption", raw)),
    }
}

impl From<TaskReport> for pb::TaskStatusReport {
    fn from(r: TaskReport) -> Self {
        let update = match r.update {
            // Cut on the way out too, so a driver's huge error never makes a report that the
            // master refuses for its size (which the reporter would retry).
            TaskUpdate::Status { status, outcome } => Update::Status(pb::StatusChange {
                status: pb::TaskStatus::from(status).into(),
                exit_code: outcome.exit_code,
                error: outcome.error.map(bounded_text).unwrap_or_default(),
            }),
            TaskUpdate::Progress(message) => {
                Update::Progress(pb::Progress { message: bounded_text(message) })
            }
            TaskUpdate::Interrupted { cause, message } => Update::Interrupted(pb::Interrupted {
                cause: pb::Interruption::from(cause).into(),
                message: bounded_text(message),
            }),
        };
        Self {
            worker_id: r.worker_id.to_string(),
            task_id: r.task_id.to_string(),
            attempt: r.attempt,
            timestamp_ms: r.timestamp_ms,
            update: Some(update),
        }
    }
}

/// `text` cut to [`MAX_REPORT_TEXT_BYTES`] (at a character boundary), with a marker saying
/// how many bytes went.
///
/// Cut rather than refused: a refused final report would leave the task stuck on its
/// worker's retries (the worker cannot shorten what the driver said), and the start of an
/// error is the part that explains it.
pub fn bounded_text(mut text: String) -> String {
    if text.len() <= MAX_REPORT_TEXT_BYTES {
        return text;
    }
    let mut end = MAX_REPORT_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = text.len() - end;
    text.truncate(end);
    text.push_str(&format!("… ({cut} bytes cut)"));
    text
}

impl TryFrom<pb::TaskStatusReport> for TaskReport {
    type Error = WireError;

    fn try_from(r: pb::TaskStatusReport) -> Result<Self, Self::Error> {
        let update = match r.update {
            Some(Update::Status(s)) => TaskUpdate::Status {
                status: run_status("status.status", s.status)?,
                outcome: Outcome {
                    exit_code: s.exit_code,
                    error: (!s.error.is_empty()).then(|| bounded_text(s.error)),
                },
            },
            Some(Update::Progress(p)) => TaskUpdate::Progress(bounded_text(p.message)),
            Some(Update::Interrupted(i)) => TaskUpdate::Interrupted {
                cause: interruption("interrupted.cause", i.cause)?,
                message: bounded_text(i.message),
            },
            None => {
                return Err(WireError::new("update", "is missing: a report carries a status or progress"));
            }
        };
        Ok(Self {
            worker_id: worker_id(&r.worker_id)?,
            task_id: task_id("task_id", &r.task_id)?,
            attempt: r.attempt,
            timestamp_ms: r.timestamp_ms,
            update,
        })
    }
}

impl From<LogStream> for pb::LogStream {
    fn from(s: LogStream) -> Self {
        match s {
            LogStream::Stdout => pb::LogStream::Stdout,
            LogStream::Stderr => pb::LogStream::Stderr,
        }
    }
}

impl From<LogBatch> for pb::LogBatch {
    fn from(b: LogBatch) -> Self {
        let chunks = b
            .chunks
            .into_iter()
            .map(|c| pb::LogChunk {
                task_id: c.task_id.to_string(),
                stream: pb::LogStream::from(c.stream).into(),
                data: c.data,
                timestamp_ms: c.time_ms,
            })
            .collect();
        Self { worker_id: b.worker_id.to_string(), chunks }
    }
}

impl TryFrom<pb::LogBatch> for LogBatch {
    type Error = WireError;

    fn try_from(b: pb::LogBatch) -> Result<Self, Self::Error> {
        let mut chunks = Vec::with_capacity(b.chunks.len());
        for c in b.chunks {
            let stream = match pb::LogStream::try_from(c.stream) {
                Ok(pb::LogStream::Stdout) => LogStream::Stdout,
                Ok(pb::LogStream::Stderr) => LogStream::Stderr,
                Ok(pb::LogStream::Unspecified) | Err(_) => {
                    return Err(WireError::enumeration("chunks.stream", "log stream", c.stream));
                }
            };
            let task_id = task_id("chunks.task_id", &c.task_id)?;
            chunks.push(LogChunk { task_id, stream, data: c.data, time_ms: c.timestamp_ms });
        }
        Ok(Self { worker_id: worker_id(&b.worker_id)?, chunks })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use cloudai_domain::Driver;

    use super::*;

    fn id(raw: &str) -> TaskId {
        TaskId::parse(raw).expect("task id")
    }

    #[test]
    fn commands_cross_the_wire_unchanged() {
        let launch = TaskLaunch {
            task_id: id("t1"),
            attempt: 2,
            driver: Driver::Process,
            image: String::new(),
            command: vec!["echo".into(), "hi".into()],
            env: BTreeMap::from([("K".into(), "V".into())]),
            cpu_required: 0.5,
            memory_required_mb: 64,
            gpu_indices: vec![1, 3],
            on_disconnect: OnDisconnect::Keep,
        };
        let cancel =
            TaskCancel { task_id: id("t1"), grace: Some(Duration::from_millis(1500)), reason: "r".into() };
        let default_grace = TaskCancel { grace: None, ..cancel.clone() };
        for command in [
            WorkerCommand::Start(launch),
            WorkerCommand::Cancel(cancel),
            WorkerCommand::Cancel(default_grace),
        ] {
            let wire = pb::WorkerCommand::from(command.clone());
            assert_eq!(WorkerCommand::try_from(wire), Ok(command));
        }
    }

    #[test]
    fn reports_cross_the_wire_unchanged() {
        let report = |update| TaskReport {
            worker_id: WorkerId::parse("w1").expect("worker id"),
            task_id: id("t1"),
            attempt: 1,
            timestamp_ms: 5,
            update,
        };
        let failed = Outcome { exit_code: Some(3), error: Some("exited with code 3".into()) };
        for update in [
            TaskUpdate::status(RunStatus::Queued),
            TaskUpdate::Progress("pulling image x".into()),
            TaskUpdate::Status { status: RunStatus::Failed, outcome: failed },
            TaskUpdate::Status {
                status: RunStatus::Completed,
                outcome: Outcome { exit_code: Some(0), error: None },
            },
        ] {
            let wire = pb::TaskStatusReport::from(report(update.clone()));
            assert_eq!(TaskReport::try_from(wire), Ok(report(update)));
        }
    }

    #[test]
    fn long_report_text_keeps_its_start_and_says_how_much_was_cut() {
        let status = |error: String| pb::TaskStatusReport {
            worker_id: "w1".into(),
            task_id: "t1".into(),
            update: Some(Update::Status(pb::StatusChange {
                status: pb::TaskStatus::Failed.into(),
                exit_code: Some(1),
                error,
            })),
            ..Default::default()
        };
        // A two-byte character across the limit: the cut falls before it.
        let long = format!("a{}", "é".repeat(MAX_REPORT_TEXT_BYTES));
        let report = TaskReport::try_from(status(long.clone())).expect("a long error is kept, cut");
        let TaskUpdate::Status { outcome, .. } = report.update else { panic!("a status report") };
        let error = outcome.error.expect("an error");
        let kept = MAX_REPORT_TEXT_BYTES - 1;
        assert!(error.starts_with(&long[..kept]), "the start is kept");
        assert!(error.ends_with(&format!("… ({} bytes cut)", long.len() - kept)), "{}", &error[kept..]);

        let short = TaskReport::try_from(status("exited with code 1".into())).expect("report");
        let TaskUpdate::Status { outcome, .. } = short.update else { panic!("a status report") };
        assert_eq!(outcome.error.as_deref(), Some("exited with code 1"), "short text is unchanged");

        let progress = pb::TaskStatusReport {
            update: Some(Update::Progress(pb::Progress { message: "x".repeat(3 << 20) })),
            ..status(String::new())
        };
        let TaskUpdate::Progress(message) = TaskReport::try_from(progress).expect("report").update else {
            panic!("a progress report")
        };
        assert!(message.len() < MAX_REPORT_TEXT_BYTES + 64, "{} bytes", message.len());

        // A worker cuts what it sends the same way.
        let huge = TaskReport {
            worker_id: WorkerId::parse("w1").expect("worker id"),
            task_id: id("t1"),
            attempt: 1,
            timestamp_ms: 5,
            update: TaskUpdate::Status {
                status: RunStatus::Failed,
                outcome: Outcome { exit_code: None, error: Some("z".repeat(8 << 20)) },
            },
        };
        let Some(Update::Status(sent)) = pb::TaskStatusReport::from(huge).update else {
            panic!("a status report")
        };
        assert!(sent.error.ends_with(&format!("… ({} bytes cut)", (8 << 20) - MAX_REPORT_TEXT_BYTES)));
    }

    #[test]
    fn unspecified_enums_are_refused_naming_the_field() {
        let start = pb::StartTask { task_id: "t1".into(), ..Default::default() };
        let command = pb::WorkerCommand { command: Some(Command::StartTask(start)) };
        let err = WorkerCommand::try_from(command).expect_err("no driver");
        assert_eq!(err.to_string(), "driver: driver is unspecified");

        let report = pb::TaskStatusReport {
            worker_id: "w1".into(),
            task_id: "t1".into(),
            update: Some(Update::Status(pb::StatusChange { status: 9, ..Default::default() })),
            ..Default::default()
        };
        assert_eq!(TaskReport::try_from(report).expect_err("bad status").field, "status.status");
        let silent =
            pb::TaskStatusReport { worker_id: "w1".into(), task_id: "t1".into(), ..Default::default() };
        assert_eq!(TaskReport::try_from(silent).expect_err("no update").field, "update");

        let chunk = pb::LogChunk { task_id: "t1".into(), ..Default::default() };
        let batch = pb::LogBatch { worker_id: "w1".into(), chunks: vec![chunk] };
        assert_eq!(
            LogBatch::try_from(batch).expect_err("no stream").to_string(),
            "chunks.stream: log stream is unspecified"
        );
    }
}
