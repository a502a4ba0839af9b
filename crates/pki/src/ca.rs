//! The cluster CA: made once by the master, it signs the master's server certificate and
//! every worker's client certificate (from the worker's own key: only a CSR travels).

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType, ExtendedKeyUsagePurpose,
    IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;

use crate::PkiError;

/// The worker's certificates say what they are in the subject's organisation, so a
/// certificate the CA made for anything else never passes for a worker's.
const WORKER_ORG: &str = "cloudai worker";
/// Clocks of master and workers may differ by this much.
const CLOCK_SKEW: Duration = Duration::from_secs(300);
/// The CA outlives every certificate it signs.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A certificate (PEM) and when it stops being valid.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    /// The certificate, then the CA's (so a client pinning the CA finds it in the chain).
    pub chain_pem: String,
    pub not_after: SystemTime,
}

/// The cluster CA and its key.
pub struct ClusterCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa").field("fingerprint", &self.fingerprint()).finish_non_exhaustive()
    }
}

impl ClusterCa {
    /// A new CA (ECDSA P-256). Returns it and its key's PEM, to be kept 0600.
    pub fn create(cluster: &str) -> Result<(Self, String), PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(PkiError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, format!("{cluster} cluster CA"));
        params.distinguished_name.push(DnType::OrganizationName, "cloudai");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = (now + CA_LIFETIME).into();
        let cert = params.self_signed(&key).map_err(PkiError::Generate)?;
        let key_pem = key.serialize_pem();
        let ca =
            Self { cert_pem: cert.pem(), cert_der: cert.der().clone(), issuer: Issuer::new(params, key) };
        Ok((ca, key_pem))
    }

    /// The CA kept by an earlier start.
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, PkiError> {
        let bad = |what: &str| PkiError::BadPem { what: what.to_string() };
        let key = KeyPair::from_pem(key_pem).map_err(|_| bad("the CA key"))?;
        let cert_der = pem_certs(cert_pem, "the CA certificate")?
            .into_iter()
            .next()
            .ok_or_else(|| bad("the CA certificate"))?;
        let issuer = Issuer::from_ca_cert_der(&cert_der, key).map_err(|_| bad("the CA certificate"))?;
        Ok(Self { cert_pem: cert_pem.to_string(), cert_der, issuer })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// SHA-256 of the CA certificate (DER), hex: what a join token pins.
    pub fn fingerprint(&self) -> String {
        crate::sha256_hex(self.cert_der.as_ref())
    }

    /// A server certificate for the master's `names` (DNS names or IP addresses) and a
    /// fresh key; returns the chain and the key's PEM.
    pub fn issue_server(
        &self,
        names: &[String],
        lifetime: Duration,
    ) -> Result<(IssuedCert, String), PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(PkiError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, "cloudai master");
        params.subject_alt_names = names
            .iter()
            .map(|name| match name.parse::<std::net::IpAddr>() {
                Ok(ip) => Ok(SanType::IpAddress(ip)),
                Err(_) => name.clone().try_into().map(SanType::DnsName).map_err(PkiError::Generate),
            })
            .collect::<Result<_, _>>()?;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let not_after = self.validity(&mut params, lifetime);
        let cert = params.signed_by(&key, &self.issuer).map_err(PkiError::Generate)?;
        let chain_pem = format!("{}{}", cert.pem(), self.cert_pem);
        Ok((IssuedCert { chain_pem, not_after }, key.serialize_pem()))
    }

    /// Signs a worker's CSR for `worker_id`. Only the CSR's key is used: the names and
    /// usages are the CA's to decide.
    pub fn sign_worker(
        &self,
        worker_id: &str,
        csr_pem: &str,
        lifetime: Duration,
    ) -> Result<IssuedCert, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::BadCsr)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, worker_id);
        params.distinguished_name.push(DnType::OrganizationName, WORKER_ORG);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let not_after = self.validity(&mut params, lifetime);
        let cert = params.signed_by(&csr.public_key, &self.issuer).map_err(PkiError::Generate)?;
        Ok(IssuedCert { chain_pem: format!("{}{}", cert.pem(), self.cert_pem), not_after })
    }

    fn validity(&self, params: &mut CertificateParams, lifetime: Duration) -> SystemTime {
        let now = SystemTime::now();
        let not_after = now + lifetime;
        params.not_before = (now - CLOCK_SKEW).into();
        params.not_after = not_after.into();
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&rand::random::<[u8; 16]>()));
        params.use_authority_key_identifier_extension = true;
        not_after
    }
}

