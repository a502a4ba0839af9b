//! The master: wires the gRPC service, the TelemetryManager, the task service, the
//! history writer and the HTTP API, and shuts them down in order under one deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cloudai_store::{SqliteStore, Store, StoreConfig};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::alerting::{AlertConfig, AlertService};
use crate::events::EventBus;
use crate::fleet::{Fleet, FleetConfig};
use crate::http::{self, ApiState, HttpLimits};
use crate::identity::WorkerTrust;
use crate::rpc::{self, MasterRpc};
use crate::shutdown::{Shutdown, StageReport};
use crate::tasks::{CommandHub, TaskConfig, TaskParts, TaskService};
use crate::telemetry::{TelemetryConfig, TelemetryManager};

/// How long the whole ordered shutdown may take.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(15);

#[derive(Clone, Debug)]
pub struct MasterConfig {
    pub telemetry: TelemetryConfig,
    pub tasks: TaskConfig,
    pub alerts: AlertConfig,
    /// `sqlite://PATH` (the embedded store).
    pub database_url: String,
    /// Start on an existing but empty database file (`--init`) instead of refusing it.
    pub init_store: bool,
    pub http: HttpLimits,
    pub workers: WorkerLimits,
    pub security: Security,
    /// The master's data folder (`admin.token` lives here).
    pub data_dir: std::path::PathBuf,
    pub auth: crate::auth::AuthConfig,
}

/// How the master proves who it is and knows who its workers are.
#[derive(Clone, Debug)]
pub enum Security {
    /// Plain text, and a worker is whoever its messages say: for loopback only
    /// (`--insecure`, `cloudai dev`; the CLI refuses it on other addresses).
    Insecure,
    /// TLS for the API, mTLS for workers, with the cluster CA kept in `pki_dir`.
    Tls(TlsConfig),
}

#[derive(Clone, Debug)]
pub struct TlsConfig {
    /// `<data dir>/pki`: the CA, the join token and the revoked workers.
    pub pki_dir: std::path::PathBuf,
    /// Names and addresses the master's certificate carries besides this host's name,
    /// `localhost` and the loopback addresses (`TLS_SAN`).
    pub names: Vec<String>,
    /// How long a worker's certificate is valid; it renews itself at two thirds of it.
    pub worker_cert_lifetime: Duration,
    /// The API's own certificate chain and key (PEM files) instead of one from the cluster CA.
    pub api_cert: Option<(std::path::PathBuf, std::path::PathBuf)>,
}

impl TlsConfig {
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            pki_dir: data_dir.join("pki"),
            names: Vec::new(),
            worker_cert_lifetime: Duration::from_secs(30 * 24 * 3600),
            api_cert: None,
        }
    }
}

/// The master's server certificates live this long; a new one is made at every start.
const SERVER_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// How many workers the master keeps, and for how long after they go silent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WorkerLimits {
    /// A lost worker silent this long is forgotten (in memory and its stored history).
    pub forget_after: Duration,
    /// Most workers registered at once.
    pub max_workers: usize,
    /// What one registration or heartbeat may carry.
    pub message: cloudai_proto::limits::WireLimits,
}

impl Default for WorkerLimits {
    fn default() -> Self {
        let fleet = FleetConfig::default();
        Self {
            forget_after: fleet.forget_after,
            max_workers: fleet.max_workers,
            message: cloudai_proto::limits::WireLimits::default(),
        }
    }
}

impl MasterConfig {
    /// Defaults with the store in `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            telemetry: TelemetryConfig::default(),
            tasks: TaskConfig::default(),
            alerts: AlertConfig::default(),
            database_url: format!("sqlite://{}", data_dir.join("cloudai.db").display()),
            init_store: false,
            http: HttpLimits::default(),
            workers: WorkerLimits::default(),
            security: Security::Insecure,
            data_dir: data_dir.to_path_buf(),
            // Tests talk plain HTTP without tokens; `cloudai master` turns this on.
            auth: crate::auth::AuthConfig::default(),
        }
    }
}

