//! The protocol version handshake: a master refuses a worker that speaks another
//! version, and says which one it speaks so the worker can name both.

use tonic::Status;

/// The protocol version of this build (`cloudai.v1` package, revision 2).
pub const PROTOCOL_VERSION: u32 = 2;

/// Metadata key of a version refusal: the version the master speaks.
pub const PROTOCOL_VERSION_KEY: &str = "protocol-version";

/// The master's refusal of a worker that speaks `worker_version`.
pub fn version_refusal(worker_version: u32) -> Status {
    let mut status = Status::failed_precondition(format!(
        "worker speaks protocol {worker_version}, this master speaks protocol {PROTOCOL_VERSION}; \
         upgrade the worker or the master"
    ));
    status.metadata_mut().insert(PROTOCOL_VERSION_KEY, PROTOCOL_VERSION.into());
    status
}

/// The master's version, if `status` is its refusal of this worker's version.
pub fn refused_version(status: &Status) -> Option<u32> {
    if status.code() != tonic::Code::FailedPrecondition {
        return None;
    }
    status.metadata().get(PROTOCOL_VERSION_KEY)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_both_versions_and_carries_the_masters() {
        let status = version_refusal(1);
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("protocol 1") && status.message().contains("protocol 2"));
        assert_eq!(refused_version(&status), Some(PROTOCOL_VERSION));
        assert_eq!(refused_version(&Status::failed_precondition("other")), None);
    }
}