/// A worker's key and the request for its certificate; the key never leaves the worker.
pub struct WorkerCsr {
    pub csr_pem: String,
    pub key_pem: String,
}

impl WorkerCsr {
    pub fn new(worker_id: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(PkiError::Generate)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, worker_id);
        let csr = params.serialize_request(&key).map_err(PkiError::Generate)?;
        Ok(Self { csr_pem: csr.pem().map_err(PkiError::Generate)?, key_pem: key.serialize_pem() })
    }
}

/// The worker id a worker certificate of this cluster names. The TLS handshake has already
/// checked it chains to the CA; this only reads the subject.
pub fn worker_id_of(cert: &CertificateDer<'_>) -> Result<String, PkiError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| PkiError::NotAWorkerCert(format!("unreadable: {e}")))?;
    let subject = parsed.subject();
    let org = subject.iter_organization().next().and_then(|o| o.as_str().ok());
    if org != Some(WORKER_ORG) {
        return Err(PkiError::NotAWorkerCert(format!("organisation {org:?}")));
    }
    let cn = subject
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .ok_or_else(|| PkiError::NotAWorkerCert("no common name".into()))?;
    Ok(cn.to_string())
}

/// When the first certificate of `chain_pem` expires, and when to renew it: two thirds
/// into its life (counted from its issue, not from its back-dated start).
pub fn validity_of(chain_pem: &str) -> Result<(SystemTime, SystemTime), PkiError> {
    let cert = pem_certs(chain_pem, "the certificate")?.into_iter().next();
    let cert = cert.ok_or_else(|| PkiError::BadPem { what: "the certificate".into() })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|_| PkiError::BadPem { what: "the certificate".into() })?;
    let at = |secs: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    let issued = at(parsed.validity().not_before.timestamp()) + CLOCK_SKEW;
    let not_after = at(parsed.validity().not_after.timestamp());
    let life = not_after.duration_since(issued).unwrap_or_default();
    Ok((not_after, issued + life * 2 / 3))
}

/// Every certificate in a PEM text, in order.
pub(crate) fn pem_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(certs) if !certs.is_empty() => Ok(certs),
        _ => Err(PkiError::BadPem { what: what.to_string() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_certificate_names_its_worker_and_only_its_key_is_taken_from_the_csr() {
        let (ca, key_pem) = ClusterCa::create("test").expect("ca");
        let csr = WorkerCsr::new("asked-for-another-name").expect("csr");
        let issued = ca.sign_worker("w1", &csr.csr_pem, Duration::from_secs(60)).expect("signed");
        let certs = pem_certs(&issued.chain_pem, "chain").expect("pem");
        assert_eq!(certs.len(), 2, "leaf then CA");
        assert_eq!(worker_id_of(&certs[0]).expect("worker"), "w1");
        assert_eq!(&certs[1], ca.cert_der());
        // The master's server certificate is no worker's.
        let (server, _) = ca
            .issue_server(&["localhost".into(), "127.0.0.1".into()], Duration::from_secs(60))
            .expect("server");
        let server = pem_certs(&server.chain_pem, "server").expect("pem");
        assert!(worker_id_of(&server[0]).is_err());
        // Reloaded from its files, the CA is the same.
        let again = ClusterCa::load(ca.cert_pem(), &key_pem).expect("load");
        assert_eq!(again.fingerprint(), ca.fingerprint());
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let (ca, _) = ClusterCa::create("test").expect("ca");
        assert!(matches!(
            ca.sign_worker("w1", "not a csr", Duration::from_secs(1)),
            Err(PkiError::BadCsr(_))
        ));
        assert!(matches!(ClusterCa::load("x", "y"), Err(PkiError::BadPem { .. })));
    }
}
