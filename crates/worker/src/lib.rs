//! The worker agent: registers with the master (retrying while it is down),
//! heartbeats on its own task, re-registers when the master forgets it, keeps a
//! command stream open, and unregisters on shutdown.

#![forbid(unsafe_code)]

mod collector;
pub mod fence;
pub mod gpu;
mod identity;
pub mod status;

pub use cloudai_pki::JoinToken;
pub use identity::IdentityError;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use cloudai_runtime::{
    DockerDriver, DockerOptions, GrpcMasterLink, ProcessDriver, RuntimeConfig, SendCompression, TaskRuntime,
    TaskUser, TaskUserError, error_chain,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::{debug, error, info, warn};

use self::collector::Collector;
use cloudai_domain::time::unix_ms;
use cloudai_domain::{Driver, TaskId, WorkerCommand, WorkerId};
use cloudai_proto::{Compression, PROTOCOL_VERSION};

/// Longest wait between registration attempts (and command stream reopenings); shorter
/// for a worker that heartbeats more often.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const UNREGISTER_DEADLINE: Duration = Duration::from_secs(2);
/// HTTP/2 pings on the channel to the master: a dead connection is dropped within
/// about interval + timeout, so calls after a partition heals go over a fresh one.
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);
/// While heartbeats fail, the next is tried after about this long, not a whole interval.
const FAILING_RETRY: Duration = Duration::from_millis(500);

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    pub master_addr: String,
    pub worker_id: WorkerId,
    pub heartbeat_interval: Duration,
    pub drivers: Vec<Driver>,
    pub cpus: Option<f64>,
    pub memory_mb: Option<u64>,
    pub simulated_gpus: Option<u32>,
    pub labels: Vec<(String, String)>,
    /// Task working folders live under `<data_dir>/tasks/`.
    pub data_dir: PathBuf,
    pub keep_workdirs: bool,
    /// Who process tasks run as (`CLOUDAI_TASK_USER`); `None`: `nobody` for a root worker,
    /// the worker's own user otherwise.
    pub task_user: Option<String>,
    /// Preferred compression of heartbeats, used when the master accepts it.
    pub compression: Compression,
    /// For an `https://` master: the token to join with, when there is no certificate from
    /// an earlier join in `<data_dir>/identity/` (or the token names another cluster's CA).
    pub join_token: Option<JoinToken>,
    /// Time between SIGTERM and SIGKILL when the worker stops tasks itself (shutdown,
    /// lost contact with the master).
    pub stop_grace: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("invalid MASTER_ADDR {addr:?}")]
    BadMasterAddr {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the master refused this worker: {}", .0.message())]
    Refused(#[source] Status),
    #[error(
        "this worker speaks protocol {worker}, the master speaks protocol {master}; upgrade the worker or the master"
    )]
    ProtocolMismatch { worker: u32, master: u32 },
    #[error("the worker's collector task failed")]
    Collector(#[source] tokio::task::JoinError),
    #[error("cannot run process tasks")]
    TaskUser(#[source] TaskUserError),
    #[error("no driver can run here (configured: {configured}); a worker without one could run no task")]
    NoDriver { configured: String },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error("this worker cannot run tasks: {0}")]
    Unfit(String),
}

/// The host name as a worker id, or `worker` if it is unusable.
pub fn default_worker_id() -> WorkerId {
    sysinfo::System::host_name()
        .and_then(|h| WorkerId::parse(&h).ok())
        .or_else(|| WorkerId::parse("worker").ok())
        .expect("\"worker\" is a valid id")
}

fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_default()
}

