//! One scenario's cluster: a master and its workers, each in its own container, on a private
//! network of the scenario's own, with TLS and tokens on as in production.
//!
//! The master is also on a second network, `ctl`, that only the test uses to reach its API, so
//! the test can watch while the master is cut off from every worker. Addresses are fixed
//! (master `.2`, workers `.11`, `.12`, …) so a container that is restarted or reconnected comes
//! back where it was.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::docker::{LABEL, docker};
use super::ledger::Ledger;

/// The master's failure detection, short so the suite is quick: a silent worker is inactive
/// after 10 s and lost (its tasks re-queued) 15 s later.
pub const INACTIVITY_TIMEOUT: Duration = Duration::from_secs(10);
pub const TASK_LOSS_GRACE: Duration = Duration::from_secs(15);
/// The workers' heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Retries every task gets.
pub const MAX_RETRIES: u32 = 3;

/// Picks /24 subnets in 10.213.0.0/16 that no other network of the engine uses.
static NEXT_SUBNET: AtomicU32 = AtomicU32::new(0);

pub struct Cluster {
    /// Container and network name prefix: `cloudai-chaos-<pid>-<scenario>`.
    pub name: String,
    pub image: String,
    pub net: String,
    pub subnet: String,
    pub ctl_subnet: String,
    pub dir: tempfile::TempDir,
    pub api: String,
    pub client: reqwest::Client,
    pub token: String,
    /// Extra `docker create` arguments for the master (the NAT scenario's port mapping).
    pub master_extra: Vec<String>,
    /// Extra names for the master's certificate (the NAT scenario's mapped address).
    pub extra_san: Vec<String>,
}

/// A worker container to start.
pub struct WorkerSpec {
    pub id: String,
    /// `None`: on the scenario network at `.11 + index`; `Some(network)`: elsewhere.
    pub network: Option<String>,
    pub master_addr: Option<String>,
    /// Bind-mount this host folder as the worker's data folder, read-only if `true`
    /// (otherwise the container has a volume of its own).
    pub data: Option<(PathBuf, bool)>,
    /// Set `WORKER_DATA_DIR=/var/lib/cloudai/worker`; without it the worker must find its
    /// folder from `CLOUDAI_DATA_DIR` (the image's `/var/lib/cloudai`) alone.
    pub worker_data_dir: bool,
}

impl WorkerSpec {
    pub fn plain(id: &str) -> Self {
        Self { id: id.to_owned(), network: None, master_addr: None, data: None, worker_data_dir: true }
    }
}

