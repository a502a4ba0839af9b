//! What every fuzz target shares: one in-process master per fuzz process (plain text, its
//! store in a temporary folder), reached through the handlers its gRPC server calls and the
//! router its HTTP server runs, and the checks that make a bad answer a crash.
//!
//! A panic, a hang (no answer within [`HANG`]), a gRPC status saying the master broke
//! (`INTERNAL`, `UNKNOWN`, `DATA_LOSS`, `UNAVAILABLE`: nothing here shuts it down or fills
//! its disk), an HTTP 5xx, or an HTTP 4xx whose body is not `{"error": "<message>"}` is a
//! crash. Any other refusal is the master doing its job.
//!
//! To reach past the "unknown worker" and "unknown task" refusals, one worker,
//! [`WORKER`], is registered with its command stream open, and one task is kept placed on
//! it. A task id equal to [`PLACED`] in a fuzzed message is replaced with that task's id.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use cloudai_domain::{TaskId, WorkerId};
use cloudai_master::telemetry::TelemetryConfig;
use cloudai_master::{Master, MasterConfig, MasterRpc, WorkerTrust};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_server::MasterService;
use futures::StreamExt;
use http_body_util::BodyExt;
use tokio::runtime::Runtime;
use tonic::{Code, Status};
use tower::ServiceExt;

/// The worker the harness keeps registered.
pub const WORKER: &str = "fuzz-worker";
/// A task id that stands for the task placed on [`WORKER`].
pub const PLACED: &str = "placed";
/// Longer than this for one call is a hang.
pub const HANG: Duration = Duration::from_secs(10);

pub struct Harness {
    runtime: Runtime,
    pub master: Master,
    pub rpc: MasterRpc,
    pub api: Router,
    /// A TLS cluster's trust: `JoinCluster` and `RenewCertificate` do nothing without one.
    pub secure: WorkerTrust,
    /// The secure trust's join secret.
    pub join_secret: String,
    /// The task placed on [`WORKER`] (its id, its attempt), as its command stream said.
    placed: Arc<Mutex<Option<(String, u32)>>>,
    /// Submitted for [`WORKER`], not started yet: since when.
    waiting: Mutex<Option<(String, Instant)>>,
}

static HARNESS: OnceLock<Harness> = OnceLock::new();

/// The process's harness, started on first use.
pub fn harness() -> &'static Harness {
    HARNESS.get_or_init(Harness::start)
}

/// A folder in memory when there is one: final reports wait for the store's fsync.
fn scratch_dir() -> std::path::PathBuf {
    let shm = std::path::Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("cloudai-fuzz-").tempdir_in(shm);
    builder.or_else(|_| tempfile::tempdir()).expect("temporary folder").keep()
}

