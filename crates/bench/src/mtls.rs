//! The mTLS side of `cloudai bench heartbeats`. With a join token each simulated worker joins
//! as a real one does (a CSR for a key of its own, over TLS pinned to the CA the token names,
//! on a connection of its own), then speaks over an mTLS connection of its own: the master
//! takes a worker's identity from its connection's certificate, so workers cannot share one.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cloudai_pki::{JoinSecret, JoinToken, PkiDir, TlsConnector, WorkerCsr};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tonic::transport::{Channel, Endpoint, Uri};

/// Where and how the simulated workers reach an `https://` master.
#[derive(Clone, Debug)]
pub struct MtlsTarget {
    /// The name the master's certificate must carry: the host of the https:// address.
    server_name: String,
    /// What tonic dials, `http://host:port` (the connector does the TLS; with
    /// `--count-bytes` the counting proxy).
    dial: String,
    token: JoinToken,
}

impl MtlsTarget {
    /// `master`: the `https://host:port` address; `dial`: where to connect (the same, or a
    /// proxy in front of it).
    pub fn new(master: &str, dial: &str, token: JoinToken) -> anyhow::Result<Self> {
        let uri: Uri = master.parse().with_context(|| format!("bad --master {master:?}"))?;
        let host = uri.host().with_context(|| format!("--master {master:?} has no host"))?;
        let authority = |raw: &str| -> anyhow::Result<String> {
            let uri: Uri = raw.parse().with_context(|| format!("bad address {raw:?}"))?;
            let authority = uri.authority().with_context(|| format!("no host:port in {raw:?}"))?;
            Ok(format!("http://{authority}"))
        };
        Ok(Self { server_name: host.to_string(), dial: authority(dial)?, token })
    }

    fn endpoint(&self) -> anyhow::Result<Endpoint> {
        Ok(Endpoint::from_shared(self.dial.clone())
            .with_context(|| format!("bad address {}", self.dial))?
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(10)))
    }

    /// Joins as `worker_id` over a connection of its own (closed after): the TLS settings
    /// that prove this worker's certificate from then on.
    pub async fn join(&self, worker_id: &str) -> anyhow::Result<TlsConnector> {
        let pinned = cloudai_pki::pinned_client_config(&self.token.ca_fingerprint)?;
        let connector = TlsConnector::new(&self.server_name, pinned)?;
        let channel = self
            .endpoint()?
            .connect_with_connector(connector)
            .await
            .with_context(|| format!("cannot reach {} over TLS to join", self.dial))?;
        let csr = WorkerCsr::new(worker_id)?;
        let request = pb::JoinRequest {
            join_secret: self.token.secret.as_str().to_string(),
            worker_id: worker_id.to_string(),
            csr_pem: csr.csr_pem,
        };
        let joined = MasterServiceClient::new(channel)
            .join_cluster(request)
            .await
            .map_err(|status| anyhow::anyhow!("join refused: {:?}: {}", status.code(), status.message()))?
            .into_inner();
        // As a worker does: the CA handed over must be the one the token pins.
        if cloudai_pki::fingerprint_of_pem(&joined.ca_pem)? != self.token.ca_fingerprint {
            bail!("{}", cloudai_pki::WRONG_CA);
        }
        let config =
            cloudai_pki::client_config(&joined.ca_pem, Some((&joined.certificate_pem, &csr.key_pem)))?;
        Ok(TlsConnector::new(&self.server_name, config)?)
    }

    /// An mTLS connection of its own for one joined worker.
    pub async fn connect(&self, identity: TlsConnector) -> anyhow::Result<Channel> {
        self.endpoint()?
            .connect_with_connector(identity)
            .await
            .with_context(|| format!("cannot connect to {} over mTLS", self.dial))
    }
}

