//! Who a worker is. Over mTLS, the worker id in its certificate, never the one in a message:
//! a worker may speak only for itself. Joining (a certificate for a CSR, given the join
//! token's secret), renewal and revocation live here. Without TLS (`--insecure`, loopback
//! only) a message's worker id is taken as it is.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use cloudai_domain::WorkerId;
use cloudai_pki::{ClusterCa, JoinSecret, JoinToken, PkiDir, PkiError};
use cloudai_proto::v1 as pb;
use parking_lot::{Mutex, RwLock};
use tonic::{Request, Status};
use tracing::{info, warn};

use crate::metrics::{Denied, Metrics};

/// Failed join attempts allowed per peer address in [`JOIN_WINDOW`]; more are refused
/// `RESOURCE_EXHAUSTED` without looking at the token.
const JOIN_FAILURES: u32 = 5;
const JOIN_WINDOW: Duration = Duration::from_secs(60);
/// Peers tracked for join failures; past it the oldest windows are dropped.
const JOIN_PEERS: usize = 4096;
/// Largest CSR accepted (a P-256 one is ~400 bytes).
const MAX_CSR_BYTES: usize = 16 * 1024;
/// Certificates whose worker id is remembered (~550 bytes each); past it the map starts empty.
const KNOWN_CERTS: usize = 65_536;

/// How workers prove who they are.
#[derive(Clone)]
pub struct WorkerTrust {
    secure: Option<Arc<Secure>>,
    metrics: Metrics,
}

struct Secure {
    ca: ClusterCa,
    dir: PkiDir,
    join: RwLock<JoinSecret>,
    revoked: RwLock<BTreeSet<String>>,
    cert_lifetime: Duration,
    failures: Mutex<HashMap<IpAddr, (Instant, u32)>>,
    /// Worker id by certificate (its whole DER, so two certificates never share an entry):
    /// every RPC of a connection presents the same certificate, and parsing it was ~6 % of
    /// the master's CPU at 2,000 mTLS workers heartbeating.
    known: RwLock<HashMap<Box<[u8]>, String>>,
}

/// The worker a request comes from, when its certificate says so.
#[derive(Debug)]
pub struct Caller(Option<String>);

/// Why a change to the cluster's trust failed.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("the cluster runs without TLS (--insecure): there is no CA, join token or certificate to revoke")]
    Insecure,
}

impl WorkerTrust {
    /// Plain text: every message's worker id is believed. Loopback only (see the CLI).
    pub fn insecure(metrics: Metrics) -> Self {
        Self { secure: None, metrics }
    }

    pub fn secure(
        dir: PkiDir,
        ca: ClusterCa,
        cert_lifetime: Duration,
        metrics: Metrics,
    ) -> Result<Self, PkiError> {
        let secure = Secure {
            join: RwLock::new(dir.join_secret()?),
            revoked: RwLock::new(dir.revoked()?),
            ca,
            dir,
            cert_lifetime,
            failures: Mutex::new(HashMap::new()),
            known: RwLock::new(HashMap::new()),
        };
        Ok(Self { secure: Some(Arc::new(secure)), metrics })
    }

    pub fn is_secure(&self) -> bool {
        self.secure.is_some()
    }

    /// The whole join token (secure mode).
    pub fn join_token(&self) -> Option<JoinToken> {
        let secure = self.secure.as_ref()?;
        Some(JoinToken { ca_fingerprint: secure.ca.fingerprint(), secret: secure.join.read().clone() })
    }

    /// A new join secret: the old token admits no one from now on (workers that joined keep
    /// their certificates).
    pub fn rotate_join_token(&self) -> Result<JoinToken, TrustError> {
        let secure = self.secure.as_ref().ok_or(TrustError::Insecure)?;
        let secret = secure.dir.rotate_join_secret()?;
        *secure.join.write() = secret.clone();
        info!("join token rotated");
        Ok(JoinToken { ca_fingerprint: secure.ca.fingerprint(), secret })
    }

    /// Refuses every certificate of `worker_id` from now on, and its joining again; durable
    /// before it returns. `false` if it was revoked already.
    pub fn revoke(&self, worker_id: &WorkerId) -> Result<bool, TrustError> {
        let secure = self.secure.as_ref().ok_or(TrustError::Insecure)?;
        let mut revoked = secure.revoked.write();
        if revoked.contains(worker_id.as_str()) {
            return Ok(false);
        }
        let mut next = revoked.clone();
        next.insert(worker_id.to_string());
        secure.dir.write_revoked(&next)?;
        *revoked = next;
        warn!(worker_id = %worker_id, "worker revoked: its certificates are refused from now on");
        Ok(true)
    }

    pub fn is_revoked(&self, worker_id: &WorkerId) -> bool {
        self.secure.as_ref().is_some_and(|s| s.revoked.read().contains(worker_id.as_str()))
    }

