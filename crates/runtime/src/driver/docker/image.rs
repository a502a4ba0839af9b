//! Images: used when present, pulled otherwise, with the worker's registry
//! credentials from its Docker client config (`auths.<registry>.auth`).

use std::path::PathBuf;

use bollard::Docker;
use bollard::auth::DockerCredentials;
use bollard::errors::Error as DockerError;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::StreamExt;
use tracing::{debug, info, warn};

use crate::driver::DriverError;

/// Docker Hub's key in a client config.
const DOCKER_HUB: &str = "https://index.docker.io/v1/";

/// Makes sure `image` is present locally, pulling it if needed.
pub(super) async fn ensure(
    docker: &Docker,
    image: &str,
    config: Option<&PathBuf>,
) -> Result<(), DriverError> {
    ensure_with_progress(docker, image, config, &mut |_| {}).await
}

/// Like [`ensure`], telling `progress` about the pull: its start, each layer's steps
/// (not every byte-count tick) and its end.
pub(super) async fn ensure_with_progress(
    docker: &Docker,
    image: &str,
    config: Option<&PathBuf>,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), DriverError> {
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(DockerError::DockerResponseServerError { status_code: 404, .. }) => {}
        Err(source) => {
            return Err(DriverError::Docker { action: format!("inspect image {image:?}"), source });
        }
    }
    let (from_image, tag) = split_reference(image);
    let mut options = CreateImageOptionsBuilder::default().from_image(from_image);
    if let Some(tag) = tag {
        options = options.tag(tag);
    }
    let credentials = credentials(registry_host(image), config).await;
    info!(image, authenticated = credentials.is_some(), "pulling image");
    progress(format!("pulling image {image}"));
    let started = std::time::Instant::now();
    let mut stream = docker.create_image(Some(options.build()), None, credentials);
    let mut last: Option<String> = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(info) => {
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    return Err(DriverError::Pull { image: image.to_owned(), message });
                }
                // Byte-count ticks ("Downloading", "Extracting") would flood the log.
                let line = match (info.id, info.status) {
                    (_, Some(s)) if s == "Downloading" || s == "Extracting" => None,
                    (Some(id), Some(s)) => Some(format!("{id}: {s}")),
                    (None, Some(s)) => Some(s),
                    _ => None,
                };
                if let Some(line) = line
                    && last.as_deref() != Some(line.as_str())
                {
                    progress(line.clone());
                    last = Some(line);
                }
            }
            Err(e) => return Err(DriverError::Pull { image: image.to_owned(), message: engine_message(e) }),
        }
    }
    info!(image, "image pulled");
    progress(format!("pulled image {image} in {:.1} s", started.elapsed().as_secs_f64()));
    Ok(())
}

/// The engine's (or registry's) own words, without bollard's framing.
pub(super) fn engine_message(error: DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message,
        DockerError::DockerStreamError { error } => error,
        other => other.to_string(),
    }
}

/// (`fromImage`, `tag`): the tag defaults to `latest` (else the engine pulls every tag);
/// a digest reference is passed whole.
fn split_reference(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (&image[..name_start + i], Some(&image[name_start + i + 1..])),
        None => (image, Some("latest")),
    }
}

/// The registry an image comes from: its first path component when that looks like a
/// host (has a dot or a port, or is localhost), else Docker Hub.
fn registry_host(image: &str) -> &str {
    match image.split_once('/') {
        Some((first, _)) if first.contains('.') || first.contains(':') || first == "localhost" => first,
        _ => DOCKER_HUB,
    }
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub(super) fn default_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// Credentials for `registry` from a base64 `auth` entry of the client config, if any.
async fn credentials(registry: &str, config: Option<&PathBuf>) -> Option<DockerCredentials> {
    let path = config?;
    let text = match tokio::fs::read(path).await {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot read the docker client config; pulling without credentials");
            return None;
        }
    };
    let json: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(json) => json,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "invalid docker client config; pulling without credentials");
            return None;
        }
    };
    let wanted = normalize(registry);
    let auths = json.get("auths")?.as_object()?;
    let (key, entry) = auths.iter().find(|(key, _)| normalize(key) == wanted)?;
    let decoded = base64_decode(entry.get("auth")?.as_str()?)?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    debug!(registry = %key, "using registry credentials from the docker client config");
    Some(DockerCredentials {
        username: Some(username.to_owned()),
        password: Some(password.to_owned()),
        serveraddress: Some(key.clone()),
        ..Default::default()
    })
}

/// `https://host/v1/` and `host` name the same registry; Docker Hub has several names.
fn normalize(registry: &str) -> String {
    let host = registry.trim_start_matches("https://").trim_start_matches("http://");
    let host = host.split('/').next().unwrap_or(host).to_ascii_lowercase();
    match host.as_str() {
        "docker.io" | "index.docker.io" | "registry-1.docker.io" => "docker.io".to_owned(),
        _ => host,
    }
}

/// Standard base64 (padding optional); `None` if malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(split_reference("busybox"), ("busybox", Some("latest")));
        assert_eq!(split_reference("127.0.0.1:5000/a/b:1"), ("127.0.0.1:5000/a/b", Some("1")));
        assert_eq!(split_reference("127.0.0.1:5000/a/b"), ("127.0.0.1:5000/a/b", Some("latest")));
        assert_eq!(split_reference("a@sha256:00"), ("a@sha256:00", None));
        assert_eq!(registry_host("127.0.0.1:5000/a/b:1"), "127.0.0.1:5000");
        assert_eq!(registry_host("library/busybox"), DOCKER_HUB);
        assert_eq!(normalize(DOCKER_HUB), "docker.io");
    }

    #[tokio::test]
    async fn credentials_from_config() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.json");
        // "user:pa:ss"
        let config = r#"{"auths":{"https://reg.example:5000":{"auth":"dXNlcjpwYTpzcw=="}}}"#;
        std::fs::write(&path, config).expect("write config");
        let found = credentials("reg.example:5000", Some(&path)).await.expect("credentials");
        assert_eq!(found.username.as_deref(), Some("user"));
        assert_eq!(found.password.as_deref(), Some("pa:ss"));
        assert!(credentials("other.example", Some(&path)).await.is_none());
        assert_eq!(base64_decode("YQ"), Some(b"a".to_vec()));
    }
}
