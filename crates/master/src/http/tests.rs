//! `/openapi.json` is a valid OpenAPI 3 document, and it documents exactly the routes the
//! router serves.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::{Master, MasterConfig};

type Routes = BTreeSet<(String, String)>;

/// What the router is built from.
fn served() -> Routes {
    let routes = super::routes();
    let set: Routes = routes.iter().map(|r| (r.method.to_string(), r.path.to_string())).collect();
    assert_eq!(set.len(), routes.len(), "no route is mounted twice");
    set
}

#[test]
fn every_served_route_is_documented_and_every_documented_route_served() {
    let documented: Routes =
        cloudai_api::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    let served = served();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(undocumented.is_empty(), "served but not in cloudai_api::ROUTES: {undocumented:?}");
    assert!(unserved.is_empty(), "in cloudai_api::ROUTES but not served: {unserved:?}");
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// (method, path) of every operation in a served document.
fn operations(doc: &serde_json::Value) -> Routes {
    let mut ops = Routes::new();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for method in METHODS.into_iter().filter(|m| item.get(m).is_some()) {
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

/// Runs `python3 -m openapi_spec_validator` on the document when the module is installed
/// (an independent validator of the whole OpenAPI schema); `None` when it is not.
fn python_validator(text: &str) -> Option<std::process::Output> {
    let installed = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        return None;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, text).expect("write the document");
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .expect("run openapi_spec_validator");
    Some(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_master_serves_a_valid_openapi_document_covering_every_route() {
    let dir = tempfile::tempdir().expect("tempdir");
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind http");
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind grpc");
    let master = Master::start(MasterConfig::new(dir.path()), http, grpc).await.expect("master starts");

    let url = format!("http://{}/openapi.json", master.http_addr);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().expect("client");
    let resp = client.get(&url).send().await.expect("GET /openapi.json");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_string);
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let text = resp.text().await.expect("body");
    master.shutdown().await;

    // The document of this build, as served.
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(doc, serde_json::to_value(cloudai_api::openapi()).expect("document json"));
    let spec = oas3::from_json(&text).unwrap_or_else(|e| panic!("not an OpenAPI 3.1 document: {e}"));
    let version = spec.validate_version().expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1));
    assert_eq!(operations(&doc), served(), "the served document covers exactly the served routes");

    match python_validator(&text) {
        Some(out) => assert!(
            out.status.success(),
            "openapi_spec_validator refuses the document:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        None => eprintln!("python3 -m openapi_spec_validator is not installed: checked with oas3 only"),
    }
}

/// The bounds a task may ask for are what a worker may register: a task that passes
/// `TaskSpec` can fit some legal worker.
#[test]
fn task_bounds_agree_with_registration_bounds() {
    use cloudai_proto::limits;
    assert_eq!(cloudai_domain::task::MAX_MEMORY_MB, limits::MAX_MEMORY_MB);
    assert_eq!(cloudai_domain::task::MAX_CPU_CORES, limits::MAX_CPU_CORES);
    assert_eq!(cloudai_domain::task::MAX_GPUS as usize, limits::MAX_GPUS);
}
