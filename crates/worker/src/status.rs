//! The worker's status file, `<data dir>/status.json`: what `cloudai worker --check` reads to
//! tell a health check (compose, systemd, a person) whether the worker running on this data
//! folder is in contact with its master. Written atomically; a stale file says the process
//! stopped writing it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloudai_domain::time::unix_ms;
use serde::{Deserialize, Serialize};

/// What the file holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    /// The latest heartbeat (or registration) the master acknowledged.
    pub in_contact: bool,
    /// Unix milliseconds when this was written.
    pub written_ms: i64,
    pub heartbeat_interval_ms: u64,
}

/// The file a worker keeps up to date.
#[derive(Clone, Debug)]
pub struct StatusFile {
    path: PathBuf,
    interval: Duration,
}

/// Where the status of the worker on `data_dir` is.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("status.json")
}

impl StatusFile {
    pub fn new(data_dir: &Path, interval: Duration) -> Self {
        Self { path: path(data_dir), interval }
    }

    /// Records whether the master is in contact now; a failure to write is logged only (the
    /// health check then reports the file as stale, which is the truth).
    pub fn write(&self, in_contact: bool) {
        let status = Status {
            pid: std::process::id(),
            in_contact,
            written_ms: unix_ms(),
            heartbeat_interval_ms: self.interval.as_millis() as u64,
        };
        let tmp = self.path.with_extension("json.tmp");
        let written = serde_json::to_vec(&status)
            .map_err(std::io::Error::other)
            .and_then(|body| std::fs::write(&tmp, body))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            tracing::debug!(path = %self.path.display(), error = %e, "cannot write the status file");
        }
    }

    /// The worker stopped: nothing to check any more.
    pub fn remove(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Whether the worker on `data_dir` is healthy now: `Err` says why not.
pub fn check(data_dir: &Path) -> Result<Status, String> {
    let path = path(data_dir);
    let body = std::fs::read(&path).map_err(|e| {
        format!("no worker status at {} ({e}): is a worker running on this data folder?", path.display())
    })?;
    let status: Status = serde_json::from_slice(&body)
        .map_err(|e| format!("unreadable worker status at {}: {e}", path.display()))?;
    // Heartbeats rewrite it every interval; three missed ones mean the worker is stuck or gone.
    let age_ms = unix_ms().saturating_sub(status.written_ms);
    let stale_ms = 3 * status.heartbeat_interval_ms.max(1000) as i64 + 2000;
    if age_ms > stale_ms {
        return Err(format!(
            "the worker's status is {}s old: the worker is stuck or not running",
            age_ms / 1000
        ));
    }
    if !status.in_contact {
        return Err("the worker is running but its heartbeats do not reach the master".to_owned());
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_status_in_contact_is_healthy_and_anything_else_says_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(check(dir.path()).expect_err("no file").contains("is a worker running"));
        let file = StatusFile::new(dir.path(), Duration::from_secs(5));
        file.write(false);
        assert!(check(dir.path()).expect_err("out of contact").contains("do not reach the master"));
        file.write(true);
        assert_eq!(check(dir.path()).expect("healthy").pid, std::process::id());
        file.remove();
        assert!(check(dir.path()).is_err());
    }
}
