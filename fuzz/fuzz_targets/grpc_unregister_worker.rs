//! `UnregisterWorker`: an `UnregisterWorkerRequest` as bytes (the harness registers its
//! worker again before the next input).
#![no_main]

use cloudai_fuzz::{check_grpc, harness};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_server::MasterService;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(request) = pb::UnregisterWorkerRequest::decode(data) else { return };
    let h = harness();
    h.prepare();
    h.run(async { check_grpc(h.rpc.unregister_worker(tonic::Request::new(request)).await) });
});
