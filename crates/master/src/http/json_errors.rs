//! Every error answer is the API's `{"error": "..."}`, whoever produced it: axum's
//! extractor rejections (query string, path) and its 405, tower-http's 408, the body
//! limit's 413. Our own handlers already answer JSON; this layer rewrites the rest.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use cloudai_api::ApiErrorBody;

use super::{MAX_BODY_BYTES, REQUEST_TIMEOUT};

/// Most of a plain-text error body read to reuse as the message (rejections are one line).
const MAX_ORIGINAL_BYTES: usize = 16 * 1024;
/// Longest message kept from a plain-text body.
const MAX_MESSAGE_CHARS: usize = 512;

/// `map_response` hook: a 4xx/5xx whose body is not JSON gets the API's JSON body, same
/// status and headers.
pub(super) async fn json_errors(method: Method, response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, MAX_ORIGINAL_BYTES)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = message(status, &parts.headers, &method, &text);
    let body = serde_json::to_vec(&ApiErrorBody::new(message)).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body))
}

/// The 413's message, also for handlers that read the body themselves.
pub(super) fn too_large() -> String {
    format!("body: larger than the limit of {MAX_BODY_BYTES} bytes ({} MiB)", MAX_BODY_BYTES >> 20)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// A message that says what to do; the original text where it is the best there is.
fn message(status: StatusCode, headers: &HeaderMap, method: &Method, text: &str) -> String {
    match status {
        StatusCode::METHOD_NOT_ALLOWED => {
            let allowed = headers.get(header::ALLOW).and_then(|v| v.to_str().ok()).unwrap_or_default();
            format!("method {method} is not allowed on this path; allowed: {allowed}")
        }
        StatusCode::REQUEST_TIMEOUT => format!(
            "request timed out: not read and answered within {}s (a body sent too slowly, or the master busy); retry",
            REQUEST_TIMEOUT.as_secs()
        ),
        StatusCode::PAYLOAD_TOO_LARGE => too_large(),
        _ if !text.is_empty() => bounded(rename(text)),
        _ => status.canonical_reason().unwrap_or("error").to_lowercase(),
    }
}

/// axum's rejection texts, in our style: which part of the request, then why.
fn rename(text: &str) -> String {
    const PREFIXES: [(&str, &str); 3] = [
        ("Failed to deserialize query string: ", "query: "),
        ("Failed to deserialize form: ", "query: "),
        ("Invalid URL: ", "path: "),
    ];
    for (from, to) in PREFIXES {
        if let Some(rest) = text.strip_prefix(from) {
            return format!("{to}{rest}");
        }
    }
    text.to_string()
}

fn bounded(mut text: String) -> String {
    if let Some((cut, _)) = text.char_indices().nth(MAX_MESSAGE_CHARS) {
        text.truncate(cut);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_limit_the_methods_and_the_part() {
        let mut headers = HeaderMap::new();
        headers.insert(header::ALLOW, HeaderValue::from_static("GET,HEAD"));
        let m = message(StatusCode::METHOD_NOT_ALLOWED, &headers, &Method::PUT, "");
        assert_eq!(m, "method PUT is not allowed on this path; allowed: GET,HEAD");
        let m =
            message(StatusCode::PAYLOAD_TOO_LARGE, &HeaderMap::new(), &Method::POST, "length limit exceeded");
        assert_eq!(m, "body: larger than the limit of 1048576 bytes (1 MiB)");
        let m = message(
            StatusCode::BAD_REQUEST,
            &HeaderMap::new(),
            &Method::GET,
            "Failed to deserialize query string: tail: invalid digit found in string",
        );
        assert_eq!(m, "query: tail: invalid digit found in string");
        let m = message(StatusCode::BAD_REQUEST, &HeaderMap::new(), &Method::GET, "");
        assert_eq!(m, "bad request");
        let long = message(StatusCode::BAD_REQUEST, &HeaderMap::new(), &Method::GET, &"é".repeat(2000));
        assert_eq!(long.chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
