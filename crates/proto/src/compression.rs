//! gRPC message compression between workers and the master.
//!
//! The master accepts zstd and gzip and lists them in its registration answer; a worker
//! compresses what it sends with its preferred encoding only when the master listed it, so
//! a worker and a master of different versions still talk (uncompressed).

use tonic::codec::CompressionEncoding;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// What the master accepts, best first.
pub const ACCEPTED_COMPRESSION: &[Compression] = &[Compression::Zstd, Compression::Gzip];

impl Compression {
    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "none" | "off" | "identity" => Ok(Compression::None),
            "gzip" => Ok(Compression::Gzip),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(format!("invalid compression {raw:?}: expected zstd, gzip or none")),
        }
    }

    pub fn encoding(self) -> Option<CompressionEncoding> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some(CompressionEncoding::Gzip),
            Compression::Zstd => Some(CompressionEncoding::Zstd),
        }
    }

    /// The encoding to send with: this one if the master accepts it, else none.
    pub fn negotiate(self, accepted: &[String]) -> Option<CompressionEncoding> {
        self.encoding().filter(|_| accepted.iter().any(|a| a.eq_ignore_ascii_case(self.as_str())))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_compresses_only_with_what_the_master_accepts() {
        let accepted = vec!["zstd".to_string(), "gzip".to_string()];
        assert_eq!(Compression::Zstd.negotiate(&accepted), Some(CompressionEncoding::Zstd));
        assert_eq!(Compression::Gzip.negotiate(&["zstd".into()]), None);
        assert_eq!(Compression::Zstd.negotiate(&[]), None, "an older master lists nothing");
        assert_eq!(Compression::None.negotiate(&accepted), None);
        assert!(Compression::parse("lz4").unwrap_err().contains("lz4"));
    }
}
