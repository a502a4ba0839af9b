//! The runtime's boundary to the master, and delivery with retries over it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cloudai_domain::{LogBatch, TaskReport};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tonic::codec::CompressionEncoding;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// What the runtime needs from the master. Production uses [`GrpcMasterLink`];
/// tests use an in-memory recorder. Errors are gRPC statuses: their code says whether
/// a delivery is worth retrying.
#[async_trait]
pub trait MasterLink: Send + Sync + 'static {
    async fn report_status(&self, report: TaskReport) -> Result<ReportAck, Status>;
    async fn ship_logs(&self, batch: LogBatch) -> Result<(), Status>;
}

/// The master's answer to a status report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportAck {
    /// False when the master no longer wants this task on this worker: stop it.
    pub keep_running: bool,
}

/// The message compression agreed with the master, shared by everything that sends to it
/// (agreed again at each registration: a restarted master may accept other encodings).
#[derive(Clone, Debug, Default)]
pub struct SendCompression(Arc<Mutex<Option<CompressionEncoding>>>);

impl SendCompression {
    pub fn set(&self, encoding: Option<CompressionEncoding>) {
        *self.0.lock() = encoding;
    }

    pub fn get(&self) -> Option<CompressionEncoding> {
        *self.0.lock()
    }

    /// `client`, compressing what it sends if an encoding was agreed.
    pub fn apply(&self, client: MasterServiceClient<Channel>) -> MasterServiceClient<Channel> {
        match self.get() {
            Some(encoding) => client.send_compressed(encoding),
            None => client,
        }
    }
}

/// [`MasterLink`] over the worker's gRPC channel to the master.
#[derive(Clone, Debug)]
pub struct GrpcMasterLink {
    client: MasterServiceClient<Channel>,
    compression: SendCompression,
}

impl GrpcMasterLink {
    pub fn new(client: MasterServiceClient<Channel>) -> Self {
        Self { client, compression: SendCompression::default() }
    }

    /// Ships logs compressed as agreed (they compress well; status reports are too small).
    pub fn with_compression(self, compression: SendCompression) -> Self {
        Self { compression, ..self }
    }
}

#[async_trait]
impl MasterLink for GrpcMasterLink {
    async fn report_status(&self, report: TaskReport) -> Result<ReportAck, Status> {
        let mut client = self.client.clone();
        let ack = client.report_task_status(pb::TaskStatusReport::from(report)).await?.into_inner();
        Ok(ReportAck { keep_running: ack.keep_running })
    }

    async fn ship_logs(&self, batch: LogBatch) -> Result<(), Status> {
        let mut client = self.compression.apply(self.client.clone());
        client.ship_logs(pb::LogBatch::from(batch)).await.map(|_| ())
    }
}

/// How deliveries to the master are retried.
#[derive(Clone, Debug)]
pub(crate) struct RetryPolicy {
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// Deadline of one call; a hung call counts as a failure.
    pub call_timeout: Duration,
    /// Notified when the master is reachable again: every delivery waiting out a backoff
    /// tries at once, so results reach the master right after a partition heals.
    pub wake: Arc<tokio::sync::Notify>,
}

/// Why a delivery ended without the master accepting it.
#[derive(Debug)]
pub(crate) enum Undelivered {
    /// The master said no in a way retrying cannot fix.
    Rejected(Status),
    /// `give_up` was cancelled (worker shut down past its deadline, or the task went stale).
    GaveUp,
}

/// Calls `op` until it succeeds, backing off between attempts.
///
/// Any error is retried (the master may be down or restarting, or may not know this
/// worker until it registers again) except those `permanent` says no retry fixes, which end
/// it as [`Undelivered::Rejected`].
pub(crate) async fn deliver_unless<T, F, Fut>(
    policy: &RetryPolicy,
    give_up: &CancellationToken,
    permanent: fn(Code) -> bool,
    mut op: F,
) -> Result<T, Undelivered>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Status>>,
{
    let mut backoff = policy.initial_backoff.min(policy.max_backoff);
    loop {
        let result = tokio::select! {
            _ = give_up.cancelled() => return Err(Undelivered::GaveUp),
            r = tokio::time::timeout(policy.call_timeout, op()) => r,
        };
        let status = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(status)) => status,
            Err(_) => Status::deadline_exceeded("call to the master timed out"),
        };
        if permanent(status.code()) {
            return Err(Undelivered::Rejected(status));
        }
        tracing::debug!(code = ?status.code(), message = status.message(), ?backoff, "master unreachable, will retry");
        tokio::select! {
            _ = give_up.cancelled() => return Err(Undelivered::GaveUp),
            _ = tokio::time::sleep(backoff) => {}
            _ = policy.wake.notified() => {
                backoff = policy.initial_backoff;
                continue;
            }
        }
        backoff = (backoff * 2).min(policy.max_backoff);
    }
}

fn is_permanent(code: Code) -> bool {
    matches!(code, Code::InvalidArgument | Code::OutOfRange | Code::Unimplemented)
}

/// A refusal of task output that no retry changes: the request is wrong, or the master does
/// not take this task's output from this worker (`NOT_FOUND`: no such task;
/// `PERMISSION_DENIED`: placed on another worker; `FAILED_PRECONDITION`: ended a while ago). `RESOURCE_EXHAUSTED` (the
/// master's disk is full) is retried with backoff: the batch lands once there is room.
pub(crate) fn output_refused(code: Code) -> bool {
    is_permanent(code) || matches!(code, Code::NotFound | Code::FailedPrecondition | Code::PermissionDenied)
}

/// A refusal of a status report that says this copy is not the task's: it runs on another
/// worker now. The copy stops, as when the master answers `keep_running: false`.
pub(crate) fn report_refused(code: Code) -> bool {
    is_permanent(code) || code == Code::PermissionDenied
}
