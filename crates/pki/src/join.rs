//! The join token: `cloudai-join.<CA fingerprint>.<secret>`. The fingerprint lets a new
//! worker check the master it reaches is this cluster's before it sends anything (no trust
//! on first use); the secret (256 bits) lets the master admit the worker.

use crate::PkiError;

const PREFIX: &str = "cloudai-join";
/// Bytes of secret in a new token.
const SECRET_BYTES: usize = 32;
/// Fewer than 128 bits of secret is not a token this cluster made.
const MIN_SECRET_HEX: usize = 32;

/// The secret part alone: what the master keeps and compares.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinSecret(String);

impl std::fmt::Debug for JoinSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinSecret(..)")
    }
}

impl JoinSecret {
    pub fn generate() -> Self {
        Self(crate::random_hex(SECRET_BYTES))
    }

    pub fn parse(raw: &str) -> Result<Self, PkiError> {
        let raw = raw.trim();
        if raw.len() < MIN_SECRET_HEX || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PkiError::BadJoinToken("the secret is not 32 or more hex digits".into()));
        }
        Ok(Self(raw.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Compares without an early exit, so the time taken says nothing of where they differ.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// A whole join token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    /// SHA-256 of the CA certificate, hex.
    pub ca_fingerprint: String,
    pub secret: JoinSecret,
}

impl JoinToken {
    pub fn parse(raw: &str) -> Result<Self, PkiError> {
        let mut parts = raw.trim().split('.');
        let (Some(PREFIX), Some(fingerprint), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(PkiError::BadJoinToken(format!("expected {PREFIX}.<CA fingerprint>.<secret>")));
        };
        if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PkiError::BadJoinToken("the CA fingerprint is not 64 hex digits".into()));
        }
        Ok(Self { ca_fingerprint: fingerprint.to_ascii_lowercase(), secret: JoinSecret::parse(secret)? })
    }
}

impl std::fmt::Display for JoinToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{PREFIX}.{}.{}", self.ca_fingerprint, self.secret.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_reads_back_and_bad_ones_say_why() {
        let token = JoinToken { ca_fingerprint: "ab".repeat(32), secret: JoinSecret::generate() };
        assert_eq!(JoinToken::parse(&token.to_string()).expect("parse"), token);
        assert!(token.secret.matches(token.secret.as_str()));
        assert!(!token.secret.matches(&"0".repeat(64)));
        for bad in ["", "cloudai-join", "x.y.z", &format!("cloudai-join.{}.short", "ab".repeat(32))] {
            assert!(matches!(JoinToken::parse(bad), Err(PkiError::BadJoinToken(_))), "{bad}");
        }
    }
}