impl Harness {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let dir = scratch_dir();
        let mut config = MasterConfig::new(&dir);
        // Fuzzed heartbeats come much faster than a worker's; the worker never goes silent.
        config.telemetry = TelemetryConfig {
            inactivity_timeout: Duration::from_secs(24 * 3600),
            rate_limit: None,
            ..TelemetryConfig::default()
        };
        config.auth.max_pending_per_submitter = usize::MAX;
        let master = runtime.block_on(async {
            let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http");
            let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
            Master::start(config, http, grpc).await.expect("master starts")
        });
        let pki = cloudai_pki::PkiDir::new(dir.join("secure-pki"));
        let (ca, _) = pki.open_or_create_ca("fuzz").expect("CA");
        let secure = WorkerTrust::secure(pki, ca, Duration::from_secs(3600), Default::default())
            .expect("secure trust");
        let join_secret = secure.join_token().expect("join token").secret.as_str().to_string();
        let harness = Self {
            rpc: master.grpc_handlers(),
            api: master.api_router(),
            master,
            runtime,
            secure,
            join_secret,
            placed: Arc::default(),
            waiting: Mutex::new(None),
        };
        harness.prepare();
        harness
    }

    /// Runs `f` on the master's runtime; a hang is a crash.
    pub fn run<T>(&self, f: impl Future<Output = T>) -> T {
        self.runtime.block_on(async {
            match tokio::time::timeout(HANG, f).await {
                Ok(v) => v,
                Err(_) => panic!("hang: no answer within {HANG:?}"),
            }
        })
    }

    /// Before each input: [`WORKER`] registered with its stream open, a task placed on it.
    pub fn prepare(&self) {
        self.run(self.ensure_placed());
    }

    async fn ensure_placed(&self) {
        let worker = WorkerId::parse(WORKER).expect("valid id");
        if !self.master.fleet.is_registered(&worker) {
            self.register().await;
        }
        let placed = self.placed.lock().expect("lock").clone();
        if let Some((id, _)) = placed {
            let mut waiting = self.waiting.lock().expect("lock");
            if waiting.as_ref().is_some_and(|(w, _)| *w == id) {
                *waiting = None;
            }
            drop(waiting);
            let id = TaskId::parse(&id).expect("a task id the master made");
            if let Ok(task) = self.master.tasks.get(&id).await
                && !task.status().is_final()
            {
                return;
            }
        }
        let waiting = self.waiting.lock().expect("lock").clone();
        match waiting {
            // Not started after a second: the fuzzer re-registered the worker too small, or
            // took over its command stream.
            Some((_, since)) if since.elapsed() > Duration::from_secs(1) => {
                self.register().await;
                *self.waiting.lock().expect("lock") = None;
            }
            Some(_) => {}
            None => self.submit().await,
        }
    }

    /// Registers [`WORKER`] (again) and opens its command stream.
    pub async fn register(&self) {
        let registration = pb::RegisterWorkerRequest {
            worker_id: WORKER.into(),
            hostname: "fuzz".into(),
            cpu_cores: 64.0,
            memory_mb: 1 << 20,
            protocol_version: cloudai_proto::PROTOCOL_VERSION,
            drivers: vec![pb::Driver::Process.into(), pb::Driver::Docker.into()],
            ..Default::default()
        };
        check_grpc(self.rpc.register_worker(tonic::Request::new(registration)).await);
        self.open_stream().await;
    }

    /// (Re)opens [`WORKER`]'s command stream, taking it back from whoever opened it last.
    pub async fn open_stream(&self) {
        let request = pb::StreamCommandsRequest { worker_id: WORKER.into() };
        let Ok(stream) = self.rpc.stream_commands(tonic::Request::new(request)).await else {
            return;
        };
        let mut stream = stream.into_inner();
        let placed = Arc::clone(&self.placed);
        self.runtime.spawn(async move {
            while let Some(Ok(command)) = stream.next().await {
                if let Some(pb::worker_command::Command::StartTask(start)) = command.command {
                    *placed.lock().expect("lock") = Some((start.task_id, start.attempt));
                }
            }
        });
    }

    async fn submit(&self) {
        let body = serde_json::json!({
            "driver": "process",
            "command": ["sh", "-c", "sleep 1000"],
            "cpu_required": 0.1,
            "memory_required": 16,
        });
        let request = axum::http::Request::post("/api/tasks")
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .expect("request");
        let Ok(response) = self.api.clone().oneshot(request).await;
        let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        let task: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        let Some(id) = task["task_id"].as_str() else { return };
        *self.waiting.lock().expect("lock") = Some((id.to_string(), Instant::now()));
        // Give the scheduler a moment, so the next input already finds it placed.
        let deadline = Instant::now() + Duration::from_millis(200);
        while Instant::now() < deadline {
            if self.placed_id().is_some_and(|(placed, _)| placed == id) {
                *self.waiting.lock().expect("lock") = None;
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// The task placed on [`WORKER`] and its attempt, if any.
    pub fn placed_id(&self) -> Option<(String, u32)> {
        self.placed.lock().expect("lock").clone()
    }

    /// `id` with [`PLACED`] replaced by the placed task's id.
    pub fn task_id(&self, id: &mut String) {
        if id == PLACED
            && let Some((placed, _)) = self.placed_id()
        {
            *id = placed;
        }
    }

    /// Sends an HTTP request to the master's router and checks the answer.
    pub fn http(&self, request: axum::http::Request<Body>) {
        let what = format!("{} {}", request.method(), request.uri());
        self.run(async {
            let Ok(response) = self.api.clone().oneshot(request).await;
            check_http(&what, response).await;
        });
    }
}

/// A gRPC answer: any status but one saying the master broke.
pub fn check_grpc<T>(answer: Result<T, Status>) -> Option<T> {
    if verbose() {
        eprintln!("answer: {:?}", answer.as_ref().map(|_| "ok"));
    }
    match answer {
        Ok(v) => Some(v),
        Err(status) => {
            let broken =
                matches!(status.code(), Code::Internal | Code::Unknown | Code::DataLoss | Code::Unavailable);
            assert!(!broken, "the master broke: {status:?}");
            None
        }
    }
}

/// `CLOUDAI_FUZZ_VERBOSE=1`: every answer is printed (to see what inputs reach).
fn verbose() -> bool {
    static VERBOSE: OnceLock<bool> = OnceLock::new();
    *VERBOSE.get_or_init(|| std::env::var_os("CLOUDAI_FUZZ_VERBOSE").is_some())
}

/// An HTTP answer: no 5xx, and every 4xx is `{"error": "<message>"}` in JSON.
pub async fn check_http(what: &str, response: axum::http::Response<Body>) {
    let status = response.status();
    if verbose() {
        eprintln!("answer: {what}: {status}");
    }
    if status.is_success() || status.is_redirection() || status.is_informational() {
        return; // a follow stream (`?follow=true`) may not end: not read
    }
    let content_type =
        response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
    let body = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let text = String::from_utf8_lossy(&body);
    if verbose() {
        eprintln!("answer: {text}");
    }
    assert!(!status.is_server_error(), "{what}: {status}: {text}");
    assert!(
        content_type.starts_with("application/json"),
        "{what}: {status} with content-type {content_type:?}: {text}"
    );
    let json: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{what}: {status}: body is not JSON ({e}): {text}"));
    assert!(
        json["error"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {status}: no error message: {text}"
    );
}

/// Bytes as they may stand in a URL's path segment or query, the rest percent-escaped; `%`
/// is kept, so bad escapes stay possible. In a segment, `/`, `?` and `#` are escaped too.
pub fn url_text(bytes: &[u8], segment: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        let plain = b.is_ascii_alphanumeric()
            || b"-._~!$&'()*+,;=:@%".contains(&b)
            || (!segment && b"/?".contains(&b));
        if plain {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