impl Cluster {
    /// Creates the scenario's networks and folders (nothing runs yet).
    pub async fn create(scenario: &str, image: &str) -> anyhow::Result<Self> {
        let name = format!("cloudai-chaos-{}-{scenario}", std::process::id());
        let net = name.clone();
        let subnet = create_network(&net).await?;
        let ctl_subnet = create_network(&format!("{name}-ctl")).await?;
        let dir = tempfile::Builder::new().prefix(&format!("{name}-")).tempdir()?;
        for sub in ["master", "shared", "join"] {
            std::fs::create_dir(dir.path().join(sub))?;
        }
        let shared = dir.path().join("shared");
        let log = shared.join("events.log");
        std::fs::write(&log, "")?;
        // Tasks run as nobody in the workers' containers.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777))?;
        std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o666))?;
        Ok(Self {
            name,
            image: image.to_owned(),
            net,
            api: format!("https://{ctl_subnet}.2:8080"),
            subnet,
            ctl_subnet,
            dir,
            client: reqwest::Client::new(),
            token: String::new(),
            master_extra: Vec::new(),
            extra_san: Vec::new(),
        })
    }

    pub fn master(&self) -> String {
        format!("{}-master", self.name)
    }

    pub fn worker(&self, id: &str) -> String {
        format!("{}-{id}", self.name)
    }

    pub fn worker_ip(&self, index: usize) -> String {
        format!("{}.{}", self.subnet, 11 + index)
    }

    pub fn master_ip(&self) -> String {
        format!("{}.2", self.subnet)
    }

    fn data(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Starts the master and waits until its API answers over TLS with its admin token.
    pub async fn start_master(&mut self) -> anyhow::Result<()> {
        let master = self.master();
        let mount = format!("{}:/var/lib/cloudai", self.data("master").display());
        let mut names = vec!["master".to_owned(), self.master_ip(), format!("{}.2", self.ctl_subnet)];
        names.extend(self.extra_san.iter().cloned());
        let san = format!("TLS_SAN={}", names.join(","));
        let label = format!("{LABEL}={}", std::process::id());
        let ip = self.master_ip();
        let mut args: Vec<&str> = vec![
            "create",
            "--name",
            &master,
            "--label",
            &label,
            "--hostname",
            "master",
            "--network",
            &self.net,
            "--network-alias",
            "master",
            "--ip",
            &ip,
            "-v",
            &mount,
            "-e",
            &san,
            "-e",
            "INACTIVITY_TIMEOUT=10s",
            "-e",
            "TASK_LOSS_GRACE=15s",
            "-e",
            "CANCEL_GRACE=3s",
            "-e",
            "PLACEMENT_POLICY=spread",
            "-e",
            "ALERT_EVAL_INTERVAL=1s",
            "-e",
            "RUST_LOG=info",
        ];
        args.extend(self.master_extra.iter().map(String::as_str));
        args.extend([self.image.as_str(), "master", "--no-console"]);
        docker(&args).await?;
        let ctl_ip = format!("{}.2", self.ctl_subnet);
        docker(&["network", "connect", "--ip", &ctl_ip, &format!("{}-ctl", self.name), &master]).await?;
        docker(&["start", &master]).await?;
        let pki = self.data("master").join("pki");
        let (ca, admin) = poll(Duration::from_secs(30), "the master's CA and admin token", || {
            let ca = std::fs::read_to_string(pki.join("ca.crt")).ok()?;
            let token = std::fs::read_to_string(self.data("master").join("admin.token")).ok()?;
            let join = std::fs::read_to_string(pki.join("join.token")).ok()?;
            (!ca.is_empty() && !token.trim().is_empty() && !join.trim().is_empty()).then_some((ca, token))
        })
        .await
        .with_context(|| self.logs_hint(&master))?;
        // `pki/join.token` holds the secret; a worker is given the whole token, which pins the CA.
        let secret = std::fs::read_to_string(pki.join("join.token"))?;
        let token = match secret.trim() {
            whole if whole.starts_with("cloudai-join.") => whole.to_owned(),
            secret => format!("cloudai-join.{}.{secret}", cloudai_pki::fingerprint_of_pem(&ca)?),
        };
        std::fs::write(self.data("join").join("join.token"), format!("{token}\n"))?;
        let cert = reqwest::Certificate::from_pem(ca.as_bytes())?;
        self.client = reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(cert)
            .timeout(Duration::from_secs(3))
            .build()?;
        self.token = admin.trim().to_owned();
        self.wait_healthy(Duration::from_secs(30)).await.with_context(|| self.logs_hint(&master))?;
        Ok(())
    }

    /// Starts a worker container (process driver, tasks as nobody).
    pub async fn start_worker(&self, index: usize, spec: &WorkerSpec) -> anyhow::Result<()> {
        let container = self.worker(&spec.id);
        let label = format!("{LABEL}={}", std::process::id());
        let ip = self.worker_ip(index);
        let shared = format!("{}:/chaos", self.data("shared").display());
        let join = format!("{}:/run/cloudai-join:ro", self.data("join").display());
        let id = format!("WORKER_ID={}", spec.id);
        let addr = format!(
            "MASTER_ADDR={}",
            spec.master_addr.clone().unwrap_or_else(|| "https://master:50051".into())
        );
        let network = spec.network.clone().unwrap_or_else(|| self.net.clone());
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            &container,
            "--label",
            &label,
            "--hostname",
            &spec.id,
            "--network",
            &network,
        ]
        .map(String::from)
        .into();
        if spec.network.is_none() {
            args.extend(["--ip".into(), ip]);
        }
        if spec.worker_data_dir {
            args.extend(["-e".into(), "WORKER_DATA_DIR=/var/lib/cloudai/worker".into()]);
        }
        if let Some((dir, read_only)) = &spec.data {
            let mode = if *read_only { ":ro" } else { "" };
            args.extend(["-v".into(), format!("{}:/var/lib/cloudai{mode}", dir.display())]);
        }
        args.extend(
            [
                "-v",
                &shared,
                "-v",
                &join,
                "-e",
                &id,
                "-e",
                &addr,
                "-e",
                "CLOUDAI_JOIN_TOKEN_FILE=/run/cloudai-join/join.token",
                "-e",
                "HEARTBEAT_INTERVAL=1s",
                "-e",
                "CLOUDAI_DRIVERS=process",
                "-e",
                "WORKER_CPUS=2",
                "-e",
                "WORKER_MEMORY_MB=2048",
                "-e",
                "TASK_STOP_GRACE=3s",
                "-e",
                "RUST_LOG=info",
                &self.image,
                "worker",
            ]
            .map(String::from),
        );
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        docker(&args).await?;
        Ok(())
    }

    /// Starts workers `w1..=wN` on the scenario network and waits until all are active.
    pub async fn start_workers(&self, ids: &[&str]) -> anyhow::Result<()> {
        for (i, id) in ids.iter().enumerate() {
            self.start_worker(i, &WorkerSpec::plain(id)).await?;
        }
        self.wait_workers_active(ids, Duration::from_secs(40)).await
    }

    pub fn logs_hint(&self, container: &str) -> String {
        let out = std::process::Command::new("docker").args(["logs", "--tail", "15", container]).output();
        let text = out
            .map(|o| format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)));
        format!("last lines of {container}:\n{}", text.unwrap_or_default())
    }

    pub fn ledger(&self) -> Ledger {
        Ledger::parse(&std::fs::read_to_string(self.data("shared").join("events.log")).unwrap_or_default())
    }

    pub async fn disconnect(&self, container: &str) -> anyhow::Result<()> {
        docker(&["network", "disconnect", &self.net, container]).await.map(drop)
    }

    pub async fn connect(&self, container: &str, ip: &str) -> anyhow::Result<()> {
        let alias: &[&str] = if container == self.master() { &["--alias", "master"] } else { &[] };
        let mut args = vec!["network", "connect", "--ip", ip];
        args.extend(alias);
        args.extend([self.net.as_str(), container]);
        docker(&args).await.map(drop)
    }

    pub fn host_path(&self, sub: &str) -> PathBuf {
        self.data(sub)
    }
}

