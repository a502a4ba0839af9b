//! The HTTP API's POST routes with a fuzzed body, through the router the HTTP server runs.
//! Input: route, content type, then the body. `/api/tasks` gets most inputs.
#![no_main]

use axum::body::Body;
use cloudai_fuzz::{WORKER, harness};
use libfuzzer_sys::fuzz_target;

const ROUTES: &[&str] = &[
    "/api/tasks",
    "/api/tasks",
    "/api/tasks",
    "/api/tasks",
    "/api/tokens",
    "/api/cluster/join-token/rotate",
    "/api/workers/{}/revoke",
    "/api/tasks/summary",
];
const CONTENT_TYPES: &[Option<&str>] = &[
    Some("application/json"),
    Some("application/json"),
    Some("application/json; charset=utf-8"),
    Some("APPLICATION/JSON"),
    Some("text/plain"),
    Some("application/x-www-form-urlencoded"),
    Some("application/jsonx"),
    None,
];

fuzz_target!(|data: &[u8]| {
    let [route, content_type, body @ ..] = data else { return };
    let path = ROUTES[usize::from(*route) % ROUTES.len()].replace("{}", WORKER);
    let mut request = axum::http::Request::post(path);
    if let Some(content_type) = CONTENT_TYPES[usize::from(*content_type) % CONTENT_TYPES.len()] {
        request = request.header("content-type", content_type);
    }
    let Ok(request) = request.body(Body::from(body.to_vec())) else { return };
    let h = harness();
    h.prepare();
    h.http(request);
});
