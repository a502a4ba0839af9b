//! `JoinCluster`: a `JoinRequest` as bytes, to the plain-text master's handler (refused: it
//! has no CA) and to a TLS cluster's trust, which the handler of a TLS master calls. An
//! empty `join_secret` is replaced with that cluster's real one, so the CSR is parsed and signed.
#![no_main]

use cloudai_fuzz::{check_grpc, harness};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_server::MasterService;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(mut join) = pb::JoinRequest::decode(data) else { return };
    let h = harness();
    h.prepare();
    h.run(async { check_grpc(h.rpc.join_cluster(tonic::Request::new(join.clone())).await) });
    if join.join_secret.is_empty() {
        join.join_secret = h.join_secret.clone();
    }
    let fleet = &h.master.fleet;
    let active = |id: &_| fleet.state(id).is_some_and(|s| s.is_active());
    check_grpc(h.secure.join(&tonic::Request::new(()), &join, active));
});
