//! The master: wires the gRPC service, the TelemetryManager and the HTTP API, and
//! shuts them down in order (HTTP → telemetry → gRPC) under one deadline.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::events::EventBus;
use crate::http::{self, ApiState};
use crate::rpc::{self, CommandHub, MasterRpc};
use crate::telemetry::{TelemetryConfig, TelemetryManager};

/// How long each shutdown stage may take before it is abandoned.
const STAGE_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Default)]
pub struct MasterConfig {
    pub telemetry: TelemetryConfig,
}

impl MasterConfig {
    pub fn from_args(args: &crate::config::MasterArgs) -> Self {
        Self {
            telemetry: TelemetryConfig {
                inactivity_timeout: args.inactivity_timeout,
                channel_capacity: args.telemetry_channel_capacity,
            },
        }
    }
}

/// A running master.
pub struct Master {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub telemetry: TelemetryManager,
    pub events: EventBus,
    pub commands: CommandHub,
    http_stop: CancellationToken,
    grpc_stop: CancellationToken,
    http_task: JoinHandle<std::io::Result<()>>,
    grpc_task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Master {
    /// Starts the master on already-bound listeners (port 0 works: the real addresses
    /// are logged and kept in `http_addr` / `grpc_addr`).
    pub async fn start(config: MasterConfig, http: TcpListener, grpc: TcpListener) -> std::io::Result<Self> {
        let http_addr = http.local_addr()?;
        let grpc_addr = grpc.local_addr()?;
        let events = EventBus::default();
        let telemetry = TelemetryManager::new(config.telemetry.clone(), events.clone());
        telemetry.start();
        let commands = CommandHub::default();
        let master_id = format!("{:016x}", rand::random::<u64>());

        let grpc_stop = CancellationToken::new();
        let rpc = MasterRpc::new(telemetry.clone(), commands.clone(), master_id.clone(), grpc_stop.clone());
        let grpc_task = tokio::spawn(rpc::serve(grpc, rpc, grpc_stop.clone()));
        info!("gRPC listening on {grpc_addr}");

        let http_stop = CancellationToken::new();
        let state = ApiState { telemetry: telemetry.clone() };
        let http_task = tokio::spawn(http::serve(http, state, http_stop.clone()));
        info!("HTTP API listening on {http_addr}");
        info!(master_id, inactivity_timeout = ?config.telemetry.inactivity_timeout, "master started");

        Ok(Self {
            http_addr,
            grpc_addr,
            telemetry,
            events,
            commands,
            http_stop,
            grpc_stop,
            http_task,
            grpc_task,
        })
    }

    /// Binds the configured addresses and starts.
    pub async fn bind_and_start(args: &crate::config::MasterArgs) -> anyhow::Result<Self> {
        use anyhow::Context;
        let http = args
            .http_addr
            .bind()
            .await
            .with_context(|| format!("cannot bind HTTP_PORT {}", args.http_addr))?;
        let grpc = args
            .grpc_addr
            .bind()
            .await
            .with_context(|| format!("cannot bind GRPC_PORT {}", args.grpc_addr))?;
        Ok(Self::start(MasterConfig::from_args(args), http, grpc).await?)
    }

    /// Ordered shutdown: HTTP server, then TelemetryManager (every worker task
    /// joined), then the gRPC server.
    pub async fn shutdown(self) {
        info!("master shutting down");
        self.http_stop.cancel();
        match tokio::time::timeout(STAGE_DEADLINE, self.http_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "http server ended with an error"),
            Ok(Err(e)) => warn!(error = %e, "http server task failed"),
            Err(_) => warn!("http server did not stop in time"),
        }
        if tokio::time::timeout(STAGE_DEADLINE, self.telemetry.shutdown()).await.is_err() {
            warn!("telemetry manager did not stop in time");
        }
        self.grpc_stop.cancel();
        match tokio::time::timeout(STAGE_DEADLINE, self.grpc_task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "grpc server ended with an error"),
            Ok(Err(e)) => warn!(error = %e, "grpc server task failed"),
            Err(_) => warn!("grpc server did not stop in time"),
        }
        info!("master stopped");
    }
}
