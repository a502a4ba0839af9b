//! Workers and masters of different protocol versions refuse each other, each naming both
//! versions, instead of half-working or retrying forever; and a message that leaves an enum
//! unspecified is refused naming the field; so is a registration or heartbeat past the limits.

mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cloudai_proto::limits::WireLimits;
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_server::{MasterService, MasterServiceServer};
use cloudai_proto::{PROTOCOL_VERSION, PROTOCOL_VERSION_KEY};
use cloudai_worker::WorkerError;
use common::*;
use tonic::{Code, Request, Response, Status};

type Client = pb::master_service_client::MasterServiceClient<tonic::transport::Channel>;

async fn connect(addr: std::net::SocketAddr) -> Client {
    Client::connect(format!("http://{addr}")).await.expect("connect")
}

fn registration_at(id: &str, protocol_version: u32) -> pb::RegisterWorkerRequest {
    pb::RegisterWorkerRequest { protocol_version, ..registration(id) }
}

#[tokio::test]
async fn a_master_refuses_a_worker_of_another_protocol_naming_both_versions() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = format!("http://{}", master.http_addr);
    let mut client = connect(master.grpc_addr).await;

    let err = client.register_worker(registration_at("old", 1)).await.expect_err("protocol 1 is refused");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let expected = format!("worker speaks protocol 1, this master speaks protocol {PROTOCOL_VERSION}");
    assert!(err.message().contains(&expected), "{}", err.message());
    assert_eq!(PROTOCOL_VERSION, 2);
    let (status, body) = get_json(&format!("{api}/api/workers/old")).await;
    assert_eq!(status, 404, "a refused worker is not registered: {body}");

    // Upgraded, the same worker joins and learns the master's version.
    let answer = client.register_worker(registration_at("old", PROTOCOL_VERSION)).await.expect("accepted");
    assert_eq!(answer.into_inner().protocol_version, PROTOCOL_VERSION);
    let (status, _) = get_json(&format!("{api}/api/workers/old")).await;
    assert_eq!(status, 200);
    master.shutdown().await;
}

#[tokio::test]
async fn unspecified_enums_are_refused_naming_the_field() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let mut client = connect(master.grpc_addr).await;

    let mut no_driver = registration_at("w1", PROTOCOL_VERSION);
    no_driver.drivers = vec![pb::Driver::Unspecified.into()];
    let err = client.register_worker(no_driver).await.expect_err("unspecified driver");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("drivers: "), "{}", err.message());

    client.register_worker(registration_at("w1", PROTOCOL_VERSION)).await.expect("register");
    let silent = pb::TaskStatusReport {
        worker_id: "w1".into(),
        task_id: "t1".into(),
        attempt: 1,
        ..Default::default()
    };
    let err = client.report_task_status(silent).await.expect_err("a report that says nothing");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("update: "), "{}", err.message());

    let chunk = pb::LogChunk { task_id: "t1".into(), data: b"hi".to_vec(), ..Default::default() };
    let logs = pb::LogBatch { worker_id: "w1".into(), chunks: vec![chunk] };
    let err = client.ship_logs(logs).await.expect_err("output of no stream");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("chunks.stream: "), "{}", err.message());
    master.shutdown().await;
}

/// A master of another protocol version. One of protocol 1 accepts anyone and says no
/// version; a newer one refuses as ours does, with its own version.
struct OtherMaster {
    version: u32,
    registrations: Arc<AtomicUsize>,
    unregistrations: Arc<AtomicUsize>,
}

type CommandStream = Pin<Box<dyn futures::Stream<Item = Result<pb::WorkerCommand, Status>> + Send>>;

