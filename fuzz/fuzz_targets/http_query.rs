//! The HTTP API's GET (and DELETE) routes with a fuzzed path parameter and query string,
//! through the router the HTTP server runs. Input: route, then the parameter and the query
//! separated by the first 0xFF byte; bytes a URL cannot hold are percent-escaped. A parameter
//! `placed` names the task placed on the harness's worker, `fuzz-worker` names its worker.
#![no_main]

use axum::body::Body;
use cloudai_fuzz::{harness, url_text};
use libfuzzer_sys::fuzz_target;

/// Every GET route, then the DELETE ones; `{}` is the path parameter.
const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/telemetry"),
    ("GET", "/telemetry/{}"),
    ("GET", "/workers"),
    ("GET", "/api/workers"),
    ("GET", "/api/workers/{}"),
    ("GET", "/api/workers/{}/metrics"),
    ("GET", "/api/workers/{}/tasks"),
    ("GET", "/api/tasks"),
    ("GET", "/api/tasks/summary"),
    ("GET", "/api/tasks/{}"),
    ("GET", "/api/tasks/{}/events"),
    ("GET", "/api/tasks/{}/logs"),
    ("GET", "/api/alerts"),
    ("GET", "/api/tokens"),
    ("GET", "/api/audit"),
    ("GET", "/api/cluster/join-token"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/{}"),
    ("DELETE", "/api/tasks/{}"),
    ("DELETE", "/api/tokens/{}"),
];

fuzz_target!(|data: &[u8]| {
    let Some((route, rest)) = data.split_first() else { return };
    let (method, path) = ROUTES[usize::from(*route) % ROUTES.len()];
    let (param, query) = match rest.iter().position(|&b| b == 0xFF) {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let h = harness();
    h.prepare();
    let mut param = String::from_utf8_lossy(param).into_owned();
    h.task_id(&mut param);
    let mut uri = path.replace("{}", &url_text(param.as_bytes(), true));
    if !query.is_empty() {
        uri.push('?');
        uri.push_str(&url_text(query, false));
    }
    let Ok(request) = axum::http::Request::builder().method(method).uri(&uri).body(Body::empty()) else {
        return; // not a URI: hyper refuses it before the router sees it
    };
    h.http(request);
});
