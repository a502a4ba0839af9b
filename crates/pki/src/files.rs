//! The master's trust on disk, in `<data dir>/pki/`: `ca.crt`, `ca.key` (0600), `join.token`
//! (0600) and `revoked` (worker ids whose certificates are refused). Every file is replaced
//! whole (written aside, synced, renamed), so a crash leaves the old one or the new one.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{ClusterCa, JoinSecret, PkiError};

/// The master's PKI folder.
#[derive(Clone, Debug)]
pub struct PkiDir {
    dir: PathBuf,
}

fn file_error(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::File { path: path.to_path_buf(), source }
}

impl PkiDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn ca_cert_path(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    fn ca_key_path(&self) -> PathBuf {
        self.dir.join("ca.key")
    }

    fn join_path(&self) -> PathBuf {
        self.dir.join("join.token")
    }

    fn revoked_path(&self) -> PathBuf {
        self.dir.join("revoked")
    }

    /// The CA made by an earlier start, or a new one; `true` when it is new.
    pub fn open_or_create_ca(&self, cluster: &str) -> Result<(ClusterCa, bool), PkiError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(file_error(&self.dir))?;
        let (cert_path, key_path) = (self.ca_cert_path(), self.ca_key_path());
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert = std::fs::read_to_string(&cert_path).map_err(file_error(&cert_path))?;
                let key = read_private_text(&key_path)?;
                Ok((ClusterCa::load(&cert, &key)?, false))
            }
            (false, false) => {
                let (ca, key_pem) = ClusterCa::create(cluster)?;
                // The key first: a certificate without its key is never left behind.
                write_private(&key_path, key_pem.as_bytes())?;
                write_file(&cert_path, ca.cert_pem().as_bytes(), 0o644)?;
                Ok((ca, true))
            }
            _ => Err(PkiError::File {
                path: self.dir.clone(),
                source: std::io::Error::other(
                    "ca.crt and ca.key must both be there or both be absent (to make a new CA, remove both: every worker must then join again)",
                ),
            }),
        }
    }

    /// The join secret, made on first use.
    pub fn join_secret(&self) -> Result<JoinSecret, PkiError> {
        let path = self.join_path();
        if path.exists() {
            return JoinSecret::parse(&read_private_text(&path)?);
        }
        self.rotate_join_secret()
    }

    /// A new join secret; the old one admits no one from now on.
    pub fn rotate_join_secret(&self) -> Result<JoinSecret, PkiError> {
        let secret = JoinSecret::generate();
        write_private(&self.join_path(), secret.as_str().as_bytes())?;
        Ok(secret)
    }

    /// Revoked worker ids.
    pub fn revoked(&self) -> Result<BTreeSet<String>, PkiError> {
        let path = self.revoked_path();
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
            Err(e) => Err(file_error(&path)(e)),
        }
    }

    pub fn write_revoked(&self, revoked: &BTreeSet<String>) -> Result<(), PkiError> {
        let text: String = revoked.iter().map(|id| format!("{id}\n")).collect();
        write_file(&self.revoked_path(), text.as_bytes(), 0o644)
    }
}

/// Reads a secret file, refusing one others can read (as ssh does for its keys).
pub fn read_private_text(path: &Path) -> Result<String, PkiError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(file_error(path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(PkiError::File {
            path: path.to_path_buf(),
            source: std::io::Error::other(format!(
                "readable by others (mode {:o}); `chmod 600` it",
                meta.permissions().mode() & 0o777
            )),
        });
    }
    std::fs::read_to_string(path).map_err(file_error(path))
}

/// Writes `bytes` to `path` readable by its owner only, replacing it whole.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), PkiError> {
    write_file(path, bytes, 0o600)
}

fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), PkiError> {
    if let Some(parent) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(parent).map_err(file_error(parent))?;
    }
    let aside = path.with_extension(format!("tmp{}", std::process::id()));
    let written = (|| {
        let mut file =
            std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&aside)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&aside, path)?;
        // The rename itself is durable once the folder is.
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
    written.map_err(file_error(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_ca_is_made_once_with_its_key_private_and_kept() {
        let tmp = tempfile::tempdir().expect("tmp");
        let pki = PkiDir::new(tmp.path().join("pki"));
        let (ca, created) = pki.open_or_create_ca("test").expect("create");
        assert!(created);
        let mode = |p: PathBuf| std::fs::metadata(p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode(tmp.path().join("pki/ca.key")), 0o600);
        let (again, created) = pki.open_or_create_ca("test").expect("open");
        assert!(!created);
        assert_eq!(again.fingerprint(), ca.fingerprint());

        let secret = pki.join_secret().expect("secret");
        assert_eq!(mode(tmp.path().join("pki/join.token")), 0o600);
        assert_eq!(pki.join_secret().expect("same"), secret);
        assert_ne!(pki.rotate_join_secret().expect("rotated"), secret);

        // A key others can read is refused, naming the fix.
        std::fs::set_permissions(tmp.path().join("pki/ca.key"), std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let err = pki.open_or_create_ca("test").expect_err("world-readable key").to_string();
        assert!(err.contains("ca.key"), "{err}");
    }

    #[test]
    fn half_a_ca_is_refused() {
        let tmp = tempfile::tempdir().expect("tmp");
        let pki = PkiDir::new(tmp.path());
        pki.open_or_create_ca("test").expect("create");
        std::fs::remove_file(tmp.path().join("ca.crt")).expect("rm");
        assert!(pki.open_or_create_ca("test").is_err());
    }
}