/// Runs a worker until `shutdown` fires, then unregisters.
pub async fn run(config: WorkerConfig, shutdown: CancellationToken) -> Result<(), WorkerError> {
    // An https:// master gets mTLS and nothing else; http:// is plain text (loopback masters).
    let (channel, renewal) = if config.master_addr.starts_with("https://") {
        // Made with the usual mode before the identity's private folder inside it: made by
        // that first, it would be 0700 and the task user could not reach its working folder.
        // A folder that cannot be made is reported by the identity, which needs it first.
        let _ = std::fs::create_dir_all(&config.data_dir);
        let secured = identity::secure_channel(
            &config.master_addr,
            &config.worker_id,
            config.join_token.as_ref(),
            &config.data_dir,
            &shutdown,
        )
        .await?;
        match secured {
            Some(secured) => (secured.channel, Some(secured.renewal)),
            None => return Ok(()), // shut down while joining
        }
    } else {
        let channel = Endpoint::from_shared(config.master_addr.clone())
            .map_err(|source| WorkerError::BadMasterAddr { addr: config.master_addr.clone(), source })?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        (channel, None)
    };
    let client = MasterServiceClient::new(channel);

    let simulated = config.simulated_gpus;
    let collector = tokio::task::spawn_blocking(move || {
        let mut c = Collector::new(gpu::detect(simulated));
        c.sample(); // primes CPU usage, measured between two samples
        c
    })
    .await
    .map_err(WorkerError::Collector)?;

    // Drivers this build can run; only those are advertised, so the scheduler never
    // places a task here that cannot run.
    let mut runtime_config = RuntimeConfig::new(config.worker_id.clone(), config.data_dir.clone());
    runtime_config.keep_workdirs = config.keep_workdirs;
    runtime_config.default_grace = config.stop_grace;
    let mut drivers = Vec::new();
    for &driver in &config.drivers {
        match driver {
            Driver::Process => {
                let process = TaskUser::resolve(config.task_user.as_deref())
                    .and_then(|user| ProcessDriver::new(user, &runtime_config.tasks_dir()))
                    .map_err(WorkerError::TaskUser)?;
                let user = process.user();
                info!(
                    user = user.name(),
                    uid = user.uid(),
                    gid = user.gid(),
                    "process tasks run as this user"
                );
                runtime_config = runtime_config.with_driver(driver, Arc::new(process));
                drivers.push(driver);
            }
            Driver::Docker => {
                let options =
                    DockerOptions { keep_containers: config.keep_workdirs, ..DockerOptions::default() };
                match DockerDriver::connect(options).await {
                    Ok(docker) => {
                        runtime_config = runtime_config.with_driver(driver, Arc::new(docker));
                        drivers.push(driver);
                    }
                    // Not advertised: the scheduler then never places docker tasks here.
                    Err(e) => warn!("docker driver disabled: {}", error_chain(&e)),
                }
            }
        }
    }
    if drivers.is_empty() {
        let configured = config.drivers.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ");
        return Err(WorkerError::NoDriver { configured });
    }
    // A worker that could run nothing does not register: it would be a black hole.
    check_fit(&runtime_config, &collector, &config).await?;
    let runtime_stop = CancellationToken::new();
    let send_compression = SendCompression::default();
    let link = Arc::new(GrpcMasterLink::new(client.clone()).with_compression(send_compression.clone()));
    let runtime = TaskRuntime::new(runtime_config, link, runtime_stop.clone());
    // Containers left by a previous process of this worker: followed again, and listed
    // in the registration below.
    runtime.adopt_existing().await;

    let registration = pb::RegisterWorkerRequest {
        worker_id: config.worker_id.to_string(),
        hostname: hostname(),
        cpu_cores: config.cpus.unwrap_or_else(|| collector.cpu_cores()),
        memory_mb: config.memory_mb.unwrap_or_else(|| collector.memory_total_mb()),
        gpus: collector.gpu_inventory().into_iter().map(Into::into).collect(),
        labels: config.labels.iter().cloned().collect(),
        version: VERSION.to_string(),
        protocol_version: PROTOCOL_VERSION,
        drivers: drivers.iter().map(|&d| pb::Driver::from(d).into()).collect(),
        running_tasks: Vec::new(),
        ending_tasks: Vec::new(),
        complete_inventory: true,
    };
    info!(
        worker_id = %config.worker_id,
        master = %config.master_addr,
        cpus = registration.cpu_cores,
        memory_mb = registration.memory_mb,
        gpus = %collector.describe_gpus(),
        drivers = ?drivers.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        "worker starting"
    );

    // The agent stops at shutdown, or when the master turns out to speak another protocol.
    let stop = shutdown.child_token();
    let (contact, _) = tokio::sync::watch::channel(tokio::time::Instant::now());
    let agent = Agent {
        client,
        registration,
        worker_id: config.worker_id.clone(),
        runtime: runtime.clone(),
        shutdown: stop.clone(),
        compression: config.compression,
        send_compression,
        contact: Arc::new(contact),
        fence: Arc::new(parking_lot::Mutex::new(None)),
        stop_grace: config.stop_grace,
        reconnected: Arc::new(tokio::sync::Notify::new()),
        backoff_cap: config.heartbeat_interval.clamp(Duration::from_secs(1), MAX_BACKOFF),
        status: status::StatusFile::new(&config.data_dir, config.heartbeat_interval),
    };
    if !agent.register_until_accepted().await? {
        runtime.shutdown().await;
        return Ok(()); // shut down before the master answered
    }
    let fencing = tokio::spawn({
        let agent = agent.clone();
        async move { agent.fence_watch().await }
    });

    let heartbeats = tokio::spawn({
        let agent = agent.clone();
        let stop = stop.clone();
        async move {
            let result = agent.heartbeat_loop(collector, config.heartbeat_interval).await;
            if result.is_err() {
                stop.cancel();
            }
            result
        }
    });
    let commands = tokio::spawn({
        let agent = agent.clone();
        async move { agent.command_loop().await }
    });

    stop.cancelled().await;
    let failure = heartbeats.await.ok().and_then(Result::err);
    let _ = commands.await;
    fencing.abort();
    // Stop the tasks first and report them interrupted (the master re-queues them and sends
    // nothing more here), then leave: the other order would let a second copy start while
    // this one is still being stopped.
    runtime_stop.cancel();
    runtime.shutdown().await;
    if failure.is_none() {
        agent.unregister().await;
    }
    agent.status.remove();
    if let Some(renewal) = renewal {
        renewal.abort();
    }
    failure.map_or(Ok(()), Err)
}

