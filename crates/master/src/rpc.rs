//! The master's gRPC service: the edge where wire types become domain types.
//!
//! Every handler returns without waiting on anything slow: heartbeats are handed to
//! the [`TelemetryManager`] with a non-blocking send.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_server::{MasterService, MasterServiceServer};
use futures::Stream;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{debug, warn};

use crate::errors::Coded;
use crate::fleet::{Fleet, FleetError};
use crate::identity::WorkerTrust;
use crate::metrics::Denied;
use crate::tasks::{CommandHub, TaskError, TaskService};
use crate::telemetry::{TelemetryError, TelemetryManager};
use cloudai_domain::time::unix_secs;
use cloudai_domain::{LogBatch, TaskId, TaskReport, WorkerId};
use cloudai_proto::ACCEPTED_COMPRESSION;
use cloudai_proto::RETRY_AFTER_MS;
use cloudai_proto::codec::ClientErrorStatus;
use cloudai_proto::limits::WireLimits;
use cloudai_proto::{PROTOCOL_VERSION, version_refusal};

/// Every error's code comes from its one `ErrorCode` (`errors.rs`), its message from its `Display`.
fn status(e: &impl Coded) -> Status {
    Status::new(e.code().grpc_code(), e.message())
}

impl From<TelemetryError> for Status {
    fn from(e: TelemetryError) -> Self {
        let mut answer = status(&e);
        if let TelemetryError::RateLimited { retry_after } = e
            && let Ok(v) = retry_after.as_millis().max(1).to_string().parse()
        {
            answer.metadata_mut().insert(RETRY_AFTER_MS, v);
        }
        answer
    }
}

impl From<FleetError> for Status {
    fn from(e: FleetError) -> Self {
        status(&e)
    }
}

impl From<TaskError> for Status {
    fn from(e: TaskError) -> Self {
        status(&e)
    }
}

fn bad_id(field: &str, e: cloudai_domain::IdError) -> Status {
    Status::invalid_argument(format!("{field}: {e}"))
}

/// State shared by the gRPC handlers.
#[derive(Clone)]
pub struct MasterRpc {
    fleet: Fleet,
    telemetry: TelemetryManager,
    tasks: TaskService,
    commands: CommandHub,
    metrics: crate::metrics::Metrics,
    master_id: String,
    shutdown: CancellationToken,
    limits: WireLimits,
    trust: WorkerTrust,
}

impl MasterRpc {
    pub fn new(
        fleet: Fleet,
        telemetry: TelemetryManager,
        tasks: TaskService,
        commands: CommandHub,
        metrics: crate::metrics::Metrics,
        master_id: String,
        shutdown: CancellationToken,
    ) -> Self {
        let metrics_for_trust = metrics.clone();
        Self {
            fleet,
            telemetry,
            tasks,
            commands,
            metrics,
            master_id,
            shutdown,
            limits: WireLimits::default(),
            trust: WorkerTrust::insecure(metrics_for_trust),
        }
    }

    /// How workers prove who they are (default: believed, as on an `--insecure` master).
    pub fn with_trust(mut self, trust: WorkerTrust) -> Self {
        self.trust = trust;
        self
    }

    /// What one registration or heartbeat may carry (default: `WireLimits::default()`).
    pub fn with_limits(mut self, limits: WireLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The gRPC service; a request over the size limit is answered `RESOURCE_EXHAUSTED`, one
    /// whose frame cannot be read `INVALID_ARGUMENT`.
    pub fn into_server(self) -> ClientErrorStatus<MasterServiceServer<Self>> {
        let limit = self
            .limits
            .message_bytes
            .clamp(cloudai_proto::MIN_MESSAGE_BYTES, cloudai_proto::MESSAGE_BYTES_CAP);
        let server = ACCEPTED_COMPRESSION
            .iter()
            .filter_map(|c| c.encoding())
            .fold(MasterServiceServer::new(self), |server, encoding| server.accept_compressed(encoding))
            .max_decoding_message_size(limit);
        ClientErrorStatus::new(server, limit)
    }
}

type CommandStream = Pin<Box<dyn Stream<Item = Result<pb::WorkerCommand, Status>> + Send>>;

#[tonic::async_trait]
impl MasterService for MasterRpc {
    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        let caller = self.trust.caller(&request)?;
        let mut request = request.into_inner();
        if request.protocol_version != PROTOCOL_VERSION {
            warn!(
                worker_id = %request.worker_id,
                worker_protocol = request.protocol_version,
                master_protocol = PROTOCOL_VERSION,
                "worker refused: it speaks another protocol version"
            );
            return Err(version_refusal(request.protocol_version));
        }
        let running = std::mem::take(&mut request.running_tasks);
        let running = cloudai_proto::running_tasks(running, &self.limits)?;
        let ending = std::mem::take(&mut request.ending_tasks);
        if ending.len() > self.limits.running_tasks {
            return Err(Status::invalid_argument(format!(
                "ending_tasks: {} tasks, at most {}",
                ending.len(),
                self.limits.running_tasks
            )));
        }
        if let Some(bad) = ending.iter().find(|id| TaskId::parse(id).is_err()) {
            return Err(Status::invalid_argument(format!("ending_tasks: {bad:?} is not a task id")));
        }
        let ending = request.complete_inventory.then_some(ending);
        let info = Arc::new(cloudai_proto::worker_info(request, unix_secs(), &self.limits)?);
        let worker_id = info.worker_id.clone();
        self.trust.check(&caller, &worker_id)?;
        // The slot first: the fleet's announcement may reach the history restorer at once.
        self.telemetry.attach(Arc::clone(&info))?;
        if let Err(e) = self.fleet.register(info, running, ending) {
            // Not a member (e.g. the fleet is full): no slot either.
            if !self.fleet.is_registered(&worker_id) {
                self.telemetry.detach(&worker_id);
            }
            return Err(e.into());
        }
        Ok(Response::new(pb::RegisterWorkerResponse {
            master_id: self.master_id.clone(),
            heartbeat_interval_ms: 0,
            accept_compression: ACCEPTED_COMPRESSION.iter().map(|c| c.as_str().to_owned()).collect(),
            protocol_version: PROTOCOL_VERSION,
            loss_after_ms: self.fleet.loss_after().as_millis() as u64,
        }))
    }

