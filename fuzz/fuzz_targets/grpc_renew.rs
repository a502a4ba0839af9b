//! `RenewCertificate`: a `RenewRequest` as bytes, to the plain-text master's handler and a
//! TLS cluster's (both refuse it: no CA, no client certificate in-process), then its CSR
//! signed as that handler signs it once the certificate is checked (the join's signing).
#![no_main]

use cloudai_fuzz::{check_grpc, harness};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_server::MasterService;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(renew) = pb::RenewRequest::decode(data) else { return };
    let h = harness();
    h.prepare();
    h.run(async { check_grpc(h.rpc.renew_certificate(tonic::Request::new(renew.clone())).await) });
    check_grpc(h.secure.renew(&tonic::Request::new(renew.clone())));
    let join = pb::JoinRequest {
        join_secret: h.join_secret.clone(),
        worker_id: "fuzz-renewing".into(),
        csr_pem: renew.csr_pem,
    };
    check_grpc(h.secure.join(&tonic::Request::new(()), &join, |_| false));
});
