//! `StreamCommands`: a `StreamCommandsRequest` as bytes; an opened stream is dropped (the
//! worker went away), and the harness takes its worker's stream back.
#![no_main]

use cloudai_fuzz::{WORKER, check_grpc, harness};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_server::MasterService;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = pb::StreamCommandsRequest::decode(data) else { return };
    let h = harness();
    h.prepare();
    let ours = request.worker_id == WORKER;
    h.run(async {
        drop(check_grpc(h.rpc.stream_commands(tonic::Request::new(request)).await));
        if ours {
            h.open_stream().await;
        }
    });
});
