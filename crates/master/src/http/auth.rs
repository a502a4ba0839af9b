//! Authentication of every request: `Authorization: Bearer <token>` becomes the request's
//! [`Principal`], or the request is refused: 401 without a valid token, 403 without the
//! role the endpoint needs, 429 for an address that failed too many times. Without
//! authentication (`--insecure`, loopback only) every request is [`Principal::local`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use cloudai_api::{ErrorCode, Role};

use super::{ApiError, ApiState};
use crate::auth::{AuditEvent, Principal};

/// The address of the client of a connection, put on each of its requests by `serve`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PeerAddr(pub SocketAddr);

/// The role a request needs; `None` for what is open to anyone.
fn needed_role(method: &Method, path: &str, metrics_public: bool) -> Option<Role> {
    match path {
        "/health" | "/openapi.json" => return None,
        "/metrics" => return (!metrics_public).then_some(Role::Reader),
        _ => {}
    }
    if path.starts_with("/api/tokens") || path.starts_with("/api/audit") || path.starts_with("/api/cluster") {
        return Some(Role::Admin);
    }
    if method == Method::GET || method == Method::HEAD {
        return Some(Role::Reader);
    }
    // A submitter cancels only its own tasks: the handler checks whose it is.
    if (method == Method::POST && path == "/api/tasks")
        || (method == Method::DELETE && path.starts_with("/api/tasks/"))
    {
        return Some(Role::Submitter);
    }
    // Any other change is an admin's (workers, join tokens).
    Some(Role::Admin)
}

/// The token of an `Authorization: Bearer` header.
fn bearer(headers: &HeaderMap) -> Result<&str, &'static str> {
    let value = headers.get(header::AUTHORIZATION).ok_or(
        "no token: send Authorization: Bearer <token> (see `cloudai token create`, or admin.token in the master's data folder)",
    )?;
    let value = value.to_str().map_err(|_| "Authorization: not text")?;
    let (scheme, token) = value.split_once(' ').ok_or("Authorization: expected Bearer <token>")?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err("Authorization: expected the Bearer scheme");
    }
    Ok(token.trim())
}

fn unauthenticated(message: impl Into<String>) -> Response {
    let mut response = ApiError::new(ErrorCode::Unauthenticated, message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn too_many_attempts(left: Duration) -> Response {
    let secs = left.as_secs().max(1);
    let message = format!("too many failed token attempts from this address; retry in {secs}s");
    let mut response = ApiError::new(ErrorCode::ResourceExhausted, message).into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// The middleware.
pub(super) async fn authenticate(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Response {
    let auth = &state.auth;
    if !auth.config.required {
        request.extensions_mut().insert(Principal::local());
        return next.run(request).await;
    }
    let Some(needed) = needed_role(request.method(), request.uri().path(), auth.config.metrics_public) else {
        return next.run(request).await;
    };
    let peer = request.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    let now = Instant::now();
    if let Some(left) = peer.and_then(|ip| auth.attempts.blocked(ip, now)) {
        return too_many_attempts(left);
    }
    let token = match bearer(request.headers()) {
        Ok(token) => token,
        // Nothing was guessed: not counted.
        Err(why) => return unauthenticated(why),
    };
    let principal = match auth.tokens.verify(token) {
        Ok(p) => p,
        Err(e) => {
            if let Some(ip) = peer {
                auth.attempts.failed(ip, now);
            }
            tracing::debug!(peer = ?peer, error = %e, "token refused");
            return unauthenticated(e.to_string());
        }
    };
    if !principal.can(needed) {
        let message = format!(
            "this needs the {needed} role (or higher); token {:?} has the {} role",
            &*principal.name, principal.role
        );
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let target = format!("{} {}", request.method(), request.uri().path());
            auth.audit.record(AuditEvent::new(&principal, "denied", target, 403)).await;
        }
        return ApiError::new(ErrorCode::PermissionDenied, message).into_response();
    }
    request.extensions_mut().insert(principal);
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_endpoint_needs_its_role() {
        let cases = [
            (Method::GET, "/health", None),
            (Method::GET, "/openapi.json", None),
            (Method::GET, "/metrics", Some(Role::Reader)),
            (Method::GET, "/api/tasks", Some(Role::Reader)),
            (Method::POST, "/api/tasks", Some(Role::Submitter)),
            (Method::DELETE, "/api/tasks/t1", Some(Role::Submitter)),
            (Method::GET, "/api/tokens", Some(Role::Admin)),
            (Method::POST, "/api/tokens", Some(Role::Admin)),
            (Method::GET, "/api/audit", Some(Role::Admin)),
            (Method::DELETE, "/api/workers/w1", Some(Role::Admin)),
            (Method::POST, "/api/tasks/t1", Some(Role::Admin)),
        ];
        for (method, path, role) in cases {
            assert_eq!(needed_role(&method, path, false), role, "{method} {path}");
        }
        assert_eq!(needed_role(&Method::GET, "/metrics", true), None);
    }

    #[test]
    fn only_a_bearer_header_carries_a_token() {
        let mut headers = HeaderMap::new();
        assert!(bearer(&headers).is_err_and(|e| e.contains("no token")));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic dXNlcjpwYXNz"));
        assert!(bearer(&headers).is_err_and(|e| e.contains("Bearer scheme")));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  cai_x "));
        assert_eq!(bearer(&headers), Ok("cai_x"));
    }
}
