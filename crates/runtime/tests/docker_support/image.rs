//! A tiny test image without a registry: Debian's `busybox-static` binary and its
//! applet links in an in-memory rootfs tar, imported into the engine (`docker import`).
//! Shared by the docker tests and the `docker_bench` example.

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;

/// The image the tests run.
pub const TEST_IMAGE: &str = "cloudai-test/busybox:latest";
/// Where Debian's `busybox-static` installs its binary.
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "echo", "sleep", "cat", "head", "tail", "dd", "tr", "wc", "true", "false", "env", "printf", "seq",
    "yes", "ls", "kill", "grep", "id", "mkdir", "rm",
];

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Imports [`TEST_IMAGE`] unless the engine already has it.
pub async fn ensure_test_image(docker: &Docker) -> Result<(), BoxError> {
    if docker.inspect_image(TEST_IMAGE).await.is_ok() {
        return Ok(());
    }
    let busybox = std::fs::read(BUSYBOX)
        .map_err(|e| format!("cannot read {BUSYBOX} (install Debian's busybox-static): {e}"))?;
    let (repo, tag) = TEST_IMAGE.split_once(':').ok_or("image without a tag")?;
    let options = CreateImageOptionsBuilder::default()
        .from_src("-")
        .repo(repo)
        .tag(tag)
        .changes(vec![r#"CMD ["/bin/sh"]"#.to_owned()])
        .build();
    let tar = rootfs_tar(&busybox);
    let mut progress = docker.create_image(Some(options), Some(bollard::body_full(tar.into())), None);
    while let Some(item) = progress.next().await {
        let info = item?;
        if let Some(message) = info.error_detail.and_then(|d| d.message) {
            return Err(format!("cannot import {TEST_IMAGE}: {message}").into());
        }
    }
    docker.inspect_image(TEST_IMAGE).await?;
    Ok(())
}

/// `/bin/busybox`, a link per applet, and the folders programs expect.
fn rootfs_tar(busybox: &[u8]) -> Vec<u8> {
    let mut tar = Vec::with_capacity(busybox.len() + 64 * 1024);
    for dir in ["bin/", "tmp/", "etc/", "proc/", "sys/", "dev/"] {
        let mode = if dir == "tmp/" { 0o1777 } else { 0o755 };
        append(&mut tar, dir, mode, b'5', "", &[]);
    }
    append(&mut tar, "bin/busybox", 0o755, b'0', "", busybox);
    for applet in APPLETS {
        append(&mut tar, &format!("bin/{applet}"), 0o777, b'2', "/bin/busybox", &[]);
    }
    tar.extend_from_slice(&[0u8; 1024]); // end of archive
    tar
}

/// One ustar entry: header, then the data padded to 512 bytes.
fn append(tar: &mut Vec<u8>, name: &str, mode: u32, kind: u8, link: &str, data: &[u8]) {
    let mut header = [0u8; 512];
    header[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut header[100..108], u64::from(mode));
    octal(&mut header[108..116], 0); // uid
    octal(&mut header[116..124], 0); // gid
    octal(&mut header[124..136], data.len() as u64);
    octal(&mut header[136..148], 1_700_000_000); // mtime
    header[156] = kind;
    header[157..157 + link.len()].copy_from_slice(link.as_bytes());
    header[257..263].copy_from_slice(b"ustar\0");
    header[263..265].copy_from_slice(b"00");
    header[148..156].copy_from_slice(b"        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    let checksum = format!("{sum:06o}\0 ");
    header[148..156].copy_from_slice(checksum.as_bytes());
    tar.extend_from_slice(&header);
    tar.extend_from_slice(data);
    tar.resize(tar.len().next_multiple_of(512), 0);
}

/// Zero-padded octal, NUL-terminated, filling the field.
fn octal(field: &mut [u8], value: u64) {
    let text = format!("{value:0width$o}\0", width = field.len() - 1);
    field.copy_from_slice(text.as_bytes());
}
