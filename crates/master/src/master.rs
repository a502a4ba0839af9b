//! The master: wires the gRPC service, the TelemetryManager, the task service, the
//! history writer and the HTTP API, and shuts them down in order under one deadline.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use std::sync::Arc;

use cloudai_store::{SqliteStore, Store, StoreConfig};
use tokio_util::task::TaskTracker;

use crate::alerting::{AlertConfig, AlertService};
use crate::events::EventBus;
use crate::http::{self, ApiState};
use crate::rpc::{self, CommandHub, MasterRpc};
use crate::tasks::{TaskConfig, TaskParts, TaskService};
use crate::telemetry::{TelemetryConfig, TelemetryManager};

/// How long each shutdown stage may take before it is abandoned.
const STAGE_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct MasterConfig {
    pub telemetry: TelemetryConfig,
    pub tasks: TaskConfig,
    pub alerts: AlertConfig,
    /// `sqlite://PATH` (the embedded store).
    pub database_url: String,
}

impl MasterConfig {
    /// Defaults with the store in `data_dir`.
    pub fn new(data_dir: &std::path::Path) -> Self {
        Self {
            telemetry: TelemetryConfig::default(),
            tasks: TaskConfig::default(),
            alerts: AlertConfig::default(),
            database_url: format!("sqlite://{}", data_dir.join("cloudai.db").display()),
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
}

/// A running master.
pub struct Master {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub telemetry: TelemetryManager,
    pub tasks: TaskService,
    pub events: EventBus,
    pub commands: CommandHub,
    pub alerts: AlertService,
    store: Arc<dyn Store>,
    alerts_stop: CancellationToken,
    alerts_tracker: TaskTracker,
    tasks_stop: CancellationToken,
    tasks_tracker: TaskTracker,
    history_stop: CancellationToken,
    history_restorer: JoinHandle<()>,
    history_task: JoinHandle<()>,
    http_stop: CancellationToken,
    grpc_stop: CancellationToken,
    http_task: JoinHandle<std::io::Result<()>>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
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
        let store = tokio::task::spawn_blocking(move || SqliteStore::open_url(&url, StoreConfig::default()))
            .await
            .map_err(std::io::Error::other)?
            .map_err(|source| MasterError::Store { url: config.database_url.clone(), source })?;
        let store: Arc<dyn Store> = Arc::new(store);
        let metrics = crate::metrics::Metrics::default();
        let events = EventBus::default();
        let (minutes_tx, minutes_rx) = crate::history_store::minutes_channel();
        let telemetry = TelemetryManager::new(config.telemetry.clone(), events.clone(), minutes_tx)?;
        let retention_ms = config.telemetry.history.long_window_ms;
        let history_stop = CancellationToken::new();
        // Subscribed before any worker can register.
        let history_restorer = crate::history_store::spawn_restorer(
            store.clone(),
            telemetry.clone(),
            events.subscribe(),
            retention_ms,
            history_stop.clone(),
        );
        let history_task =
            crate::history_store::spawn_writer(store.clone(), minutes_rx, retention_ms, history_stop.clone());
        telemetry.start();
        let alerts_stop = CancellationToken::new();
        let alerts_tracker = TaskTracker::new();
        let alerts = AlertService::start(
            &config.alerts,
            telemetry.clone(),
            &events,
            &alerts_tracker,
            alerts_stop.clone(),
        )?;
        let commands = CommandHub::default();
        let master_id = format!("{:016x}", rand::random::<u64>());

        let tasks_stop = CancellationToken::new();
        let tasks_tracker = TaskTracker::new();
        let parts = TaskParts {
            store: store.clone(),
            telemetry: telemetry.clone(),
            events: events.clone(),
            commands: commands.clone(),
            metrics: metrics.clone(),
        };
        let tasks = TaskService::start(config.tasks.clone(), parts, &tasks_tracker, tasks_stop.clone())
            .await
            .map_err(|source| MasterError::Store { url: config.database_url.clone(), source })?;

        let grpc_stop = CancellationToken::new();
        let rpc = MasterRpc::new(
            telemetry.clone(),
            tasks.clone(),
            commands.clone(),
            metrics.clone(),
            master_id.clone(),
            grpc_stop.clone(),
        );
        let grpc_task = tokio::spawn(rpc::serve(grpc, rpc, grpc_stop.clone()));
        info!("gRPC listening on {grpc_addr}");

        let http_stop = CancellationToken::new();
        let state = ApiState {
            telemetry: telemetry.clone(),
            tasks: tasks.clone(),
            metrics: metrics.clone(),
            alerts: alerts.clone(),
        };
        let http_task = tokio::spawn(http::serve(http, state, http_stop.clone()));
        info!("HTTP API listening on {http_addr}");
        info!(master_id, inactivity_timeout = ?config.telemetry.inactivity_timeout, "master started");

        Ok(Self {
            http_addr,
            grpc_addr,
            telemetry,
            tasks,
            events,
            commands,
            alerts,
            store,
            alerts_stop,
            alerts_tracker,
            tasks_stop,
            tasks_tracker,
            history_stop,
            history_restorer,
            history_task,
            http_stop,
            grpc_stop,
            http_task,
            grpc_task,
        })
    }

    /// Ordered shutdown: HTTP server, alerting (queued webhook posts are abandoned), task
    /// actor (transitions flushed), TelemetryManager (every worker task joined), history
    /// writer (open minutes stored), gRPC server, store.
    pub async fn shutdown(self) {
        info!("master shutting down");
        self.http_stop.cancel();
        server_stage("http server", self.http_task).await;
        self.alerts_stop.cancel();
        self.alerts_tracker.close();
        let alerts = async {
            self.alerts_tracker.wait().await;
            self.alerts.stopped().await;
        };
        stage("alerting", alerts).await;
        self.tasks_stop.cancel();
        self.tasks_tracker.close();
        stage("task service", self.tasks_tracker.wait()).await;
        stage("telemetry manager", self.telemetry.shutdown()).await;
        // After the telemetry manager: it queues every worker's open minute as it stops.
        self.history_stop.cancel();
        stage("history restorer", self.history_restorer).await;
        stage("history writer", self.history_task).await;
        self.grpc_stop.cancel();
        server_stage("grpc server", self.grpc_task).await;
        stage("store", self.store.close()).await;
        info!("master stopped");
    }
}

/// Waits for one shutdown stage up to the deadline; a stage that overruns is logged and left,
/// so the later stages still run.
async fn stage<F: std::future::Future>(what: &str, done: F) -> Option<F::Output> {
    let out = tokio::time::timeout(STAGE_DEADLINE, done).await.ok();
    if out.is_none() {
        warn!("{what} did not stop in time");
    }
    out
}

/// A server task's stage: also logs how the server ended if not cleanly.
async fn server_stage<E: std::fmt::Display>(what: &str, task: JoinHandle<Result<(), E>>) {
    match stage(what, task).await {
        Some(Ok(Err(e))) => warn!(error = %e, "{what} ended with an error"),
        Some(Err(e)) => warn!(error = %e, "{what} task failed"),
        Some(Ok(Ok(()))) | None => {}
    }
}