    async fn unregister_worker(
        &self,
        request: Request<pb::UnregisterWorkerRequest>,
    ) -> Result<Response<pb::UnregisterWorkerResponse>, Status> {
        let caller = self.trust.caller(&request)?;
        let id = WorkerId::parse(&request.into_inner().worker_id).map_err(|e| bad_id("worker_id", e))?;
        self.trust.check(&caller, &id)?;
        if !self.fleet.leave(&id) {
            return Err(Status::not_found(format!("worker {id} is not registered")));
        }
        self.telemetry.detach(&id);
        Ok(Response::new(pb::UnregisterWorkerResponse {}))
    }

    async fn send_heartbeat(
        &self,
        request: Request<pb::Heartbeat>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let started = std::time::Instant::now();
        let caller = self.trust.caller(&request)?;
        let mut heartbeat = request.into_inner();
        let unhealthy = std::mem::take(&mut heartbeat.unhealthy);
        let sample = cloudai_proto::heartbeat_sample(heartbeat, &self.limits)?;
        let worker_id = sample.worker_id.clone();
        self.trust.check(&caller, &worker_id)?;
        let unhealthy = (!unhealthy.is_empty()).then(|| cloudai_proto::bounded_text(unhealthy));
        let came_back = match self.fleet.heartbeat(&worker_id, unhealthy.as_deref()) {
            Ok(came_back) => came_back,
            Err(FleetError::UnknownWorker(id)) => return Err(self.telemetry.reject(id).into()),
            Err(e) => return Err(e.into()),
        };
        if let Some(running) = self.telemetry.process_heartbeat(sample, came_back)? {
            self.tasks.worker_running(worker_id, running);
        }
        self.metrics.observe_heartbeat(started.elapsed());
        Ok(Response::new(pb::HeartbeatResponse {}))
    }

    type StreamCommandsStream = CommandStream;

    async fn stream_commands(
        &self,
        request: Request<pb::StreamCommandsRequest>,
    ) -> Result<Response<Self::StreamCommandsStream>, Status> {
        let caller = self.trust.caller(&request)?;
        let id = WorkerId::parse(&request.into_inner().worker_id).map_err(|e| bad_id("worker_id", e))?;
        self.trust.check(&caller, &id)?;
        if !self.fleet.is_registered(&id) {
            return Err(FleetError::UnknownWorker(id).into());
        }
        debug!(worker_id = %id, "command stream opened");
        let rx = self.commands.attach(id.clone());
        self.tasks.stream_opened(id).await;
        // End the stream on shutdown so the gRPC server's graceful stop does not wait on it.
        let stream = ReceiverStream::new(rx)
            .map(|command| Ok(pb::WorkerCommand::from(command)))
            .take_until(self.shutdown.clone().cancelled_owned());
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report_task_status(
        &self,
        request: Request<pb::TaskStatusReport>,
    ) -> Result<Response<pb::TaskStatusAck>, Status> {
        let caller = self.trust.caller(&request)?;
        let report = TaskReport::try_from(request.into_inner())?;
        self.trust.check(&caller, &report.worker_id)?;
        let outcome = self.tasks.report(report).await.inspect_err(|e| self.count_denied(e))?;
        if let Some(persisted) = outcome.persisted {
            // Acknowledge a final status only once it is durable: the worker retries until then
            // (a full disk answers RESOURCE_EXHAUSTED, which it retries too).
            persisted.await.map_err(|_| Status::unavailable("master is shutting down"))??;
        }
        Ok(Response::new(pb::TaskStatusAck { keep_running: outcome.keep_running }))
    }

    async fn ship_logs(&self, request: Request<pb::LogBatch>) -> Result<Response<pb::LogAck>, Status> {
        let caller = self.trust.caller(&request)?;
        let batch = LogBatch::try_from(request.into_inner())?;
        self.trust.check(&caller, &batch.worker_id)?;
        self.tasks.append_logs(batch).await.inspect_err(|e| self.count_denied(e))?;
        Ok(Response::new(pb::LogAck {}))
    }

    async fn join_cluster(
        &self,
        request: Request<pb::JoinRequest>,
    ) -> Result<Response<pb::JoinResponse>, Status> {
        let fleet = &self.fleet;
        let active = |id: &WorkerId| fleet.state(id).is_some_and(|s| s.is_active());
        self.trust.join(&request, request.get_ref(), active).map(Response::new)
    }

    async fn renew_certificate(
        &self,
        request: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        self.trust.renew(&request).map(Response::new)
    }
}

impl MasterRpc {
    fn count_denied(&self, e: &TaskError) {
        if matches!(e, TaskError::NotPlacedHere { .. }) {
            self.trust.denied(Denied::NotPlacedHere);
        }
    }
}

/// Serves the gRPC API on `listener` (over `tls` when given) until `shutdown` fires, then
/// drains in-flight calls. Fails at once, before serving, on TLS settings tonic refuses.
pub fn serve(
    listener: TcpListener,
    rpc: MasterRpc,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = Result<(), tonic::transport::Error>>, tonic::transport::Error> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder =
        tonic::transport::Server::builder().http2_keepalive_interval(Some(Duration::from_secs(30)));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let router = builder.add_service(rpc.into_server());
    Ok(router.serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned()))
}
