//! The docker CLI, as the chaos suite drives it: every container and network a run creates
//! carries the label `cloudai-chaos.pid=<pid of the test>`, so a run removes what it made, and
//! what runs that died left behind, and nothing of anyone else's.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};

/// The label on everything a run creates; its value is the test process's pid.
pub const LABEL: &str = "cloudai-chaos.pid";
/// Images are tagged `IMAGE_REPO:<pid>`.
pub const IMAGE_REPO: &str = "cloudai-chaos";

/// Runs `docker ARGS` and returns its stdout, or fails with its stderr.
pub async fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("docker").args(args).stdin(Stdio::null()).kill_on_drop(true).output(),
    )
    .await
    .with_context(|| format!("docker {} timed out", args.join(" ")))?
    .with_context(|| format!("cannot run docker {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("docker {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether the engine answers. With `CLOUDAI_REQUIRE_DOCKER=1` its absence (or that of the
/// tools the image build needs) fails the test instead of skipping it.
pub fn available() -> bool {
    let engine = std::process::Command::new("docker").arg("info").output().is_ok_and(|o| o.status.success());
    let missing = if !engine {
        Some("Docker engine not reachable")
    } else if !Path::new("/bin/busybox").is_file() {
        Some("no /bin/busybox (apt-get install busybox-static)")
    } else if std::process::Command::new("objcopy").arg("--version").output().is_err() {
        Some("no objcopy (binutils)")
    } else {
        None
    };
    match missing {
        None => true,
        Some(why) if std::env::var("CLOUDAI_REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("CLOUDAI_REQUIRE_DOCKER=1 but the chaos suite cannot run: {why}")
        }
        Some(why) => {
            eprintln!("skipping: {why}");
            false
        }
    }
}

/// Builds the image from the test's own `cloudai` with `deploy/build-image.sh`.
pub async fn build_image(binary: &Path) -> anyhow::Result<String> {
    let tag = format!("{IMAGE_REPO}:{}", std::process::id());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/build-image.sh");
    let out = tokio::process::Command::new("sh")
        .arg(&script)
        .arg(binary)
        .arg(&tag)
        .env("CLOUDAI_DEBUG_OUT", "none")
        .output()
        .await
        .context("run deploy/build-image.sh")?;
    if !out.status.success() {
        bail!("deploy/build-image.sh failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(tag)
}

/// Removes the containers, networks and image of this run (`Some(pid)`), or of every earlier
/// run whose test process is gone (`None`, which also removes their host folders in the
/// temporary folder). Synchronous, so it also runs from `Drop`.
pub fn remove_runs(only: Option<u32>) {
    let dead_or_ours = |pid: &str| match (only, pid.parse::<u32>()) {
        (Some(ours), Ok(pid)) => pid == ours,
        (None, Ok(pid)) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        (_, Err(_)) => false,
    };
    let list = |args: &[&str]| -> Vec<(String, String)> {
        let out = std::process::Command::new("docker").args(args).output();
        let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(name, pid)| (name.to_owned(), pid.trim().to_owned()))
            .collect()
    };
    let filter = format!("label={LABEL}");
    let containers: Vec<String> =
        list(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}} {{.Label \"cloudai-chaos.pid\"}}"])
            .into_iter()
            .filter(|(_, pid)| dead_or_ours(pid))
            .map(|(name, _)| name)
            .collect();
    if !containers.is_empty() {
        let mut cmd = std::process::Command::new("docker");
        cmd.args(["rm", "-f", "-v"]).args(&containers).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = cmd.status();
    }
    let networks: Vec<String> = list(&[
        "network",
        "ls",
        "--filter",
        &filter,
        "--format",
        "{{.Name}} {{.Label \"cloudai-chaos.pid\"}}",
    ])
    .into_iter()
    .filter(|(_, pid)| dead_or_ours(pid))
    .map(|(name, _)| name)
    .collect();
    if !networks.is_empty() {
        let mut cmd = std::process::Command::new("docker");
        cmd.args(["network", "rm"]).args(&networks).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = cmd.status();
    }
    // The host folders (master data, shared ledger) of runs that died before their cleanup.
    if only.is_none() {
        let entries = std::fs::read_dir(std::env::temp_dir()).into_iter().flatten().flatten();
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let pid = name.strip_prefix("cloudai-chaos-").and_then(|rest| rest.split('-').next());
            if pid.is_some_and(dead_or_ours) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let images: Vec<String> = list(&["images", IMAGE_REPO, "--format", "{{.Repository}}:{{.Tag}} {{.Tag}}"])
        .into_iter()
        .filter(|(_, pid)| dead_or_ours(pid))
        .map(|(name, _)| name)
        .collect();
    if !images.is_empty() {
        let mut cmd = std::process::Command::new("docker");
        cmd.args(["rmi", "-f"]).args(&images).stdout(Stdio::null()).stderr(Stdio::null());
        let _ = cmd.status();
    }
}

/// Removes this run's containers, networks and image when dropped (also on a panic).
pub struct RunGuard;

impl Drop for RunGuard {
    fn drop(&mut self) {
        remove_runs(Some(std::process::id()));
    }
}
