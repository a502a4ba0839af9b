//! The OpenAPI document is an OpenAPI 3 document that covers exactly [`ROUTES`], and every
//! schema it refers to is in it.

use std::collections::BTreeSet;

use cloudai_api::{ROUTES, openapi};
use serde_json::Value;

fn document() -> Value {
    let text = serde_json::to_string_pretty(&openapi()).expect("the document serialises");
    serde_json::from_str(&text).expect("the document is JSON")
}

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

#[test]
fn is_an_openapi_3_document() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "{version}");
    assert!(doc["info"]["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(doc["info"]["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(doc["paths"].as_object().is_some_and(|p| !p.is_empty()));

    // An independent parser of OpenAPI 3.1 reads it, down to every operation.
    let spec =
        oas3::from_json(doc.to_string()).unwrap_or_else(|e| panic!("not an OpenAPI 3.1 document: {e}"));
    let parsed = spec.validate_version().expect("a supported version");
    assert_eq!((parsed.major, parsed.minor), (3, 1));
    assert_eq!(spec.operations().count(), cloudai_api::ROUTES.len());
}

#[test]
fn paths_are_exactly_the_routes() {
    let doc = document();
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(method).is_some() {
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    let routes: BTreeSet<(String, String)> =
        ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(routes.len(), ROUTES.len(), "no route listed twice");
    assert_eq!(documented, routes);
    for required in [
        "/health",
        "/telemetry",
        "/telemetry/{worker_id}",
        "/workers",
        "/api/workers",
        "/api/workers/{worker_id}",
        "/api/workers/{worker_id}/metrics",
        "/api/workers/{worker_id}/tasks",
        "/api/tasks",
        "/api/tasks/summary",
        "/api/tasks/{id}",
        "/api/tasks/{id}/events",
        "/api/tasks/{id}/logs",
        "/api/alerts",
        "/metrics",
    ] {
        assert!(routes.iter().any(|(_, p)| p == required), "{required} is documented");
    }
}

/// Every operation: a unique id, its path parameters declared, a success answer, and
/// every error answer in the one error shape.
#[test]
fn operations_are_complete() {
    let doc = document();
    let mut ids = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            let Some(op) = item.get(method) else { continue };
            let id = op["operationId"].as_str().expect("operationId");
            assert!(ids.insert(id.to_string()), "operationId {id} is unique");
            let params: Vec<&Value> =
                op["parameters"].as_array().map(|p| p.iter().collect()).unwrap_or_default();
            for segment in path.split('/').filter(|s| s.starts_with('{')) {
                let name = segment.trim_matches(|c| c == '{' || c == '}');
                let declared =
                    params.iter().any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true);
                assert!(declared, "{method} {path}: path parameter {name}");
            }
            let responses = op["responses"].as_object().expect("responses");
            assert!(responses.keys().any(|s| s.starts_with('2')), "{method} {path}: a 2xx answer");
            for (status, answer) in responses.iter().filter(|(s, _)| !s.starts_with('2')) {
                let schema = &answer["content"]["application/json"]["schema"]["$ref"];
                assert_eq!(schema, "#/components/schemas/ApiErrorBody", "{method} {path} {status}");
            }
        }
    }
    let post = &doc["paths"]["/api/tasks"]["post"];
    assert_eq!(
        post["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/SubmitTask"
    );
    let logs = &doc["paths"]["/api/tasks/{id}/logs"]["get"]["responses"]["200"]["content"];
    assert!(logs.get("application/json").is_some() && logs.get("application/x-ndjson").is_some(), "{logs}");
    let metrics = &doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"];
    assert!(metrics.as_object().is_some_and(|m| m.keys().any(|k| k.starts_with("text/plain"))), "{metrics}");
}

fn refs(value: &Value, out: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(r)) = map.get("$ref") {
                out.insert(r.clone());
            }
            map.values().for_each(|v| refs(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[test]
fn schemas_cover_the_dtos_and_every_reference_resolves() {
    let doc = document();
    let schemas = doc["components"]["schemas"].as_object().expect("components.schemas");
    for name in [
        "ApiErrorBody",
        "Health",
        "WorkerTelemetry",
        "GpuStats",
        "RunningTask",
        "WorkerSummary",
        "WorkerInfo",
        "GpuInfo",
        "WorkerDetail",
        "WorkerMetrics",
        "History",
        "Point",
        "WorkerTask",
        "TaskUsage",
        "SubmitTask",
        "TaskSpec",
        "Task",
        "TaskEvent",
        "TaskSummary",
        "TaskLogs",
        "LogChunk",
        "LogStream",
        "AlertList",
        "Alert",
        "AlertStatus",
        "Severity",
        "TaskStatus",
        "Driver",
    ] {
        assert!(schemas.contains_key(name), "schema {name}; have {:?}", schemas.keys().collect::<Vec<_>>());
    }
    let mut all = BTreeSet::new();
    refs(&doc, &mut all);
    for r in &all {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("local ref: {r}"));
        assert!(schemas.contains_key(name), "{r} resolves");
    }
    // Required in the schema as in serde: what the server always sends.
    let required = |name: &str| -> Vec<String> {
        // SubmitTask is `allOf` its derived object and the driver's needs: the object decides.
        let schema = match schemas[name]["allOf"].get(0) {
            Some(derived) => derived,
            None => &schemas[name],
        };
        let list = schema["required"].as_array().cloned().unwrap_or_default();
        list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()
    };
    assert!(required("WorkerTelemetry").contains(&"cpu_usage".to_string()));
    assert!(!required("GpuStats").contains(&"temperature_c".to_string()));
    assert!(required("TaskEvent").contains(&"to".to_string()));
    assert!(required("TaskEvent").contains(&"from".to_string()), "sent as null for the first event");
    // Left out when unknown, never null.
    assert_eq!(schemas["GpuStats"]["properties"]["temperature_c"]["type"], "number");
    assert!(!required("SubmitTask").contains(&"driver".to_string()));
    assert!(required("SubmitTask").contains(&"cpu_required".to_string()));
}
