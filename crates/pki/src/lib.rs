//! The cluster's trust: its certificate authority, the join token a worker presents once,
//! the certificates the master issues, and the TLS settings of master, workers and clients.
//!
//! One crypto provider (ring) everywhere; every private key is written 0600.

#![forbid(unsafe_code)]

mod ca;
mod connector;
mod files;
mod join;
mod tls;

pub use ca::{ClusterCa, IssuedCert, WorkerCsr, validity_of, worker_id_of};
pub use connector::TlsConnector;
pub use files::{PkiDir, read_private_text, write_private};
pub use join::{JoinSecret, JoinToken};
pub use tls::{WRONG_CA, api_server_config, client_config, pinned_client_config, provider};

/// What can go wrong with certificates, keys and tokens.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot create a certificate or key")]
    Generate(#[source] rcgen::Error),
    #[error("invalid certificate signing request")]
    BadCsr(#[source] rcgen::Error),
    #[error("{what} is not a valid PEM certificate or key")]
    BadPem { what: String },
    #[error("not a certificate this cluster issued to a worker: {0}")]
    NotAWorkerCert(String),
    #[error("invalid join token: {0}")]
    BadJoinToken(String),
    #[error("{path}: {source}")]
    File {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS settings")]
    Tls(#[from] rustls::Error),
}

/// The worker id and CA fingerprint of a worker's certificate chain (certificate, then CA).
pub fn chain_identity(chain_pem: &str) -> Result<(String, Option<String>), PkiError> {
    let certs = ca::pem_certs(chain_pem, "the certificate")?;
    let leaf = certs.first().ok_or_else(|| PkiError::BadPem { what: "the certificate".into() })?;
    Ok((worker_id_of(leaf)?, certs.get(1).map(|ca| sha256_hex(ca.as_ref()))))
}

/// The fingerprint (SHA-256 of the DER, hex) of the first certificate in `pem`.
pub fn fingerprint_of_pem(pem: &str) -> Result<String, PkiError> {
    let certs = ca::pem_certs(pem, "the CA certificate")?;
    let first = certs.first().ok_or_else(|| PkiError::BadPem { what: "the CA certificate".into() })?;
    Ok(sha256_hex(first.as_ref()))
}

/// SHA-256 of `data`, lower-case hex.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// `n` random bytes, hex: `rand::rng()` is a CSPRNG seeded from the operating system.
fn random_hex(n: usize) -> String {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::rng().fill_bytes(&mut bytes);
    hex(&bytes)
}