impl Drop for Cluster {
    /// Removes the scenario's containers (with their volumes) and networks as soon as it ends,
    /// so the next scenarios get the CPU. The run's guard removes anything left at the end.
    fn drop(&mut self) {
        let list = |args: &[&str]| {
            std::process::Command::new("docker")
                .args(args)
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let label = format!("label={LABEL}={}", std::process::id());
        let name = format!("name={}-", self.name);
        let containers = list(&["ps", "-aq", "--filter", &label, "--filter", &name]);
        if !containers.is_empty() {
            let _ = std::process::Command::new("docker").args(["rm", "-f", "-v"]).args(&containers).output();
        }
        let name = format!("name={}", self.name);
        let networks = list(&["network", "ls", "-q", "--filter", &label, "--filter", &name]);
        if !networks.is_empty() {
            let _ = std::process::Command::new("docker").args(["network", "rm"]).args(&networks).output();
        }
    }
}

/// Creates a labelled network on a free 10.213.X.0/24; its `10.213.X` prefix.
pub async fn create_network(name: &str) -> anyhow::Result<String> {
    let label = format!("{LABEL}={}", std::process::id());
    let base = std::process::id() % 200;
    for _ in 0..250 {
        let x = 20 + (base + NEXT_SUBNET.fetch_add(1, Ordering::Relaxed)) % 230;
        let prefix = format!("10.213.{x}");
        let subnet = format!("{prefix}.0/24");
        match docker(&["network", "create", "--label", &label, "--subnet", &subnet, name]).await {
            Ok(_) => return Ok(prefix),
            Err(e) if format!("{e:#}").contains("overlap") => continue,
            Err(e) => return Err(e),
        }
    }
    bail!("no free 10.213.X.0/24 subnet for network {name}")
}

/// Polls a synchronous check every 100 ms.
async fn poll<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Cargo's target folder (where the table is written), from the path of the binary under test.
pub fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_cloudai"))
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default()
}
