//! The client profile, like a kubeconfig: where the master is, the CA to trust and the token
//! to send. A secure master writes it (0600) to `$XDG_CONFIG_HOME/cloudai/config`, else
//! `~/.config/cloudai/config`; client commands read it when none of `CLOUDAI_ADDR`,
//! `CLOUDAI_TOKEN` and `CLOUDAI_CA_CERT` is set. It is `KEY=VALUE` lines, as `.env` files are.

use std::path::PathBuf;

/// What a client needs to reach a master.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Profile {
    pub addr: String,
    pub ca_cert: Option<PathBuf>,
    pub token: Option<String>,
}

/// Where the profile lives, if there is a home to put it in.
pub fn path() -> Option<PathBuf> {
    let base =
        std::env::var_os("XDG_CONFIG_HOME").filter(|v| !v.is_empty()).map(PathBuf::from).or_else(|| {
            std::env::var_os("HOME").filter(|v| !v.is_empty()).map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("cloudai").join("config"))
}

impl Profile {
    /// The profile at `path()`, if there is one; a broken one is an error naming the file.
    pub fn read() -> anyhow::Result<Option<Self>> {
        let Some(path) = path() else { return Ok(None) };
        if !path.exists() {
            return Ok(None);
        }
        let text = cloudai_pki::read_private_text(&path)?;
        let mut profile = Profile::default();
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("{}: expected KEY=VALUE, got {line:?}", path.display()))?;
            match key.trim() {
                "CLOUDAI_ADDR" => profile.addr = value.trim().to_string(),
                "CLOUDAI_CA_CERT" => profile.ca_cert = Some(PathBuf::from(value.trim())),
                "CLOUDAI_TOKEN" => profile.token = Some(value.trim().to_string()),
                other => anyhow::bail!("{}: unknown setting {other:?}", path.display()),
            }
        }
        if profile.addr.is_empty() {
            anyhow::bail!("{}: no CLOUDAI_ADDR", path.display());
        }
        Ok(Some(profile))
    }

    /// Writes it to `path()`, readable by its owner only. Returns where.
    pub fn write(&self) -> anyhow::Result<PathBuf> {
        let path = path().ok_or_else(|| anyhow::anyhow!("neither XDG_CONFIG_HOME nor HOME is set"))?;
        let mut text = format!(
            "# Written by `cloudai master`: the address, CA and admin token of this cluster.\nCLOUDAI_ADDR={}\n",
            self.addr
        );
        if let Some(ca) = &self.ca_cert {
            text.push_str(&format!("CLOUDAI_CA_CERT={}\n", ca.display()));
        }
        if let Some(token) = &self.token {
            text.push_str(&format!("CLOUDAI_TOKEN={token}\n"));
        }
        cloudai_pki::write_private(&path, text.as_bytes())?;
        Ok(path)
    }
}
