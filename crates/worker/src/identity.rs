//! The worker's side of the cluster's trust. With an `https://` master address the worker
//! joins once (the join token pins the CA, its secret buys a certificate for the worker's own
//! key), keeps its identity in `<data dir>/identity/`, speaks mTLS from then on, and renews
//! its certificate two thirds into its life. It never falls back to plain text.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cloudai_pki::{JoinToken, PkiError, TlsConnector, WorkerCsr};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::{info, warn};

use cloudai_domain::WorkerId;

/// Longest wait between join or renewal attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error(
        "this worker has no certificate for the master yet: give it the join token (CLOUDAI_JOIN_TOKEN, from `cloudai token join` on the master)"
    )]
    NoJoinToken,
    #[error("the master refused to let this worker join: {}", .0.message())]
    JoinRefused(Status),
    #[error("{}", cloudai_pki::WRONG_CA)]
    WrongCa,
    #[error("invalid MASTER_ADDR {0:?}: an https:// address needs a host")]
    BadAddr(String),
    #[error(transparent)]
    Pki(#[from] PkiError),
}

/// The worker's key, certificate and the CA that signed it, as kept on disk.
struct Identity {
    chain_pem: String,
    key_pem: String,
    ca_pem: String,
}

/// Files in `<data dir>/identity/`.
struct IdentityDir(PathBuf);

impl IdentityDir {
    fn load(&self, worker_id: &WorkerId, pinned: Option<&str>) -> Option<Identity> {
        let read = |name: &str| std::fs::read_to_string(self.0.join(name)).ok();
        let identity = Identity {
            chain_pem: read("worker.crt")?,
            key_pem: cloudai_pki::read_private_text(&self.0.join("worker.key")).ok()?,
            ca_pem: read("ca.crt")?,
        };
        let (worker, ca) = cloudai_pki::chain_identity(&identity.chain_pem).ok()?;
        let (not_after, _) = cloudai_pki::validity_of(&identity.chain_pem).ok()?;
        // A key that is not the certificate's (a crash mid-renewal) makes this fail.
        cloudai_pki::client_config(&identity.ca_pem, Some((&identity.chain_pem, &identity.key_pem))).ok()?;
        // Kept only if still this worker's, unexpired, and of the cluster the token names.
        let fits = worker == worker_id.as_str()
            && not_after > SystemTime::now()
            && pinned.is_none_or(|pin| ca.as_deref() == Some(pin));
        fits.then_some(identity)
    }

    fn save(&self, identity: &Identity) -> Result<(), PkiError> {
        cloudai_pki::write_private(&self.0.join("worker.key"), identity.key_pem.as_bytes())?;
        cloudai_pki::write_private(&self.0.join("worker.crt"), identity.chain_pem.as_bytes())?;
        cloudai_pki::write_private(&self.0.join("ca.crt"), identity.ca_pem.as_bytes())
    }
}

/// A channel to an `https://` master over mTLS, and the task renewing its certificate.
pub(crate) struct Secured {
    pub channel: Channel,
    pub renewal: tokio::task::JoinHandle<()>,
}

/// Joins if needed and returns an mTLS channel to `master_addr` (`https://host:port`).
/// Returns `Ok(None)` if `shutdown` came first.
pub(crate) async fn secure_channel(
    master_addr: &str,
    worker_id: &WorkerId,
    join_token: Option<&JoinToken>,
    data_dir: &Path,
    shutdown: &CancellationToken,
) -> Result<Option<Secured>, IdentityError> {
    let uri: http::Uri = master_addr.parse().map_err(|_| IdentityError::BadAddr(master_addr.into()))?;
    let host = uri.host().ok_or_else(|| IdentityError::BadAddr(master_addr.into()))?.to_string();
    // tonic must not add TLS of its own: the connector does it.
    let plain = format!("http://{}", uri.authority().map_or(host.as_str(), |a| a.as_str()));
    let endpoint = Endpoint::from_shared(plain)
        .map_err(|_| IdentityError::BadAddr(master_addr.into()))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(10))
        // A dead connection (a partition) is noticed in seconds, not at the next call's timeout.
        .http2_keep_alive_interval(crate::KEEPALIVE_INTERVAL)
        .keep_alive_timeout(crate::KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let dir = IdentityDir(data_dir.join("identity"));
    let pinned = join_token.map(|t| t.ca_fingerprint.as_str());
    let identity = match dir.load(worker_id, pinned) {
        Some(identity) => {
            info!(worker_id = %worker_id, "using the certificate kept from an earlier join");
            identity
        }
        None => {
            let token = join_token.ok_or(IdentityError::NoJoinToken)?;
            let Some(identity) = join(&endpoint, &host, worker_id, token, shutdown).await? else {
                return Ok(None);
            };
            dir.save(&identity)?;
            identity
        }
    };
    let config =
        cloudai_pki::client_config(&identity.ca_pem, Some((&identity.chain_pem, &identity.key_pem)))?;
    let connector = TlsConnector::new(&host, config)?;
    let channel = endpoint.connect_with_connector_lazy(connector.clone());
    let renewal = tokio::spawn(renew_forever(
        MasterServiceClient::new(channel.clone()),
        connector,
        dir,
        worker_id.clone(),
        identity,
        shutdown.clone(),
    ));
    Ok(Some(Secured { channel, renewal }))
}

