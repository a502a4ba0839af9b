//! `ShipLogs`: a `LogBatch` as bytes. A chunk's `task_id` of `cloudai_fuzz::PLACED` names the task
//! placed on the harness's worker, so output reaches the log store.
#![no_main]

use cloudai_fuzz::{check_grpc, harness};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_server::MasterService;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(mut batch) = pb::LogBatch::decode(data) else { return };
    let h = harness();
    h.prepare();
    for chunk in &mut batch.chunks {
        h.task_id(&mut chunk.task_id);
    }
    h.run(async { check_grpc(h.rpc.ship_logs(tonic::Request::new(batch)).await) });
});
