//! `RegisterWorker`: a `RegisterWorkerRequest` as bytes, decoded as the server decodes it,
//! handled by the master's handler. Its running tasks may name `cloudai_fuzz::PLACED`.
#![no_main]

use cloudai_fuzz::{check_grpc, harness};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_server::MasterService;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(mut request) = pb::RegisterWorkerRequest::decode(data) else { return };
    let h = harness();
    h.prepare();
    for task in &mut request.running_tasks {
        h.task_id(&mut task.task_id);
    }
    h.run(async { check_grpc(h.rpc.register_worker(tonic::Request::new(request)).await) });
});
