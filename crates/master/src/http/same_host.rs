//! DNS-rebinding protection for an API served on a loopback address: only requests naming
//! this machine (`localhost` or a loopback IP) in `Host`, and coming from no web page or
//! from the master's own origin, are served. Otherwise a page on any site could point its own
//! domain at 127.0.0.1 and drive the master through the visitor's browser.

use axum::extract::Request;
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cloudai_api::ErrorCode;

use super::ApiError;

/// `host` (a `Host` value or an origin's authority, with or without a port) names this
/// machine: `localhost` or a loopback IP. Returns the port when one is given.
fn loopback_authority(authority: &str) -> Option<Option<u16>> {
    let (host, port) = match authority.strip_prefix('[') {
        // [::1]:8080
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (host, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok()?),
        None => None,
    };
    let local = host.eq_ignore_ascii_case("localhost")
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    local.then_some(port)
}

/// Why a request to the loopback listener on `port` is refused, if it is.
pub(super) fn refusal(host: Option<&str>, origin: Option<&str>, port: u16) -> Option<String> {
    if let Some(host) = host
        && loopback_authority(host).is_none()
    {
        return Some(format!(
            "Host {host:?} is not this machine: a master on a loopback address answers only \
             localhost or 127.0.0.1 (protection against DNS rebinding)"
        ));
    }
    let origin = origin?;
    let own =
        origin.strip_prefix("http://").and_then(loopback_authority).is_some_and(|p| p.unwrap_or(80) == port);
    (!own).then(|| {
        format!("Origin {origin:?} is not this master's: a web page cannot use the API of a master on a loopback address")
    })
}

/// The middleware: `port` is the one the API listens on.
pub(super) async fn check(port: u16, request: Request, next: Next) -> Response {
    let headers = request.headers();
    let text = |name| headers.get(name).map(|v| v.to_str().unwrap_or("(not text)"));
    match refusal(text(header::HOST), text(header::ORIGIN), port) {
        Some(why) => ApiError::new(ErrorCode::PermissionDenied, why).into_response(),
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::refusal;

    #[test]
    fn only_this_machine_and_its_own_origin_are_served() {
        for host in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.0.0.2"] {
            assert_eq!(refusal(Some(host), None, 8080), None, "{host}");
        }
        for host in ["evil.example", "evil.example:8080", "10.0.0.1:8080", "localhost.evil.example", "[::1"] {
            assert!(refusal(Some(host), None, 8080).is_some_and(|m| m.contains("DNS rebinding")), "{host}");
        }
        assert_eq!(refusal(Some("localhost:8080"), Some("http://localhost:8080"), 8080), None);
        assert_eq!(refusal(Some("127.0.0.1:80"), Some("http://127.0.0.1"), 80), None);
        for origin in ["http://evil.example", "http://localhost:3000", "https://localhost:8080", "null"] {
            assert!(refusal(Some("localhost:8080"), Some(origin), 8080).is_some(), "{origin}");
        }
    }
}
