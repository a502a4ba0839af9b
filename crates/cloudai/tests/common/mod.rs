//! Helpers for integration tests: real masters and workers on loopback.
#![allow(dead_code)]

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use cloudai_master::telemetry::TelemetryConfig;
use cloudai_master::{Master, MasterConfig};
use cloudai_worker::{self as worker, WorkerConfig};
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Polls `check` until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A master config with its store in a fresh temporary folder (kept for the test's life).
pub fn master_config(inactivity: Duration) -> MasterConfig {
    let dir = tempfile::tempdir().expect("tempdir").keep();
    let mut config = MasterConfig::new(&dir);
    config.telemetry = TelemetryConfig { inactivity_timeout: inactivity, ..TelemetryConfig::default() };
    config
}

/// A master on loopback with ephemeral ports.
pub async fn start_master(config: MasterConfig) -> Master {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    Master::start(config, http, grpc).await.expect("master starts")
}

/// A master on given ports (for restarts on the same address).
pub async fn start_master_on(config: MasterConfig, http_port: u16, grpc_port: u16) -> Master {
    let http = tokio::net::TcpListener::bind(("127.0.0.1", http_port)).await.expect("bind http");
    let grpc = tokio::net::TcpListener::bind(("127.0.0.1", grpc_port)).await.expect("bind grpc");
    Master::start(config, http, grpc).await.expect("master starts")
}

/// A registration of a small process worker speaking this protocol, as a raw gRPC client
/// sends it.
pub fn registration(id: &str) -> cloudai_proto::v1::RegisterWorkerRequest {
    use cloudai_proto::v1 as pb;
    pb::RegisterWorkerRequest {
        worker_id: id.into(),
        cpu_cores: 4.0,
        memory_mb: 4096,
        protocol_version: cloudai_proto::PROTOCOL_VERSION,
        drivers: vec![pb::Driver::Process.into()],
        ..Default::default()
    }
}

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port()
}

pub fn worker_config(master_grpc: std::net::SocketAddr, id: &str) -> WorkerConfig {
    WorkerConfig {
        master_addr: format!("http://{master_grpc}"),
        worker_id: cloudai_domain::WorkerId::parse(id).expect("valid id"),
        heartbeat_interval: Duration::from_millis(200),
        drivers: vec![cloudai_domain::Driver::Process],
        cpus: None,
        memory_mb: None,
        simulated_gpus: None,
        labels: Vec::new(),
        data_dir: tempfile::tempdir().expect("tempdir").keep(),
        keep_workdirs: false,
        task_user: None,
        compression: cloudai_proto::Compression::Zstd,
        join_token: None,
        stop_grace: Duration::from_secs(10),
    }
}

/// A worker for `master` as a user would start it: over mTLS with the join token when the
/// master runs TLS, plain text otherwise.
pub fn worker_for(master: &Master, id: &str) -> WorkerConfig {
    let mut config = worker_config(master.grpc_addr, id);
    if master.ca_pem.is_some() {
        config.master_addr = format!("https://localhost:{}", master.grpc_addr.port());
        config.join_token = master.trust.join_token();
    }
    config
}

/// A worker agent running in this process, on its own thread and runtime so that `kill`
/// ends every one of its tasks at once, as when a worker process dies.
pub struct InProcessWorker {
    stop: CancellationToken,
    killed: CancellationToken,
    thread: std::thread::JoinHandle<Option<Result<(), cloudai_worker::WorkerError>>>,
}

impl InProcessWorker {
    pub fn start(config: WorkerConfig) -> Self {
        let (stop, killed) = (CancellationToken::new(), CancellationToken::new());
        let (run_stop, run_killed) = (stop.clone(), killed.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("worker runtime");
            let result = runtime.block_on(async {
                tokio::select! {
                    r = worker::run(config, run_stop) => Some(r),
                    _ = run_killed.cancelled() => None,
                }
            });
            // Drops every task the worker spawned (heartbeats, commands, task runners).
            runtime.shutdown_background();
            result
        });
        Self { stop, killed, thread }
    }

    /// Graceful stop: the worker unregisters.
    pub async fn stop(self) {
        self.stop.cancel();
        let result = tokio::task::spawn_blocking(move || self.thread.join()).await.expect("join");
        let result = result.expect("worker thread").expect("worker was not killed");
        result.expect("worker ends cleanly");
    }

    /// Abrupt stop: no unregistration, no more heartbeats, as if the process died.
    pub fn kill(self) {
        self.killed.cancel();
        let _ = self.thread.join();
    }
}

