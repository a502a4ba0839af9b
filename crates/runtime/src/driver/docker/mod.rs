//! Runs a task as a Docker container, through the engine's API (bollard).
//!
//! The image is used if present, else pulled (with the worker's registry credentials).
//! The container gets the task's command, environment, CPU and memory limits (no swap),
//! GPUs through the NVIDIA device request, labels naming the task and the worker, and
//! safe defaults (not privileged, bridge network, minimal capabilities, no new privileges).
//! Containers outlive the worker process: a restarted worker finds its own by label
//! ([`Driver::leftovers`]) and follows them again ([`Driver::adopt`]).

mod image;
mod spec;
mod watch;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bollard::Docker;
use bollard::errors::Error as DockerError;
use bollard::models::ContainerStateStatusEnum;
use bollard::query_parameters::{CreateContainerOptionsBuilder, ListContainersOptionsBuilder};
use cloudai_domain::TaskId;
use tracing::{debug, info, warn};

use self::spec::{LABEL_ATTEMPT, LABEL_TASK_ID, LABEL_WORKER_ID};
use super::{Driver, DriverError, Execution, Launch, Leftover};

/// Where the engine listens when `DOCKER_HOST` is unset.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// How to reach the engine and what to do with finished containers.
#[derive(Clone, Debug)]
pub struct DockerOptions {
    /// Engine address (`unix:///path`, a socket path, `tcp://host:port`);
    /// `None`: `DOCKER_HOST`, else the local socket.
    pub host: Option<String>,
    /// Time the engine has to answer when connecting.
    pub connect_timeout: Duration,
    /// Keep containers after their task ended (debugging).
    pub keep_containers: bool,
    /// Docker client config holding registry credentials; `None`: none are used.
    pub client_config: Option<PathBuf>,
}

impl Default for DockerOptions {
    /// The local engine, a 3 s connect timeout, `$DOCKER_CONFIG` or `~/.docker/config.json`.
    fn default() -> Self {
        Self {
            host: None,
            connect_timeout: Duration::from_secs(3),
            keep_containers: false,
            client_config: image::default_config_path(),
        }
    }
}

/// The `docker` driver.
#[derive(Clone, Debug)]
pub struct DockerDriver {
    docker: Docker,
    addr: String,
    options: DockerOptions,
}

impl DockerDriver {
    /// Connects to the engine and checks that it answers (ping, API version negotiation)
    /// within `connect_timeout`.
    pub async fn connect(options: DockerOptions) -> Result<Self, DriverError> {
        let host = options.host.clone().or_else(|| std::env::var("DOCKER_HOST").ok());
        let host = host.map(|h| if h.starts_with('/') { format!("unix://{h}") } else { h });
        let addr = host.clone().unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let unreachable = |source: Box<dyn std::error::Error + Send + Sync>| DriverError::EngineUnreachable {
            addr: addr.clone(),
            source,
        };
        let docker = match &host {
            Some(host) => Docker::connect_with_host(host),
            None => Docker::connect_with_local_defaults(),
        }
        .map_err(|e| unreachable(e.into()))?;
        let check = async {
            docker.ping().await?;
            // Speak the engine's API version when it is older than bollard's.
            docker.clone().negotiate_version().await
        };
        let docker = match tokio::time::timeout(options.connect_timeout, check).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(unreachable(e.into())),
            Err(_) => {
                let timeout = std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", options.connect_timeout),
                );
                return Err(unreachable(timeout.into()));
            }
        };
        info!(addr = %addr, api_version = %docker.client_version(), "connected to the docker engine");
        Ok(Self { docker, addr, options })
    }

    /// The engine's address.
    pub fn address(&self) -> &str {
        &self.addr
    }

    /// The engine client, for tools that work beside the driver (tests, benchmarks).
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    async fn create(&self, launch: &Launch) -> Result<String, DriverError> {
        let name = spec::container_name(launch);
        let body = spec::container_body(launch);
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = match self.docker.create_container(Some(options.clone()), body.clone()).await {
            // A container left by an earlier worker under the same name: it is this very
            // attempt's, which is starting again here, so it goes.
            Err(DockerError::DockerResponseServerError { status_code: 409, .. }) => {
                info!(container = %name, "removing a leftover container of this attempt");
                watch::remove(&self.docker, &name).await;
                self.docker.create_container(Some(options), body).await
            }
            other => other,
        };
        let created = created
            .map_err(|source| DriverError::Docker { action: "create the container".to_owned(), source })?;
        for warning in &created.warnings {
            warn!(container = %name, warning = %warning, "docker warning");
        }
        Ok(created.id)
    }
}

#[async_trait]
impl Driver for DockerDriver {
    async fn prepare(
        &self,
        launch: &Launch,
        progress: &mut (dyn FnMut(String) + Send),
    ) -> Result<(), DriverError> {
        if launch.image.is_empty() {
            return Err(DriverError::NoImage);
        }
        image::ensure_with_progress(
            &self.docker,
            &launch.image,
            self.options.client_config.as_ref(),
            progress,
        )
        .await
    }

    async fn start(&self, launch: &Launch) -> Result<Execution, DriverError> {
        if launch.image.is_empty() {
            return Err(DriverError::NoImage);
        }
        image::ensure(&self.docker, &launch.image, self.options.client_config.as_ref()).await?;
        let id = self.create(launch).await?;
        if let Err(source) = self.docker.start_container(&id, None).await {
            if !self.options.keep_containers {
                watch::remove(&self.docker, &id).await;
            }
            return Err(DriverError::Docker { action: "start the container".to_owned(), source });
        }
        debug!(container = %id, "container started");
        Ok(watch::execution(self.docker.clone(), id, 0, self.options.keep_containers))
    }

    async fn adopt(&self, launch: &Launch, handle: &str) -> Result<Execution, DriverError> {
        let inspect = self
            .docker
            .inspect_container(handle, None)
            .await
            .map_err(|source| DriverError::Docker { action: "inspect the container".to_owned(), source })?;
        let status = inspect.state.and_then(|s| s.status);
        if status == Some(ContainerStateStatusEnum::CREATED) {
            watch::remove(&self.docker, handle).await;
            return Err(DriverError::NeverStarted);
        }
        // Output written before now was shipped (or lost) by the previous worker process.
        let since = i32::try_from(cloudai_domain::time::unix_ms() / 1000).unwrap_or(0);
        info!(task_id = %launch.task_id, container = %handle, status = ?status, "adopting container");
        Ok(watch::execution(self.docker.clone(), handle.to_owned(), since, self.options.keep_containers))
    }

    async fn leftovers(&self, worker_id: &str) -> Result<Vec<Leftover>, DriverError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_WORKER_ID}={worker_id}")])]);
        let options = ListContainersOptionsBuilder::default().all(true).filters(&filters).build();
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|source| DriverError::Docker { action: "list containers".to_owned(), source })?;
        let mut found = Vec::new();
        for container in containers {
            let Some(id) = container.id else { continue };
            let labels = container.labels.unwrap_or_default();
            let task_id = labels.get(LABEL_TASK_ID).and_then(|t| TaskId::parse(t).ok());
            let attempt = labels.get(LABEL_ATTEMPT).and_then(|a| a.parse().ok());
            let (Some(task_id), Some(attempt)) = (task_id, attempt) else {
                warn!(container = %id, "container of this worker without valid task labels; left alone");
                continue;
            };
            found.push(Leftover { task_id, attempt, handle: id, image: container.image.unwrap_or_default() });
        }
        Ok(found)
    }
}
