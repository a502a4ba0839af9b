//! The first admin token: created on a master's first start with authentication, its
//! plaintext written to `<data dir>/admin.token` (mode 0600) for the operator to use.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use cloudai_api::Role;

use super::{AuthError, TokenService};

/// The file, in the master's data folder, holding the bootstrap admin token.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The name of the token the master creates for itself.
const BOOTSTRAP_NAME: &str = "bootstrap";

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("cannot write the admin token to {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot create the bootstrap admin token")]
    Create(#[source] AuthError),
}

/// Makes sure an admin can get in: the token in `admin.token` is kept while it is valid;
/// without any valid admin token, a new `bootstrap` one is created and written there. When
/// the file is gone (or revoked) but other admin tokens exist, nothing is created: the
/// operator removed it on purpose.
pub async fn ensure_admin(tokens: &TokenService, data_dir: &Path) -> Result<(), BootstrapError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    let io = |source| BootstrapError::Write { path: path.clone(), source };
    match std::fs::read_to_string(&path) {
        Ok(text) if tokens.verify(text.trim()).is_ok() => {
            tracing::info!(path = %path.display(), "admin token in place");
            return Ok(());
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    if tokens.has_admin() {
        tracing::info!(path = %path.display(), "no valid token in the admin token file; the stored admin tokens stay the only ones");
        return Ok(());
    }
    let created = tokens.create(BOOTSTRAP_NAME, Role::Admin).await.map_err(BootstrapError::Create)?;
    write_private(&path, &created.token).map_err(io)?;
    tracing::info!(path = %path.display(), token_id = created.info.id, "bootstrap admin token created");
    Ok(())
}

/// Writes `text` to `path` readable by this user only: created 0600 under another name,
/// synced, then renamed over `path`, so the secret is never readable by others, not even
/// for a moment, and a crash leaves the old file or the new one.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("token.tmp");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}