/// The join token from `--join-token-file`: a whole token, or a master's own
/// `<data dir>/pki/join.token` (the secret alone), whose CA fingerprint is then read from the
/// `ca.crt` beside it (a bench on the master's machine).
pub fn token_from_file(path: &Path) -> anyhow::Result<JoinToken> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --join-token-file {}", path.display()))?;
    if text.trim().starts_with("cloudai-join.") {
        return JoinToken::parse(&text).with_context(|| format!("--join-token-file {}", path.display()));
    }
    let secret = JoinSecret::parse(&text).with_context(|| {
        format!("--join-token-file {}: neither a join token nor a master's join secret", path.display())
    })?;
    let dir = PkiDir::new(path.parent().unwrap_or(Path::new(".")));
    let ca_path = dir.ca_cert_path();
    let ca = std::fs::read_to_string(&ca_path).with_context(|| {
        format!(
            "--join-token-file {} holds a secret alone: its CA certificate {} is needed beside it",
            path.display(),
            ca_path.display()
        )
    })?;
    let ca_fingerprint =
        cloudai_pki::fingerprint_of_pem(&ca).with_context(|| format!("{}", ca_path.display()))?;
    Ok(JoinToken { ca_fingerprint, secret })
}

/// The joins of one load-generator thread.
pub struct Joins {
    /// Index, id and TLS settings of each worker that joined.
    pub joined: Vec<(usize, String, TlsConnector)>,
    pub errors: usize,
    pub first_error: Option<String>,
    /// Microseconds per join, connection included.
    pub latencies: Histogram<u64>,
}

impl MtlsTarget {
    /// Joins every worker, `concurrency` at a time; a worker that cannot join is counted and
    /// left out.
    pub async fn join_all(&self, ids: Vec<(usize, String)>, concurrency: usize) -> anyhow::Result<Joins> {
        let answers: Vec<_> = futures::stream::iter(ids)
            .map(|(i, id)| async move {
                let t0 = Instant::now();
                let joined = self.join(&id).await;
                (i, id, joined, t0.elapsed())
            })
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        let mut joins = Joins {
            joined: Vec::with_capacity(answers.len()),
            errors: 0,
            first_error: None,
            latencies: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        };
        for (i, id, answer, took) in answers {
            match answer {
                Ok(identity) => {
                    let _ = joins.latencies.record((took.as_micros() as u64).max(1));
                    joins.joined.push((i, id, identity));
                }
                Err(e) => {
                    joins.errors += 1;
                    joins.first_error.get_or_insert_with(|| format!("{id}: {e:#}"));
                }
            }
        }
        Ok(joins)
    }

    /// An mTLS connection of its own for each joined worker; fails if any cannot connect.
    pub async fn connect_all(
        &self,
        joined: Vec<(usize, String, TlsConnector)>,
    ) -> anyhow::Result<Vec<(usize, String, Channel)>> {
        futures::stream::iter(joined)
            .map(|(i, id, identity)| async move {
                let channel = self.connect(identity).await.with_context(|| format!("worker {id}"))?;
                anyhow::Ok((i, id, channel))
            })
            .buffer_unordered(64)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_a_whole_token_or_a_masters_secret_beside_its_ca() {
        let dir = tempfile::tempdir().expect("tmp");
        let pki = PkiDir::new(dir.path());
        let (ca, _) = pki.open_or_create_ca("test").expect("ca");
        let secret = pki.join_secret().expect("secret");
        let whole = JoinToken { ca_fingerprint: ca.fingerprint(), secret: secret.clone() };

        let token_path = dir.path().join("whole.token");
        std::fs::write(&token_path, format!("{whole}\n")).expect("write");
        assert_eq!(token_from_file(&token_path).expect("whole"), whole);

        std::fs::write(dir.path().join("join.token"), secret.as_str()).expect("write");
        assert_eq!(token_from_file(&dir.path().join("join.token")).expect("secret + ca"), whole);

        std::fs::remove_file(pki.ca_cert_path()).expect("rm");
        let error = format!("{:#}", token_from_file(&dir.path().join("join.token")).expect_err("no ca"));
        assert!(error.contains("ca.crt"), "{error}");
        std::fs::write(&token_path, "not a token").expect("write");
        assert!(token_from_file(&token_path).is_err());
    }

    #[test]
    fn the_target_dials_plain_http_and_checks_the_masters_name() {
        let token = JoinToken { ca_fingerprint: "ab".repeat(32), secret: JoinSecret::generate() };
        let target =
            MtlsTarget::new("https://localhost:5000", "http://127.0.0.1:6000", token).expect("target");
        assert_eq!(target.server_name, "localhost");
        assert_eq!(target.dial, "http://127.0.0.1:6000");
    }
}