#[derive(Clone)]
struct Agent {
    client: MasterServiceClient<Channel>,
    registration: pb::RegisterWorkerRequest,
    worker_id: WorkerId,
    runtime: TaskRuntime,
    shutdown: CancellationToken,
    compression: Compression,
    /// Agreed with the master at registration; used for heartbeats and logs.
    send_compression: SendCompression,
    /// When the latest call the master acknowledged (registration, heartbeat) was sent.
    contact: Arc<tokio::sync::watch::Sender<tokio::time::Instant>>,
    /// When to stop tasks out of contact, from the master's word at registration.
    fence: Arc<parking_lot::Mutex<Option<(fence::FencePolicy, Duration)>>>,
    stop_grace: Duration,
    /// Wakes the command loop when the master is reachable again.
    reconnected: Arc<tokio::sync::Notify>,
    /// Longest wait between reconnection attempts.
    backoff_cap: Duration,
    /// What `cloudai worker --check` reads.
    status: status::StatusFile,
}

impl Agent {
    /// Registers, retrying with backoff while the master is unreachable.
    /// Returns `Ok(false)` if shutdown came first.
    async fn register_until_accepted(&self) -> Result<bool, WorkerError> {
        let mut backoff = Duration::from_millis(100);
        let mut attempts = 0u32;
        loop {
            let mut client = self.client.clone();
            let mut request = self.registration.clone();
            // What runs here now, and what ended but is still being reported, so the master
            // reconciles at once: whatever else it placed here is gone.
            request.running_tasks = self.running_tasks();
            request.ending_tasks = self.runtime.ending_tasks();
            let sent = tokio::time::Instant::now();
            let call = client.register_worker(request);
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(false),
                r = call => r,
            };
            match result {
                Ok(resp) => {
                    let resp = resp.into_inner();
                    // Masters of protocol 1 predate the field: it reads as 0.
                    let master = resp.protocol_version.max(1);
                    if master != PROTOCOL_VERSION {
                        // An older master accepts anyone: leave before it places tasks here.
                        self.unregister().await;
                        return Err(self.protocol_mismatch(master));
                    }
                    let encoding = self.compression.negotiate(&resp.accept_compression);
                    self.send_compression.set(encoding);
                    self.contact.send_replace(sent);
                    // Masters that predate fencing say 0: they give no deadline to keep.
                    let loss_after = Duration::from_millis(resp.loss_after_ms);
                    *self.fence.lock() = (!loss_after.is_zero())
                        .then(|| (fence::FencePolicy::new(loss_after, self.stop_grace), loss_after));
                    self.status.write(true);
                    self.reconnected.notify_one();
                    self.runtime.master_reachable();
                    let compression = encoding.map_or("none", |_| self.compression.as_str());
                    info!(worker_id = %self.worker_id, master_id = %resp.master_id, compression, "registered with master");
                    return Ok(true);
                }
                // A bad request, or a certificate the master refuses (revoked, another worker's).
                Err(status)
                    if matches!(
                        status.code(),
                        Code::InvalidArgument | Code::PermissionDenied | Code::Unauthenticated
                    ) =>
                {
                    return Err(WorkerError::Refused(status));
                }
                Err(status) if status.code() == Code::FailedPrecondition => {
                    return Err(match cloudai_proto::refused_version(&status) {
                        Some(master) => self.protocol_mismatch(master),
                        None => WorkerError::Refused(status),
                    });
                }
                Err(status) => {
                    attempts += 1;
                    if attempts == 1 || attempts.is_multiple_of(20) {
                        warn!(code = ?status.code(), message = status.message(), attempts, "master unreachable, retrying registration");
                    }
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(false),
                _ = tokio::time::sleep(jittered(backoff)) => {}
            }
            backoff = (backoff * 2).min(self.backoff_cap);
        }
    }