/// Raw blocks are dropped whole, so they are a fraction of the window: memory peaks at the
/// window plus one block.
pub fn history_config(window: Duration, retention: Duration) -> cloudai_history::HistoryConfig {
    let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
    let block_ms = (window_ms / 6).clamp(60_000, 600_000) / 60_000 * 60_000;
    cloudai_history::HistoryConfig {
        window_ms,
        block_ms,
        long_window_ms: i64::try_from(retention.as_millis()).unwrap_or(i64::MAX),
        ..cloudai_history::HistoryConfig::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("cannot open the store {url}")]
    Store {
        url: String,
        #[source]
        source: cloudai_store::StoreError,
    },
    #[error("invalid telemetry history settings")]
    History(#[from] cloudai_history::HistoryError),
    #[error("cannot read the listeners' addresses")]
    Io(#[from] std::io::Error),
    #[error("cannot start the alert webhook")]
    Webhook(#[from] cloudai_alerts::WebhookError),
    #[error("cannot set up TLS")]
    Tls(#[from] cloudai_pki::PkiError),
    #[error("cannot set up the gRPC server's TLS")]
    GrpcTls(#[from] tonic::transport::Error),
    #[error("cannot set up the admin token")]
    Bootstrap(#[from] crate::auth::BootstrapError),
}

/// What a TLS master serves with.
struct Served {
    trust: WorkerTrust,
    grpc: Option<tonic::transport::ServerTlsConfig>,
    api: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ca_pem: Option<String>,
}

/// Opens (or on first start makes) the cluster CA and issues the master's certificates.
fn serve_tls(
    security: &Security,
    addrs: [SocketAddr; 2],
    metrics: &crate::metrics::Metrics,
) -> Result<Served, MasterError> {
    let Security::Tls(tls) = security else {
        return Ok(Served {
            trust: WorkerTrust::insecure(metrics.clone()),
            grpc: None,
            api: None,
            ca_pem: None,
        });
    };
    let dir = cloudai_pki::PkiDir::new(&tls.pki_dir);
    let (ca, created) = dir.open_or_create_ca("cloudai")?;
    if created {
        info!(path = %dir.ca_cert_path().display(), fingerprint = ca.fingerprint(), "cluster CA created");
    }
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Some(host) = hostname() {
        names.push(host);
    }
    for addr in addrs {
        if !addr.ip().is_unspecified() {
            names.push(addr.ip().to_string());
        }
    }
    names.extend(tls.names.iter().cloned());
    names.sort();
    names.dedup();
    let (server, key_pem) = ca.issue_server(&names, SERVER_CERT_LIFETIME)?;
    let identity = tonic::transport::Identity::from_pem(&server.chain_pem, &key_pem);
    // Workers without a certificate yet may call JoinCluster; every other RPC checks it.
    let grpc = tonic::transport::ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(tonic::transport::Certificate::from_pem(ca.cert_pem()))
        .client_auth_optional(true);
    let api = match &tls.api_cert {
        Some((cert, key)) => {
            let read = |p: &std::path::Path| {
                std::fs::read_to_string(p)
                    .map_err(|source| cloudai_pki::PkiError::File { path: p.to_path_buf(), source })
            };
            cloudai_pki::api_server_config(&read(cert)?, &read(key)?)?
        }
        None => cloudai_pki::api_server_config(&server.chain_pem, &key_pem)?,
    };
    let ca_pem = ca.cert_pem().to_string();
    let trust = WorkerTrust::secure(dir, ca, tls.worker_cert_lifetime, metrics.clone())?;
    Ok(Served { trust, grpc: Some(grpc), api: Some(api), ca_pem: Some(ca_pem) })
}

fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// A running master.
pub struct Master {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub fleet: Fleet,
    pub telemetry: TelemetryManager,
    pub tasks: TaskService,
    pub events: EventBus,
    pub alerts: AlertService,
    /// How workers are known (the join token, revocation).
    pub trust: WorkerTrust,
    /// The cluster CA's certificate (PEM) on a TLS master.
    pub ca_pem: Option<String>,
    pub tokens: crate::auth::TokenService,
    /// Records changes made through the API (and worker revocations, join-token rotation).
    pub audit: crate::auth::AuditLog,
    /// An admin token living in this process only, for the console on the master's
    /// terminal; `None` without authentication.
    pub console_token: Option<String>,
    rpc: MasterRpc,
    api: axum::Router,
    store: Arc<dyn Store>,
    shutdown: Shutdown,
}

impl Master {
    /// Starts the master on already-bound listeners (port 0 works: the real addresses
    /// are logged and kept in `http_addr` / `grpc_addr`).
    pub async fn start(
        config: MasterConfig,
        http: TcpListener,
        grpc: TcpListener,
    ) -> Result<Self, MasterError> {
        let http_addr = http.local_addr()?;
        let grpc_addr = grpc.local_addr()?;
        let url = config.database_url.clone();
        let store_config = StoreConfig { init: config.init_store, ..StoreConfig::default() };
        let store = tokio::task::spawn_blocking(move || SqliteStore::open_url(&url, store_config))
            .await
            .map_err(std::io::Error::other)?
            .map_err(|source| MasterError::Store { url: config.database_url.clone(), source })?;
        let store: Arc<dyn Store> = Arc::new(store);
        let store_error = |source| MasterError::Store { url: config.database_url.clone(), source };
        let tokens = crate::auth::TokenService::load(store.clone()).await.map_err(store_error)?;
        if config.auth.required {
            crate::auth::ensure_admin(&tokens, &config.data_dir).await?;
        }

        // Stages in shutdown order: ingress first, storage last.
        let mut shutdown = Shutdown::new();
        let http_stage = shutdown.stage("http server");
        let audit_stage = shutdown.stage("audit");
        let alerting_stage = shutdown.stage("alerting");
        let tasks_stage = shutdown.stage("task service");
        // The fleet's checker stops with the telemetry tasks: no liveness verdicts once they are gone.
        let telemetry_stage = shutdown.stage("telemetry manager");
        let history_stage = shutdown.stage("history");
        let grpc_stage = shutdown.stage("grpc server");

        let metrics = crate::metrics::Metrics::default();
        let served = serve_tls(&config.security, [http_addr, grpc_addr], &metrics)?;
        let events = EventBus::default();
        let fleet = Fleet::new(
            FleetConfig {
                inactivity_timeout: config.telemetry.inactivity_timeout,
                loss_grace: config.tasks.loss_grace,
                // Never before a cut-off worker has stopped its tasks itself (it counts from its last heartbeat).
                restart_grace: config
                    .tasks
                    .restart_grace
                    .max(config.telemetry.inactivity_timeout + config.tasks.loss_grace),
                forget_after: config.workers.forget_after,
                max_workers: config.workers.max_workers,
            },
            events.clone(),
        );
        let (minutes_tx, minutes_rx) = crate::history_store::minutes_channel();
        let telemetry =
            TelemetryManager::new(config.telemetry.clone(), fleet.clone(), minutes_tx, &telemetry_stage)?;
        let retention_ms = config.telemetry.history.long_window_ms;
        // Subscribed before any worker can register.
        crate::history_store::spawn_restorer(
            store.clone(),
            telemetry.clone(),
            fleet.subscribe("history restorer"),
            retention_ms,
            &history_stage,
        );
        crate::history_store::spawn_writer(store.clone(), minutes_rx, retention_ms, &history_stage);
        fleet.start(telemetry_stage.tracker(), telemetry_stage.token());
        telemetry.start();
        let alerts = AlertService::start(
            &config.alerts,
            telemetry.clone(),
            fleet.subscribe("alerting"),
            &alerting_stage,
        )?;
        let commands = CommandHub::default();
        let master_id = format!("{:016x}", rand::random::<u64>());

        let parts = TaskParts {
            store: store.clone(),
            fleet: fleet.clone(),
            events: events.clone(),
            commands: commands.clone(),
            metrics: metrics.clone(),
        };
        let tasks = TaskService::start(config.tasks.clone(), parts, &tasks_stage)
            .await
            .map_err(|source| MasterError::Store { url: config.database_url.clone(), source })?;

        let rpc = MasterRpc::new(
            fleet.clone(),
            telemetry.clone(),
            tasks.clone(),
            commands,
            metrics.clone(),
            master_id.clone(),
            grpc_stage.token(),
        )
        .with_limits(config.workers.message)
        .with_trust(served.trust.clone());
        grpc_stage
            .spawn(server("grpc server", rpc::serve(grpc, rpc.clone(), served.grpc, grpc_stage.token())?));
        info!("gRPC listening on {grpc_addr}");

        let audit = crate::auth::AuditLog::start(store.clone(), audit_stage.tracker(), audit_stage.token());
        let console_token =
            config.auth.required.then(|| tokens.ephemeral("console", crate::auth::Role::Admin));
        let state = ApiState {
            telemetry: telemetry.clone(),
            tasks: tasks.clone(),
            metrics: metrics.clone(),
            alerts: alerts.clone(),
            auth: crate::auth::Auth::new(config.auth.clone(), tokens.clone(), audit.clone()),
            trust: served.trust.clone(),
            grpc_port: grpc_addr.port(),
            fleet: fleet.clone(),
        };
        let api = http::router(state.clone());
        http_stage.spawn(server(
            "http server",
            http::serve(http, state, config.http, served.api, http_stage.token()),
        ));
        info!("HTTP API listening on {http_addr}");
        info!(master_id, inactivity_timeout = ?config.telemetry.inactivity_timeout, "master started");

        Ok(Self {
            http_addr,
            grpc_addr,
            fleet,
            telemetry,
            tasks,
            events,
            alerts,
            trust: served.trust,
            ca_pem: served.ca_pem,
            tokens,
            audit,
            console_token,
            rpc,
            api,
            store,
            shutdown,
        })
    }

    /// The gRPC service's handlers, the ones the gRPC server calls, for calling in-process
    /// (the fuzz targets do): a request's bytes are already decoded, and it has no peer.
    pub fn grpc_handlers(&self) -> MasterRpc {
        self.rpc.clone()
    }

    /// The HTTP API's router as the server runs it, for requests sent in-process (the fuzz
    /// targets send them). It lacks the server's connection layer: the peer address and, on
    /// loopback, the same-host check.
    pub fn api_router(&self) -> axum::Router {
        self.api.clone()
    }

    /// Ordered shutdown under one deadline: HTTP server, audit writer (the records the API
    /// queued are written; later ones are written directly), alerting (queued webhook posts are
    /// abandoned), task actor (transitions flushed), fleet and TelemetryManager (every worker
    /// task joined, then every open history minute queued), history writer (minutes stored),
    /// gRPC server, then the store. Returns how each stage stopped.
    pub async fn shutdown(self) -> Vec<StageReport> {
        info!("master shutting down");
        let telemetry = self.telemetry.clone();
        let reports = self
            .shutdown
            .run(SHUTDOWN_DEADLINE, |stage, _| {
                // Its worker tasks are gone: what they held of the open minutes is final.
                if stage == "telemetry manager" {
                    telemetry.close_open_minutes();
                }
                std::future::ready(())
            })
            .await;
        if tokio::time::timeout(Duration::from_secs(5), self.store.close()).await.is_err() {
            warn!("store did not close in time");
        }
        info!("master stopped");
        reports
    }
}

/// A server's task: logs how it ended if not cleanly.
async fn server<E: std::fmt::Display>(
    what: &'static str,
    serve: impl std::future::Future<Output = Result<(), E>>,
) {
    if let Err(e) = serve.await {
        warn!(error = %e, "{what} ended with an error");
    }
}