/// An HTTPS client trusting only `ca_pem` (the cluster CA).
pub fn tls_client(ca_pem: &str) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA certificate");
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client")
}

pub async fn get_json(url: &str) -> (u16, serde_json::Value) {
    let resp = http_client().get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.json().await.unwrap_or_else(|e| panic!("GET {url}: body is not JSON: {e}"));
    (status, body)
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_cloudai")
}

/// A `cloudai` child process whose stderr lines are collected.
pub struct Proc {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Proc {
    pub fn spawn(args: &[&str], env: &[(&str, &str)], dir: Option<&std::path::Path>) -> Self {
        let mut cmd = Command::new(bin());
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        cmd.env_remove("RUST_LOG");
        // A secure master writes a client profile: never into the home of whoever runs the tests.
        let profile_home = tempfile::tempdir().expect("tempdir").keep();
        cmd.env("XDG_CONFIG_HOME", profile_home);
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(dir) = dir {
            cmd.current_dir(dir);
        }
        let mut child = cmd.spawn().expect("spawn cloudai");
        let stderr = child.stderr.take().expect("piped stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().push(line);
            }
        });
        Self { child, lines }
    }

    pub fn output(&self) -> String {
        self.lines.lock().join("\n")
    }

    /// Waits for a stderr line containing `needle`; returns the text after it.
    pub async fn wait_for_line(&self, needle: &str) -> String {
        let lines = self.lines.clone();
        let needle_owned = needle.to_string();
        wait_until(DEADLINE, &format!("a log line with {needle:?}"), || {
            let lines = lines.clone();
            let needle = needle_owned.clone();
            async move {
                lines
                    .lock()
                    .iter()
                    .find_map(|l| l.split_once(needle.as_str()).map(|(_, rest)| rest.trim().to_string()))
            }
        })
        .await
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, sig).expect("signal child");
    }

    /// Waits for exit and returns the exit code.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.code();
            }
            if tokio::time::Instant::now() > deadline {
                panic!("process did not exit within {timeout:?}; output:\n{}", self.output());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Submits a task; panics unless the master answers 201.
pub async fn submit(api: &str, body: serde_json::Value) -> serde_json::Value {
    let resp =
        http_client().post(format!("{api}/api/tasks")).json(&body).send().await.expect("POST /api/tasks");
    let status = resp.status().as_u16();
    let task: serde_json::Value = resp.json().await.expect("JSON answer");
    assert_eq!(status, 201, "submit {body}: {task}");
    task["task_id"].as_str().expect("task_id").to_string();
    task
}

/// A process task running `sh -c script`.
pub fn shell_task(script: &str) -> serde_json::Value {
    serde_json::json!({
        "driver": "process",
        "command": ["sh", "-c", script],
        "cpu_required": 0.5,
        "memory_required": 64,
    })
}

pub async fn get_task(api: &str, id: &str) -> serde_json::Value {
    let (status, task) = get_json(&format!("{api}/api/tasks/{id}")).await;
    assert_eq!(status, 200, "GET task {id}: {task}");
    task
}

/// Waits until the task reaches `status` and returns it.
pub async fn wait_status(api: &str, id: &str, status: &str) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let task = get_task(api, id).await;
        if task["status"] == status {
            return task;
        }
        if tokio::time::Instant::now() > deadline || (is_final(&task) && !is_final_str(status)) {
            panic!("task {id} did not become {status}; last seen: {task}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn is_final(task: &serde_json::Value) -> bool {
    task["status"].as_str().is_some_and(is_final_str)
}

fn is_final_str(s: &str) -> bool {
    matches!(s, "completed" | "failed" | "cancelled")
}

/// The task's whole stdout+stderr as text.
pub async fn task_output(api: &str, id: &str) -> String {
    let (status, logs) = get_json(&format!("{api}/api/tasks/{id}/logs")).await;
    assert_eq!(status, 200, "{logs}");
    logs["logs"].as_array().expect("logs array").iter().filter_map(|c| c["data"].as_str()).collect()
}

/// An in-process worker config with a given capacity.
pub fn sized_worker(grpc: std::net::SocketAddr, id: &str, cpus: f64, gpus: Option<u32>) -> WorkerConfig {
    let mut config = worker_config(grpc, id);
    config.cpus = Some(cpus);
    config.memory_mb = Some(4096);
    config.simulated_gpus = gpus;
    config
}

/// A worker played by the test over raw gRPC: it registers, opens its command stream and
/// says exactly what the test wants it to say.
pub struct RawWorker {
    pub id: String,
    pub client: cloudai_proto::v1::master_service_client::MasterServiceClient<tonic::transport::Channel>,
    commands: tonic::Streaming<cloudai_proto::v1::WorkerCommand>,
}

impl RawWorker {
    pub async fn join(grpc: std::net::SocketAddr, id: &str) -> Self {
        use cloudai_proto::v1 as pb;
        let client = pb::master_service_client::MasterServiceClient::connect(format!("http://{grpc}"))
            .await
            .expect("connect");
        Self::register_over(client, id).await
    }

    /// Registers as `id` over `client` (e.g. an mTLS channel with some worker's certificate).
    pub async fn register_over(
        mut client: cloudai_proto::v1::master_service_client::MasterServiceClient<tonic::transport::Channel>,
        id: &str,
    ) -> Self {
        use cloudai_proto::v1 as pb;
        client.register_worker(registration(id)).await.expect("register");
        let request = pb::StreamCommandsRequest { worker_id: id.into() };
        let commands = client.stream_commands(request).await.expect("command stream").into_inner();
        Self { id: id.into(), client, commands }
    }

    /// The same connection, its messages saying they come from worker `id`.
    pub fn speaking_as(mut self, id: &str) -> Self {
        self.id = id.into();
        self
    }

    /// The next task the master starts here: its id and attempt.
    pub async fn next_start(&mut self) -> (String, u32) {
        use cloudai_proto::v1::worker_command::Command;
        loop {
            let command = tokio::time::timeout(DEADLINE, self.commands.message())
                .await
                .expect("a command in time")
                .expect("command stream")
                .expect("stream open");
            if let Some(Command::StartTask(s)) = command.command {
                return (s.task_id, s.attempt);
            }
        }
    }

    /// Reports a status of the task's attempt.
    pub async fn report(
        &self,
        task_id: &str,
        attempt: u32,
        status: cloudai_proto::v1::TaskStatus,
        exit_code: Option<i32>,
        error: String,
    ) -> Result<(), tonic::Status> {
        use cloudai_proto::v1 as pb;
        let change = pb::StatusChange { status: status.into(), exit_code, error };
        let report = pb::TaskStatusReport {
            worker_id: self.id.clone(),
            task_id: task_id.into(),
            attempt,
            timestamp_ms: cloudai_domain::time::unix_ms(),
            update: Some(pb::task_status_report::Update::Status(change)),
        };
        self.client.clone().report_task_status(report).await.map(|_| ())
    }

    /// Ships `data` as the task's stdout, in one batch.
    pub async fn ship(&self, task_id: &str, data: &[u8]) -> Result<(), tonic::Status> {
        use cloudai_proto::v1 as pb;
        let chunk = pb::LogChunk {
            task_id: task_id.into(),
            stream: pb::LogStream::Stdout.into(),
            data: data.to_vec(),
            timestamp_ms: cloudai_domain::time::unix_ms(),
        };
        let batch = pb::LogBatch { worker_id: self.id.clone(), chunks: vec![chunk] };
        self.client.clone().ship_logs(batch).await.map(|_| ())
    }
}