    /// Logs and returns the refusal of a master that speaks protocol `master`.
    fn protocol_mismatch(&self, master: u32) -> WorkerError {
        error!(
            worker_protocol = PROTOCOL_VERSION,
            master_protocol = master,
            "this worker and the master speak different protocol versions; upgrade the worker or the master"
        );
        WorkerError::ProtocolMismatch { worker: PROTOCOL_VERSION, master }
    }

    fn running_tasks(&self) -> Vec<pb::RunningTask> {
        self.runtime.running_tasks().into_iter().map(pb::RunningTask::from).collect()
    }

    /// Heartbeats until shutdown; ends with an error only when the master, registered
    /// with again, speaks another protocol version, or refuses this worker (revoked).
    async fn heartbeat_loop(&self, collector: Collector, interval: Duration) -> Result<(), WorkerError> {
        let mut failing = false;
        // The collector moves into each blocking sample call and back.
        let mut owned = Some(collector);
        // A call that takes longer than an interval is as good as lost: the next one goes out.
        let call_timeout = interval.clamp(Duration::from_secs(2), Duration::from_secs(10));
        let mut next = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tokio::time::sleep_until(next) => {}
            }
            // Out of contact, try again soon (jittered, so a returning master is not stampeded).
            next = tokio::time::Instant::now()
                + if failing { jittered(FAILING_RETRY.min(interval)) } else { interval };
            let Some(mut c) = owned.take() else { break };
            let Ok((c, sample)) = tokio::task::spawn_blocking(move || {
                let s = c.sample();
                (c, s)
            })
            .await
            else {
                warn!("telemetry collection panicked; stopping heartbeats");
                break;
            };
            owned = Some(c);
            let heartbeat = pb::Heartbeat {
                worker_id: self.worker_id.to_string(),
                timestamp_ms: unix_ms(),
                cpu_usage: sample.cpu_usage,
                memory_usage: sample.memory_usage,
                gpu_usage: sample.gpu_usage(),
                memory_used_mb: sample.memory_used_mb,
                memory_total_mb: sample.memory_total_mb,
                // Identity strings travel once, at registration.
                gpus: sample
                    .gpus
                    .into_iter()
                    .map(|g| pb::GpuStats { uuid: String::new(), model: String::new(), ..g.into() })
                    .collect(),
                running_tasks: self.running_tasks(),
                unhealthy: self.runtime.health().await.unwrap_or_default(),
            };
            let mut client = self.send_compression.apply(self.client.clone());
            let mut request = tonic::Request::new(heartbeat);
            request.set_timeout(call_timeout);
            let sent = tokio::time::Instant::now();
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                r = client.send_heartbeat(request) => r,
            };
            match result {
                Ok(_) => {
                    self.contact.send_replace(sent);
                    self.status.write(true);
                    if failing {
                        info!("heartbeats reach the master again");
                        failing = false;
                        self.reconnected.notify_one();
                        self.runtime.master_reachable();
                    }
                }
                Err(status) if status.code() == Code::NotFound => {
                    info!("master does not know this worker (restarted?): registering again");
                    match self.register_until_accepted().await {
                        Ok(true) => failing = false,
                        Ok(false) => break,
                        Err(e @ WorkerError::ProtocolMismatch { .. }) => return Err(e),
                        Err(e) => {
                            warn!(error = %format!("{e:#}"), "re-registration refused");
                        }
                    }
                }
                // Revoked (or a certificate that is not this worker's): nothing to retry.
                Err(status) if status.code() == Code::PermissionDenied => {
                    error!(message = status.message(), "the master refuses this worker; stopping");
                    return Err(WorkerError::Refused(status));
                }
                Err(status) if status.code() == Code::ResourceExhausted => {
                    // Rate-limited: wait as long as the master asks before the next heartbeat.
                    let wait = status
                        .metadata()
                        .get(cloudai_proto::RETRY_AFTER_MS)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map_or(interval, Duration::from_millis);
                    debug!(wait_ms = wait.as_millis() as u64, "heartbeat rate-limited by the master");
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                Err(status) => {
                    if !failing {
                        warn!(code = ?status.code(), message = status.message(), "heartbeat failed; will keep trying");
                        failing = true;
                        self.status.write(false);
                    } else {
                        debug!(code = ?status.code(), "heartbeat failed again");
                    }
                }
            }
        }
        Ok(())
    }

    /// Stops this worker's tasks when the master has acknowledged nothing for the fence
    /// policy's time, before the master could start them elsewhere (see [`fence`]).
    async fn fence_watch(&self) {
        let mut contact = self.contact.subscribe();
        loop {
            let last = *contact.borrow_and_update();
            let policy = *self.fence.lock();
            let Some((policy, loss_after)) = policy else {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    r = contact.changed() => if r.is_err() { return } else { continue },
                }
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = contact.changed() => if r.is_err() { return } else { continue },
                _ = tokio::time::sleep_until(last + policy.fence_after) => {}
            }
            let why = format!(
                "no heartbeat acknowledged by the master for {}s; it may run this task elsewhere after {}s of silence, so it is stopped here first",
                last.elapsed().as_secs(),
                loss_after.as_secs()
            );
            let stopped = self.runtime.fence(policy.stop_grace, &why);
            if stopped > 0 {
                warn!(
                    tasks = stopped,
                    silent_s = last.elapsed().as_secs(),
                    "out of contact with the master: stopped this worker's tasks"
                );
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = contact.changed() => if r.is_err() { return },
            }
            info!("contact with the master restored");
        }
    }

    /// Keeps the command stream open, reopening it after errors.
    async fn command_loop(&self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            let mut client = self.client.clone();
            let open =
                client.stream_commands(pb::StreamCommandsRequest { worker_id: self.worker_id.to_string() });
            let result = tokio::select! {
                _ = self.shutdown.cancelled() => return,
                r = open => r,
            };
            match result {
                Ok(resp) => {
                    backoff = Duration::from_millis(200);
                    let mut stream = resp.into_inner();
                    loop {
                        let next = tokio::select! {
                            _ = self.shutdown.cancelled() => return,
                            n = stream.message() => n,
                        };
                        match next {
                            Ok(Some(command)) => self.handle_command(command),
                            Ok(None) => break,
                            Err(status) => {
                                debug!(code = ?status.code(), "command stream ended");
                                break;
                            }
                        }
                    }
                }
                Err(status) => debug!(code = ?status.code(), "cannot open command stream yet"),
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(jittered(backoff)) => {}
                // Registered again or heartbeats are back: the stream can open now.
                _ = self.reconnected.notified() => backoff = Duration::from_millis(200),
            }
            backoff = (backoff * 2).min(self.backoff_cap);
        }
    }

    fn handle_command(&self, command: pb::WorkerCommand) {
        // A start this worker cannot read is still answered, when it names its task.
        let start = match &command.command {
            Some(pb::worker_command::Command::StartTask(s)) => {
                TaskId::parse(&s.task_id).ok().map(|id| (id, s.attempt))
            }
            _ => None,
        };
        match WorkerCommand::try_from(command) {
            Ok(WorkerCommand::Start(launch)) => self.runtime.start(launch),
            Ok(WorkerCommand::Cancel(cancel)) => self.runtime.cancel(cancel),
            Err(e) => match start {
                Some((task_id, attempt)) => {
                    self.runtime.refuse(task_id, attempt, format!("invalid start command: {e}"))
                }
                None => warn!(error = %e, "ignoring an invalid command from the master"),
            },
        }
    }

    async fn unregister(&self) {
        let mut client = self.client.clone();
        let call =
            client.unregister_worker(pb::UnregisterWorkerRequest { worker_id: self.worker_id.to_string() });
        match tokio::time::timeout(UNREGISTER_DEADLINE, call).await {
            Ok(Ok(_)) => info!(worker_id = %self.worker_id, "unregistered from master"),
            Ok(Err(status)) => warn!(code = ?status.code(), message = status.message(), "unregister failed"),
            Err(_) => warn!("unregister timed out"),
        }
    }
}

