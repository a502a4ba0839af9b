//! The gRPC server itself, as the HTTP/2 layer hands it a request: a method's path, a
//! `grpc-encoding`, and a body framed (and compressed) or not. This reaches what the
//! per-message targets skip: tonic's framing, the size limit, gzip and zstd decompression,
//! our codec's refusals. Input: method, encoding, framing, then the payload.
#![no_main]

use std::io::Write;

use bytes::Bytes;
use cloudai_fuzz::{check_grpc, harness};
use http_body_util::{BodyExt, Full};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// Every unary method (the command stream never ends, so it is left to its own target).
const METHODS: &[&str] = &[
    "RegisterWorker",
    "UnregisterWorker",
    "SendHeartbeat",
    "ReportTaskStatus",
    "ShipLogs",
    "JoinCluster",
    "RenewCertificate",
    "NoSuchMethod",
];
const ENCODINGS: &[Option<&str>] = &[None, Some("gzip"), Some("zstd"), Some("identity"), Some("br")];

fn frame(compressed: bool, payload: &[u8]) -> Vec<u8> {
    let mut body = vec![u8::from(compressed)];
    body.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(u32::MAX).to_be_bytes());
    body.extend_from_slice(payload);
    body
}

fn compress(encoding: Option<&str>, payload: &[u8]) -> Option<Vec<u8>> {
    match encoding {
        Some("gzip") => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(payload).ok()?;
            gz.finish().ok()
        }
        Some("zstd") => zstd::encode_all(payload, 1).ok(),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let [method, encoding, framing, payload @ ..] = data else { return };
    let method = METHODS[usize::from(*method) % METHODS.len()];
    let encoding = ENCODINGS[usize::from(*encoding) % ENCODINGS.len()];
    let body = match framing % 4 {
        // One uncompressed message.
        0 => frame(false, payload),
        // The payload compressed as the encoding says, flagged compressed.
        1 => match compress(encoding, payload) {
            Some(compressed) => frame(true, &compressed),
            None => frame(true, payload),
        },
        // Flagged compressed, not compressed.
        2 => frame(true, payload),
        // Framing and all, as given.
        _ => payload.to_vec(),
    };
    let mut request = axum::http::Request::post(format!("/cloudai.v1.MasterService/{method}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(encoding) = encoding {
        request = request.header("grpc-encoding", encoding);
    }
    let request = request.body(Full::new(Bytes::from(body))).expect("request");
    let h = harness();
    h.prepare();
    h.run(async {
        let Ok(response) = h.rpc.clone().into_server().oneshot(request).await;
        let headers = response.headers().clone();
        let collected = response.into_body().collect().await.expect("a gRPC body ends without error");
        let status = tonic::Status::from_header_map(&headers)
            .or_else(|| collected.trailers().and_then(tonic::Status::from_header_map))
            .expect("a gRPC status in the headers or trailers");
        if status.code() != tonic::Code::Ok {
            check_grpc::<()>(Err(status));
        }
    });
});