    /// Who sent `request`: over mTLS the worker its certificate names (refused without one,
    /// or when that worker is revoked); without TLS, whoever the message says.
    pub fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        match &self.secure {
            None => Ok(Caller(None)),
            Some(secure) => self.certified(secure, request).map(|id| Caller(Some(id))),
        }
    }

    /// Checks that `caller` may speak for `claimed`: only for itself.
    pub fn check(&self, caller: &Caller, claimed: &WorkerId) -> Result<(), Status> {
        match &caller.0 {
            Some(certified) if certified != claimed.as_str() => {
                self.metrics.deny(Denied::NotItself);
                Err(Status::permission_denied(format!(
                    "this certificate is worker {certified}'s; it cannot speak for worker {claimed}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Counts a request refused elsewhere (e.g. a report for a task placed on another worker).
    pub fn denied(&self, reason: Denied) {
        self.metrics.deny(reason);
    }

    fn certified<T>(&self, secure: &Secure, request: &Request<T>) -> Result<String, Status> {
        let certs = request.peer_certs();
        let Some(cert) = certs.as_deref().and_then(|c| c.first()) else {
            self.metrics.deny(Denied::NoCertificate);
            return Err(Status::unauthenticated(
                "a worker certificate is required: join with CLOUDAI_JOIN_TOKEN first",
            ));
        };
        let known = secure.known.read().get(cert.as_ref()).cloned();
        let worker = match known {
            Some(worker) => worker,
            None => {
                let worker = cloudai_pki::worker_id_of(cert).map_err(|e| {
                    self.metrics.deny(Denied::NoCertificate);
                    Status::unauthenticated(e.to_string())
                })?;
                let mut known = secure.known.write();
                if known.len() >= KNOWN_CERTS {
                    known.clear();
                }
                known.insert(cert.as_ref().into(), worker.clone());
                worker
            }
        };
        // Revocation is checked on every RPC: only the parsing is remembered.
        if secure.revoked.read().contains(&worker) {
            self.metrics.deny(Denied::Revoked);
            return Err(Status::permission_denied(format!("worker {worker} is revoked")));
        }
        Ok(worker)
    }

    /// A certificate for a joining worker that presents the join secret. `active`: the id is
    /// in use by a worker heartbeating now (its certificate is not handed to another).
    pub fn join<T>(
        &self,
        request: &Request<T>,
        join: &pb::JoinRequest,
        active: impl FnOnce(&WorkerId) -> bool,
    ) -> Result<pb::JoinResponse, Status> {
        let Some(secure) = &self.secure else {
            return Err(Status::failed_precondition(
                "this master runs without TLS (--insecure): workers register without joining",
            ));
        };
        let peer = request.remote_addr().map(|a| a.ip());
        if let Some(ip) = peer
            && secure.failures_exceeded(ip)
        {
            self.metrics.deny(Denied::JoinRateLimited);
            return Err(Status::resource_exhausted(format!(
                "too many failed join attempts from {ip}; wait a minute"
            )));
        }
        if !secure.join.read().matches(join.join_secret.trim()) {
            if let Some(ip) = peer {
                secure.failed(ip);
            }
            self.metrics.deny(Denied::BadJoinToken);
            return Err(Status::unauthenticated("the join token is not this cluster's current one"));
        }
        let worker_id = WorkerId::parse(&join.worker_id)
            .map_err(|e| Status::invalid_argument(format!("worker_id: {e}")))?;
        if secure.revoked.read().contains(worker_id.as_str()) {
            self.metrics.deny(Denied::Revoked);
            return Err(Status::permission_denied(format!(
                "worker {worker_id} is revoked; join with another id"
            )));
        }
        if active(&worker_id) {
            return Err(Status::already_exists(format!(
                "worker {worker_id} is active with its own certificate; join with another id, or revoke it first"
            )));
        }
        let issued = secure.sign(&worker_id, &join.csr_pem)?;
        info!(worker_id = %worker_id, peer = ?peer, "worker joined: certificate issued");
        Ok(pb::JoinResponse {
            certificate_pem: issued.chain_pem,
            ca_pem: secure.ca.cert_pem().to_string(),
            not_after_ms: unix_ms(issued.not_after),
        })
    }

    /// A new certificate for the caller, from its new CSR.
    pub fn renew(&self, request: &Request<pb::RenewRequest>) -> Result<pb::RenewResponse, Status> {
        let Some(secure) = &self.secure else {
            return Err(Status::failed_precondition("this master runs without TLS (--insecure)"));
        };
        let caller = self.certified(secure, request)?;
        let worker_id =
            WorkerId::parse(&caller).map_err(|e| Status::unauthenticated(format!("worker id: {e}")))?;
        let issued = secure.sign(&worker_id, &request.get_ref().csr_pem)?;
        info!(worker_id = %worker_id, "worker certificate renewed");
        Ok(pb::RenewResponse { certificate_pem: issued.chain_pem, not_after_ms: unix_ms(issued.not_after) })
    }
}

impl Secure {
    fn sign(&self, worker_id: &WorkerId, csr_pem: &str) -> Result<cloudai_pki::IssuedCert, Status> {
        if csr_pem.len() > MAX_CSR_BYTES {
            return Err(Status::invalid_argument(format!("csr_pem: larger than {MAX_CSR_BYTES} bytes")));
        }
        self.ca
            .sign_worker(worker_id.as_str(), csr_pem, self.cert_lifetime)
            .map_err(|e| Status::invalid_argument(format!("csr_pem: {e}")))
    }

    fn failures_exceeded(&self, ip: IpAddr) -> bool {
        let failures = self.failures.lock();
        failures.get(&ip).is_some_and(|(since, n)| since.elapsed() < JOIN_WINDOW && *n >= JOIN_FAILURES)
    }

    fn failed(&self, ip: IpAddr) {
        let mut failures = self.failures.lock();
        if failures.len() >= JOIN_PEERS {
            failures.retain(|_, (since, _)| since.elapsed() < JOIN_WINDOW);
        }
        if failures.len() >= JOIN_PEERS {
            return; // a flood from many addresses: each is still refused by the secret
        }
        let entry = failures.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= JOIN_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