/// Joins over TLS that trusts only the CA the token pins, retrying while the master is
/// unreachable.
async fn join(
    endpoint: &Endpoint,
    host: &str,
    worker_id: &WorkerId,
    token: &JoinToken,
    shutdown: &CancellationToken,
) -> Result<Option<Identity>, IdentityError> {
    let connector = TlsConnector::new(host, cloudai_pki::pinned_client_config(&token.ca_fingerprint)?)?;
    let mut client = MasterServiceClient::new(endpoint.connect_with_connector_lazy(connector));
    let csr = WorkerCsr::new(worker_id.as_str())?;
    let request = pb::JoinRequest {
        join_secret: token.secret.as_str().to_string(),
        worker_id: worker_id.to_string(),
        csr_pem: csr.csr_pem.clone(),
    };
    let mut backoff = Duration::from_millis(200);
    let joined = loop {
        let result = tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            r = client.join_cluster(request.clone()) => r,
        };
        match result {
            Ok(answer) => break answer.into_inner(),
            Err(status) if refusal(status.code()) => return Err(IdentityError::JoinRefused(status)),
            // Not this cluster's master: no retry makes it one.
            Err(status) if caused_by(&status, cloudai_pki::WRONG_CA) => return Err(IdentityError::WrongCa),
            Err(status) => {
                warn!(code = ?status.code(), message = status.message(), "cannot join yet, retrying")
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    };
    if cloudai_pki::fingerprint_of_pem(&joined.ca_pem)? != token.ca_fingerprint {
        return Err(IdentityError::WrongCa);
    }
    info!(worker_id = %worker_id, "joined the cluster: certificate received");
    Ok(Some(Identity { chain_pem: joined.certificate_pem, key_pem: csr.key_pem, ca_pem: joined.ca_pem }))
}

fn caused_by(status: &Status, what: &str) -> bool {
    let mut error: Option<&dyn std::error::Error> = Some(status);
    while let Some(e) = error {
        if e.to_string().contains(what) {
            return true;
        }
        error = e.source();
    }
    false
}

/// Answers no retry changes.
fn refusal(code: Code) -> bool {
    matches!(
        code,
        Code::Unauthenticated
            | Code::PermissionDenied
            | Code::InvalidArgument
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::Unimplemented
    )
}

/// Renews two thirds into each certificate's life; the new one is used from the next
/// connection on (the current connection was accepted with the old one and stays up).
async fn renew_forever(
    mut client: MasterServiceClient<Channel>,
    connector: TlsConnector,
    dir: IdentityDir,
    worker_id: WorkerId,
    mut identity: Identity,
    shutdown: CancellationToken,
) {
    loop {
        let due = cloudai_pki::validity_of(&identity.chain_pem)
            .map(|(_, renew_at)| renew_at.duration_since(SystemTime::now()).unwrap_or_default())
            .unwrap_or_default();
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(due) => {}
        }
        let mut backoff = Duration::from_secs(1);
        identity = loop {
            match renew_once(&mut client, &worker_id, &identity).await {
                Ok(renewed) => break renewed,
                Err(e) => warn!(error = %e, "cannot renew the worker certificate yet, retrying"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        };
        if let Err(e) = dir.save(&identity) {
            warn!(error = %e, "renewed certificate not saved; the next start joins again");
        }
        match cloudai_pki::client_config(&identity.ca_pem, Some((&identity.chain_pem, &identity.key_pem))) {
            Ok(config) => connector.set_config(config),
            Err(e) => warn!(error = %e, "the renewed certificate is unusable"),
        }
        info!(worker_id = %worker_id, "worker certificate renewed");
    }
}

async fn renew_once(
    client: &mut MasterServiceClient<Channel>,
    worker_id: &WorkerId,
    current: &Identity,
) -> Result<Identity, String> {
    let csr = WorkerCsr::new(worker_id.as_str()).map_err(|e| e.to_string())?;
    let answer = client
        .renew_certificate(pb::RenewRequest { csr_pem: csr.csr_pem })
        .await
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))?
        .into_inner();
    Ok(Identity { chain_pem: answer.certificate_pem, key_pem: csr.key_pem, ca_pem: current.ca_pem.clone() })
}
