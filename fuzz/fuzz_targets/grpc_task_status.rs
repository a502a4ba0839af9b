//! `ReportTaskStatus`: a `TaskStatusReport` as bytes. A `task_id` of `cloudai_fuzz::PLACED` names the
//! task placed on the harness's worker, so reports reach the task state machine.
#![no_main]

use cloudai_fuzz::{check_grpc, harness};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_server::MasterService;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(mut report) = pb::TaskStatusReport::decode(data) else { return };
    let h = harness();
    h.prepare();
    h.task_id(&mut report.task_id);
    h.run(async { check_grpc(h.rpc.report_task_status(tonic::Request::new(report)).await) });
});