#[tonic::async_trait]
impl MasterService for OtherMaster {
    async fn register_worker(
        &self,
        request: Request<pb::RegisterWorkerRequest>,
    ) -> Result<Response<pb::RegisterWorkerResponse>, Status> {
        self.registrations.fetch_add(1, Ordering::SeqCst);
        if self.version == 1 {
            return Ok(Response::new(pb::RegisterWorkerResponse {
                master_id: "v1".into(),
                ..Default::default()
            }));
        }
        let worker = request.into_inner().protocol_version;
        let mut status = Status::failed_precondition(format!(
            "worker speaks protocol {worker}, this master speaks protocol {}; upgrade the worker or the master",
            self.version
        ));
        status.metadata_mut().insert(PROTOCOL_VERSION_KEY, self.version.into());
        Err(status)
    }

    async fn unregister_worker(
        &self,
        _: Request<pb::UnregisterWorkerRequest>,
    ) -> Result<Response<pb::UnregisterWorkerResponse>, Status> {
        self.unregistrations.fetch_add(1, Ordering::SeqCst);
        Ok(Response::new(pb::UnregisterWorkerResponse {}))
    }

    async fn send_heartbeat(
        &self,
        _: Request<pb::Heartbeat>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    type StreamCommandsStream = CommandStream;

    async fn stream_commands(
        &self,
        _: Request<pb::StreamCommandsRequest>,
    ) -> Result<Response<Self::StreamCommandsStream>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn report_task_status(
        &self,
        _: Request<pb::TaskStatusReport>,
    ) -> Result<Response<pb::TaskStatusAck>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn ship_logs(&self, _: Request<pb::LogBatch>) -> Result<Response<pb::LogAck>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn join_cluster(&self, _: Request<pb::JoinRequest>) -> Result<Response<pb::JoinResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn renew_certificate(
        &self,
        _: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

/// Runs a real worker agent against a master of `version`; returns how it ended and how
/// often it registered and unregistered.
async fn run_worker_against(version: u32) -> (Result<(), WorkerError>, usize, usize) {
    let registrations = Arc::new(AtomicUsize::new(0));
    let unregistrations = Arc::new(AtomicUsize::new(0));
    let master = OtherMaster {
        version,
        registrations: registrations.clone(),
        unregistrations: unregistrations.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let server = tonic::transport::Server::builder()
        .add_service(MasterServiceServer::new(master))
        .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener));
    let server = tokio::spawn(server);

    let config = worker_config(addr, &format!("w-of-{version}"));
    let shutdown = tokio_util::sync::CancellationToken::new();
    let ended = tokio::time::timeout(DEADLINE, cloudai_worker::run(config, shutdown))
        .await
        .expect("the worker gives up instead of retrying");
    server.abort();
    (ended, registrations.load(Ordering::SeqCst), unregistrations.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refused_by_a_newer_master_exits_naming_both_versions() {
    let (ended, registrations, _) = run_worker_against(3).await;
    let err = ended.expect_err("the worker exits with an error");
    assert!(matches!(err, WorkerError::ProtocolMismatch { worker: 2, master: 3 }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("protocol 2") && message.contains("protocol 3"), "{message}");
    assert_eq!(registrations, 1, "a refusal is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_accepted_by_an_older_master_leaves_naming_both_versions() {
    let (ended, registrations, unregistrations) = run_worker_against(1).await;
    let err = ended.expect_err("the worker exits with an error");
    assert!(matches!(err, WorkerError::ProtocolMismatch { worker: 2, master: 1 }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("protocol 2") && message.contains("protocol 1"), "{message}");
    assert_eq!((registrations, unregistrations), (1, 1), "it leaves the master that let it in");
}

#[tokio::test]
async fn registrations_past_the_limits_or_never_schedulable_are_refused_naming_why() {
    let master = start_master(master_config(Duration::from_secs(30))).await;
    let mut client = connect(master.grpc_addr).await;
    let base = || registration_at("w-limits", PROTOCOL_VERSION);
    let gpu =
        |i: u32| pb::GpuInfo { index: i, uuid: format!("GPU-{i}"), model: "sim".into(), memory_total_mb: 80 };
    let cases: Vec<(pb::RegisterWorkerRequest, &str)> = vec![
        (pb::RegisterWorkerRequest { cpu_cores: 1e10, ..base() }, "cpu_cores"),
        (pb::RegisterWorkerRequest { cpu_cores: 0.0, ..base() }, "cpu_cores"),
        (pb::RegisterWorkerRequest { memory_mb: 0, ..base() }, "memory_mb"),
        (pb::RegisterWorkerRequest { drivers: vec![], ..base() }, "drivers"),
        (pb::RegisterWorkerRequest { gpus: (0..100_000).map(gpu).collect(), ..base() }, "gpus"),
        (
            pb::RegisterWorkerRequest {
                labels: (0..65).map(|i| (format!("k{i}"), "v".into())).collect(),
                ..base()
            },
            "labels",
        ),
        (pb::RegisterWorkerRequest { hostname: "h".repeat(10_000), ..base() }, "hostname"),
    ];
    for (request, field) in cases {
        let err = client.register_worker(request).await.expect_err("refused");
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{field}: {}", err.message());
        assert!(err.message().starts_with(field), "the message names {field}: {}", err.message());
    }
    let (status, workers) = get_json(&format!("http://{}/workers", master.http_addr)).await;
    assert_eq!(
        (status, workers.as_object().map(|w| w.len())),
        (200, Some(0)),
        "nothing registered: {workers}"
    );

    client.register_worker(base()).await.expect("a sane registration is accepted");
    let too_many = pb::Heartbeat {
        worker_id: "w-limits".into(),
        running_tasks: (0..2000)
            .map(|i| pb::RunningTask {
                task_id: format!("t{i}"),
                status: pb::TaskStatus::Running.into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let err = client.send_heartbeat(too_many).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
    assert!(
        err.message().contains("running_tasks") && err.message().contains("limit of 1024"),
        "{}",
        err.message()
    );
    master.shutdown().await;
}

#[tokio::test]
async fn the_limits_on_worker_messages_are_settings() {
    let mut config = master_config(Duration::from_secs(30));
    config.workers.message =
        WireLimits { gpus: 2, running_tasks: 3, message_bytes: 2 * 1024 * 1024, ..WireLimits::default() };
    let master = start_master(config).await;
    let mut client = connect(master.grpc_addr).await;
    let gpu =
        |i: u32| pb::GpuInfo { index: i, uuid: format!("GPU-{i}"), model: "sim".into(), memory_total_mb: 80 };
    let three_gpus = pb::RegisterWorkerRequest {
        gpus: (0..3).map(gpu).collect(),
        ..registration_at("w-set", PROTOCOL_VERSION)
    };
    let err = client.register_worker(three_gpus).await.expect_err("past the configured limit");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{}", err.message());
    assert!(err.message().starts_with("gpus") && err.message().contains("limit of 2"), "{}", err.message());
    let two_gpus = pb::RegisterWorkerRequest {
        gpus: (0..2).map(gpu).collect(),
        ..registration_at("w-set", PROTOCOL_VERSION)
    };
    client.register_worker(two_gpus).await.expect("within it");
    let running = |n: usize| pb::Heartbeat {
        worker_id: "w-set".into(),
        running_tasks: (0..n)
            .map(|i| pb::RunningTask {
                task_id: format!("t{i}"),
                status: pb::TaskStatus::Running.into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let err = client.send_heartbeat(running(4)).await.expect_err("past the configured limit");
    assert!(
        err.message().contains("running_tasks") && err.message().contains("limit of 3"),
        "{}",
        err.message()
    );
    // 3 MiB: under the default message size, over the configured 2 MiB.
    let big = pb::RegisterWorkerRequest {
        hostname: "h".repeat(3 << 20),
        ..registration_at("w-big", PROTOCOL_VERSION)
    };
    let err = client.register_worker(big).await.expect_err("over the configured message size");
    assert_eq!(err.code(), tonic::Code::ResourceExhausted, "{}", err.message());
    assert!(err.message().contains("over the limit of 2097152 bytes"), "{}", err.message());
    master.shutdown().await;
}

/// Sends the bytes as they are, as a broken or hostile client would.
#[derive(Clone, Copy, Default)]
struct RawCodec;

struct RawEncoder;
struct IgnoreDecoder;

impl tonic::codec::Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = IgnoreDecoder;

    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }

    fn decoder(&mut self) -> IgnoreDecoder {
        IgnoreDecoder
    }
}

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, buf: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), Status> {
        prost::bytes::BufMut::put_slice(buf, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for IgnoreDecoder {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, buf: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, Status> {
        let n = prost::bytes::Buf::remaining(buf);
        prost::bytes::Buf::advance(buf, n);
        Ok(Some(()))
    }
}

/// Calls `method` of the master's service with `body` as the request message.
async fn call_raw(addr: std::net::SocketAddr, method: &str, body: Vec<u8>) -> Result<(), Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let path = format!("/cloudai.v1.MasterService/{method}").parse().expect("path");
    grpc.unary(Request::new(body), path, RawCodec).await.map(|_| ())
}

#[tokio::test]
async fn a_malformed_message_is_invalid_argument_naming_the_message() {
    let master = start_master(master_config(Duration::from_secs(30))).await;
    // A field that claims 5 bytes and has 1; a string that is not UTF-8; a tag that never ends.
    let cases: [(&str, &str, Vec<u8>); 3] = [
        ("ReportTaskStatus", "TaskStatusReport", vec![0x12, 0x05, b't']),
        ("ShipLogs", "LogBatch", vec![0x0a, 0x02, 0xff, 0xfe]),
        (
            "SendHeartbeat",
            "Heartbeat",
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
        ),
    ];
    for (method, message, body) in cases {
        let err = call_raw(master.grpc_addr, method, body).await.expect_err("garbage is refused");
        assert_eq!(err.code(), Code::InvalidArgument, "{method}: {err:?}");
        assert!(err.message().starts_with(&format!("malformed {message}: ")), "{method}: {}", err.message());
    }
    // The master is none the worse for it.
    let mut client = connect(master.grpc_addr).await;
    client.register_worker(registration("w1")).await.expect("a good message still works");
    master.shutdown().await;
}

#[tokio::test]
async fn an_over_size_message_is_resource_exhausted_naming_the_limit() {
    let master = start_master(master_config(Duration::from_secs(30))).await;
    let limit = cloudai_proto::MAX_MESSAGE_BYTES;
    let mut client = connect(master.grpc_addr).await;
    client.register_worker(registration("w1")).await.expect("register");
    for size in [limit + 1, 3 * limit] {
        let chunk = pb::LogChunk {
            task_id: "t1".into(),
            stream: pb::LogStream::Stdout.into(),
            data: vec![b'x'; size],
            timestamp_ms: 1,
        };
        let batch = pb::LogBatch { worker_id: "w1".into(), chunks: vec![chunk] };
        let err = client.ship_logs(batch).await.expect_err("over the limit");
        assert_eq!(err.code(), Code::ResourceExhausted, "{size} bytes: {err:?}");
        assert!(
            err.message().contains(&format!("over the limit of {limit} bytes")),
            "names the limit: {}",
            err.message()
        );
    }
    // Hand-made bytes: refused from the frame's length, before anything decodes them.
    let err = call_raw(master.grpc_addr, "ShipLogs", vec![0u8; limit + 10]).await.expect_err("over");
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(err.message(), format!("message of {} bytes is over the limit of {limit} bytes", limit + 10));
    master.shutdown().await;
}

#[tokio::test]
async fn an_unknown_task_status_is_invalid_argument_and_changes_nothing() {
    let master = start_master(master_config(Duration::from_secs(30))).await;
    let api = format!("http://{}", master.http_addr);
    let mut worker = RawWorker::join(master.grpc_addr, "w1").await;
    let task = submit(&api, shell_task("true")).await;
    let (task_id, attempt) = worker.next_start().await;
    assert_eq!(task["task_id"], task_id.as_str());

    let report = pb::TaskStatusReport {
        worker_id: "w1".into(),
        task_id: task_id.clone(),
        attempt,
        update: Some(pb::task_status_report::Update::Status(pb::StatusChange {
            status: 42,
            ..Default::default()
        })),
        ..Default::default()
    };
    let err = worker.client.report_task_status(report).await.expect_err("status 42 is refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert_eq!(err.message(), "status.status: unknown task status 42");
    assert_eq!(get_task(&api, &task_id).await["status"], "queued", "the task did not move");
    master.shutdown().await;
}

#[tokio::test]
async fn a_huge_error_in_a_final_report_lands_cut_to_the_limit() {
    let master = start_master(master_config(Duration::from_secs(30))).await;
    let api = format!("http://{}", master.http_addr);
    let mut worker = RawWorker::join(master.grpc_addr, "w1").await;
    submit(&api, shell_task("exit 3")).await;
    let (task_id, attempt) = worker.next_start().await;
    worker.report(&task_id, attempt, pb::TaskStatus::Running, None, String::new()).await.expect("running");

    let huge = format!("disk on fire: {}", "x".repeat(3 << 20));
    worker
        .report(&task_id, attempt, pb::TaskStatus::Failed, Some(3), huge.clone())
        .await
        .expect("the final report is taken, not refused");
    let task = wait_status(&api, &task_id, "failed").await;
    let error = task["error"].as_str().expect("an error");
    let limit = cloudai_proto::limits::MAX_REPORT_TEXT_BYTES;
    assert!(error.len() <= limit + 64, "bounded: {} bytes", error.len());
    assert!(error.starts_with("disk on fire: xxx"), "keeps the start: {}", &error[..40]);
    let cut = huge.len() - limit;
    assert!(error.ends_with(&format!("… ({cut} bytes cut)")), "says it was cut: {}", &error[limit - 10..]);
    assert_eq!(task["exit_code"], 3);
    master.shutdown().await;
}

/// Sends `frames` as the whole body of a gRPC request to `method`, with `grpc-encoding` when
/// given: a client that gets the framing wrong.
async fn call_framed(
    addr: std::net::SocketAddr,
    method: &str,
    encoding: Option<&str>,
    frames: &str,
) -> Status {
    use tonic::codegen::Service;
    let mut channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut request =
        tonic::codegen::http::Request::post(format!("http://{addr}/cloudai.v1.MasterService/{method}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let request = request.body(tonic::body::Body::new(frames.to_string())).expect("request");
    std::future::poll_fn(|cx| channel.poll_ready(cx)).await.expect("channel ready");
    let response = channel.call(request).await.expect("an answer");
    // Refused before any handler ran: the status is in the headers (a trailers-only answer).
    Status::from_header_map(response.headers()).expect("a gRPC status")
}

/// Found by the `grpc_wire` fuzz target (docs/fuzzing.md): tonic answered these `INTERNAL`,
/// telling the worker the master broke.
#[tokio::test]
async fn a_frame_the_master_cannot_read_is_invalid_argument() {
    let master = start_master(master_config(Duration::from_secs(30))).await;
    let cases = [
        ("flagged compressed without an encoding", None, "\x01\x00\x00\x00\x01x"),
        ("a compression flag that does not exist", None, "\x02\x00\x00\x00\x01x"),
        ("cut short", None, "\x00\x00\x00\x00\x05ab"),
        ("no message", None, ""),
        ("not gzip", Some("gzip"), "\x01\x00\x00\x00\x03abc"),
        ("not zstd", Some("zstd"), "\x01\x00\x00\x00\x03abc"),
    ];
    for (what, encoding, frames) in cases {
        let status = call_framed(master.grpc_addr, "SendHeartbeat", encoding, frames).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(status.message().starts_with("malformed request frame: "), "{what}: {}", status.message());
    }
    // The master is none the worse for it.
    let mut client = connect(master.grpc_addr).await;
    client.register_worker(registration("w1")).await.expect("a good message still works");
    master.shutdown().await;
}