/// Software version a worker reports when it registers.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `d` less up to a quarter of it, at random, so that many workers do not retry in step.
fn jittered(d: Duration) -> Duration {
    let quarter = (d.as_millis() / 4).max(1) as u64;
    d.saturating_sub(Duration::from_millis(rand::random::<u64>() % quarter))
}

/// Refuses to register a worker that could run no task: its data folder cannot be written,
/// or it has no CPU or memory to offer.
async fn check_fit(
    runtime: &RuntimeConfig,
    collector: &Collector,
    config: &WorkerConfig,
) -> Result<(), WorkerError> {
    let tasks = runtime.tasks_dir();
    if let Err(e) = cloudai_runtime::probe_writable(&tasks).await {
        return Err(WorkerError::Unfit(format!(
            "its task folder {} cannot be written: {e}",
            tasks.display()
        )));
    }
    let cpus = config.cpus.unwrap_or_else(|| collector.cpu_cores());
    if cpus <= 0.0 || !cpus.is_finite() {
        return Err(WorkerError::Unfit(format!("it offers {cpus} CPUs")));
    }
    if config.memory_mb.unwrap_or_else(|| collector.memory_total_mb()) == 0 {
        return Err(WorkerError::Unfit("it offers no memory".to_owned()));
    }
    Ok(())
}
