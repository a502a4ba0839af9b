//! What users type for addresses and durations, parsed with messages that say what is wrong.

use std::time::Duration;

/// Parses `500ms`, `5s`, `1m`, `1h30m`.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(raw.trim()).map_err(|e| {
        format!("invalid duration {raw:?} ({e}); use a number with a unit, e.g. 500ms, 5s, 1m")
    })?;
    if d.is_zero() {
        return Err(format!("invalid duration {raw:?}: must be greater than zero"));
    }
    Ok(d)
}

/// `http://HOST:PORT` for gRPC / HTTP clients; a bare `HOST:PORT` gets `http://`.
pub fn parse_url(raw: &str) -> Result<String, String> {
    let raw = raw.trim().trim_end_matches('/');
    let url = if raw.contains("://") { raw.to_string() } else { format!("http://{raw}") };
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("invalid address {raw:?}: only http:// and https:// are supported"))?;
    if rest.is_empty() || rest.starts_with(':') && rest.len() == 1 {
        return Err(format!("invalid address {raw:?}: missing host"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("127.0.0.1:50051").as_deref(), Ok("http://127.0.0.1:50051"));
        assert!(parse_url("ftp://x").is_err());
    }
}
