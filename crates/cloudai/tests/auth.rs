//! API authentication as its users meet it: the admin token the master writes on first start,
//! tokens with roles, who may submit, cancel and see what, the audit trail, and the limits
//! on failed attempts and pending tasks.

mod common;

use std::process::Command;
use std::time::Duration;

use cloudai_master::{Master, MasterConfig, Security, TlsConfig};
use common::*;
use serde_json::{Value, json};

/// The tests' HTTP client and the API's base address: https trusting the cluster CA on a
/// TLS master (as every secured one here is), plain HTTP on an insecure one.
fn https_ready_client(master: &Master) -> reqwest::Client {
    match &master.ca_pem {
        Some(ca) => tls_client(ca),
        None => http_client(),
    }
}

fn base(master: &Master) -> String {
    match master.ca_pem {
        Some(_) => format!("https://localhost:{}", master.http_addr.port()),
        None => format!("http://{}", master.http_addr),
    }
}

/// A master as `cloudai master` runs by default: TLS, and tokens required.
fn secure_config() -> MasterConfig {
    let mut config = master_config(Duration::from_secs(5));
    config.auth.required = true;
    config.security = Security::Tls(TlsConfig::new(&config.data_dir));
    config
}

/// A master that requires tokens, and the admin token it wrote to its data folder.
async fn secured(tune: impl FnOnce(&mut MasterConfig)) -> (Master, String) {
    let mut config = secure_config();
    tune(&mut config);
    let token_file = config.data_dir.join("admin.token");
    let master = start_master(config).await;
    let admin = std::fs::read_to_string(&token_file).expect("admin.token written on first start");
    (master, admin.trim().to_string())
}

/// What a request got back: status, headers, JSON body (`null` when the body is not JSON).
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Answer {
    fn error(&self) -> &str {
        self.body["error"].as_str().unwrap_or_default()
    }
}

async fn call(
    master: &Master,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let mut request = https_ready_client(master).request(method.clone(), format!("{}{path}", base(master)));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let resp = request.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    Answer { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null) }
}

async fn get(master: &Master, path: &str, token: Option<&str>) -> Answer {
    call(master, reqwest::Method::GET, path, token, None).await
}

async fn post(master: &Master, path: &str, token: &str, body: Value) -> Answer {
    call(master, reqwest::Method::POST, path, Some(token), Some(body)).await
}

async fn delete(master: &Master, path: &str, token: &str) -> Answer {
    call(master, reqwest::Method::DELETE, path, Some(token), None).await
}

/// Creates a token as `admin`; returns (id, token).
async fn token(master: &Master, admin: &str, name: &str, role: &str) -> (String, String) {
    let created = post(master, "/api/tokens", admin, json!({"name": name, "role": role})).await;
    assert_eq!(created.status, 201, "create {name}: {}", created.body);
    let id = created.body["id"].as_str().expect("id").to_string();
    (id, created.body["token"].as_str().expect("token").to_string())
}

async fn submit_as(master: &Master, token: &str, body: Value) -> String {
    let answer = post(master, "/api/tasks", token, body).await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    answer.body["task_id"].as_str().expect("task_id").to_string()
}

async fn wait_for(master: &Master, token: &str, id: &str, status: &str) {
    wait_until(DEADLINE, &format!("task {id} {status}"), || async {
        let task = get(master, &format!("/api/tasks/{id}"), Some(token)).await;
        (task.body["status"] == status).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_valid_token_the_api_answers_401_and_health_stays_open() {
    let (master, admin) = secured(|_| {}).await;

    let none = get(&master, "/api/tasks", None).await;
    assert_eq!(none.status, 401, "{}", none.body);
    assert!(none.error().contains("Authorization: Bearer"), "the error says what to send: {}", none.body);
    assert_eq!(none.headers.get("www-authenticate").and_then(|v| v.to_str().ok()), Some("Bearer"));

    let made_up = format!("cai_0123456789ab_{}", "ab".repeat(32));
    for bad in [made_up.as_str(), "not-a-token", &admin[..admin.len() - 1]] {
        let answer = get(&master, "/api/workers", Some(bad)).await;
        assert_eq!(answer.status, 401, "{bad}: {}", answer.body);
        assert!(!answer.error().is_empty(), "a JSON error: {}", answer.body);
    }

    assert_eq!(get(&master, "/health", None).await.body["status"], "healthy");
    assert_eq!(get(&master, "/openapi.json", None).await.status, 200);
    assert_eq!(get(&master, "/api/tasks", Some(&admin)).await.status, 200, "the bootstrap token works");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_is_private_and_kept_across_restarts() {
    use std::os::unix::fs::PermissionsExt;
    let config = secure_config();
    let file = config.data_dir.join("admin.token");
    let master = start_master(config.clone()).await;
    let mode = std::fs::metadata(&file).expect("admin.token").permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "readable by the master's user only");
    let first = std::fs::read_to_string(&file).expect("read");
    master.shutdown().await;

    let master = start_master(config).await;
    assert_eq!(std::fs::read_to_string(&file).expect("read"), first, "the same token after a restart");
    let tokens = get(&master, "/api/tokens", Some(first.trim())).await;
    assert_eq!(tokens.status, 200, "{}", tokens.body);
    let names: Vec<&str> =
        tokens.body.as_array().expect("list").iter().filter_map(|t| t["name"].as_str()).collect();
    assert_eq!(names, ["bootstrap"], "one bootstrap token, not one per start");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_who_submits_and_whose_tasks_they_cancel() {
    let (master, admin) = secured(|_| {}).await;
    let worker = InProcessWorker::start(worker_for(&master, "auth-worker"));
    let (_, reader) = token(&master, &admin, "dashboard", "reader").await;
    let (_, alice) = token(&master, &admin, "alice", "submitter").await;
    let (_, bob) = token(&master, &admin, "bob", "submitter").await;
    let (_, ops) = token(&master, &admin, "ops", "operator").await;

    let refused = post(&master, "/api/tasks", &reader, shell_task("true")).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.error().contains("submitter role"), "names the role needed: {}", refused.body);
    assert_eq!(get(&master, "/api/tasks", Some(&reader)).await.status, 200, "a reader reads");

    let mine = submit_as(&master, &alice, shell_task("sleep 30")).await;
    let task = get(&master, &format!("/api/tasks/{mine}"), Some(&reader)).await;
    assert_eq!(task.body["submitted_by"], "alice");
    wait_for(&master, &alice, &mine, "running").await;

    let theirs = delete(&master, &format!("/api/tasks/{mine}"), &bob).await;
    assert_eq!(theirs.status, 403, "{}", theirs.body);
    assert!(theirs.error().contains("alice"), "says whose task it is: {}", theirs.body);
    assert_eq!(delete(&master, &format!("/api/tasks/{mine}"), &reader).await.status, 403);

    let own = delete(&master, &format!("/api/tasks/{mine}"), &alice).await;
    assert_eq!(own.status, 202, "running: being stopped: {}", own.body);
    wait_for(&master, &alice, &mine, "cancelled").await;

    // An operator cancels anyone's task.
    let bobs = submit_as(&master, &bob, shell_task("sleep 30")).await;
    let by_ops = delete(&master, &format!("/api/tasks/{bobs}"), &ops).await;
    assert!(matches!(by_ops.status, 200 | 202), "{}", by_ops.body);
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_tokens_are_refused_and_secrets_are_never_listed() {
    let (master, admin) = secured(|_| {}).await;
    let (id, ci) = token(&master, &admin, "ci", "reader").await;
    assert!(ci.starts_with(&format!("cai_{id}_")), "{ci}");
    assert_eq!(get(&master, "/api/tasks", Some(&ci)).await.status, 200);

    let listed = get(&master, "/api/tokens", Some(&admin)).await;
    assert_eq!(listed.status, 200);
    let text = listed.body.to_string();
    assert!(!text.contains(&ci[id.len() + 5..]) && !text.contains(&admin[17..]), "no secret listed: {text}");
    for t in listed.body.as_array().expect("list") {
        let keys: Vec<&String> = t.as_object().expect("object").keys().collect();
        assert_eq!(keys, ["created_at_ms", "id", "name", "revoked_at_ms", "role"], "{t}");
    }
    assert_eq!(get(&master, "/api/tokens", Some(&ci)).await.status, 403, "tokens are an admin's");

    let revoked = delete(&master, &format!("/api/tokens/{id}"), &admin).await;
    assert_eq!(revoked.status, 200, "{}", revoked.body);
    assert!(revoked.body["revoked_at_ms"].is_i64());
    let after = get(&master, "/api/tasks", Some(&ci)).await;
    assert_eq!(after.status, 401, "{}", after.body);
    assert!(after.error().contains("revoked"), "{}", after.body);
    assert_eq!(delete(&master, "/api/tokens/000000000000", &admin).await.status, 404);

    // The last valid admin token stays; with a second one, the bootstrap token can go.
    let bootstrap = admin.split('_').nth(1).expect("id").to_string();
    let last = delete(&master, &format!("/api/tokens/{bootstrap}"), &admin).await;
    assert_eq!(last.status, 409, "{}", last.body);
    let (_, second) = token(&master, &admin, "second-admin", "admin").await;
    assert_eq!(delete(&master, &format!("/api/tokens/{bootstrap}"), &second).await.status, 200);
    assert_eq!(get(&master, "/api/tasks", Some(&admin)).await.status, 401);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_says_who_did_what_and_how_it_ended() {
    let (master, admin) = secured(|_| {}).await;
    let (ci_id, ci) = token(&master, &admin, "ci", "submitter").await;
    let id = submit_as(&master, &ci, shell_task("true")).await;
    assert_eq!(
        delete(&master, &format!("/api/tasks/{id}"), &ci).await.status,
        200,
        "pending: cancelled at once"
    );
    assert_eq!(delete(&master, &format!("/api/tasks/{id}"), &ci).await.status, 409, "already cancelled");
    assert_eq!(delete(&master, &format!("/api/tokens/{ci_id}"), &admin).await.status, 200);

    // Submits and cancels are written in batches, soon after they are answered.
    let entries = wait_until(DEADLINE, "five audit entries", || async {
        let page = get(&master, "/api/audit", Some(&admin)).await;
        let entries = page.body["entries"].as_array().cloned().unwrap_or_default();
        (entries.len() >= 5).then_some(entries)
    })
    .await;
    let seen: Vec<(String, String, String, u64)> = entries
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("actor"), s("action"), s("target"), e["status"].as_u64().unwrap_or_default())
        })
        .collect();
    let mut expected = vec![
        ("bootstrap".to_string(), "token.create".to_string(), ci_id.clone(), 201),
        ("ci".into(), "task.submit".into(), id.clone(), 201),
        ("ci".into(), "task.cancel".into(), id.clone(), 200),
        ("ci".into(), "task.cancel".into(), id.clone(), 409),
        ("bootstrap".into(), "token.revoke".into(), ci_id.clone(), 200),
    ];
    expected.reverse();
    assert_eq!(seen, expected, "newest first");

    let page = get(&master, "/api/audit?limit=2", Some(&admin)).await;
    assert_eq!(page.body["entries"].as_array().map(Vec::len), Some(2));
    let next = page.body["next"].as_i64().expect("an older page follows");
    let older = get(&master, &format!("/api/audit?limit=10&before={next}"), Some(&admin)).await;
    assert_eq!(older.body["entries"].as_array().map(Vec::len), Some(3));
    assert!(older.body["next"].is_null(), "{}", older.body);
    assert_eq!(get(&master, "/api/audit?limit=0", Some(&admin)).await.status, 400);
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn env_values_are_shown_to_their_submitter_and_operators_only() {
    let (master, admin) = secured(|_| {}).await;
    let worker = InProcessWorker::start(worker_for(&master, "env-worker"));
    let (_, alice) = token(&master, &admin, "alice", "submitter").await;
    let (_, bob) = token(&master, &admin, "bob", "submitter").await;
    let (_, reader) = token(&master, &admin, "reader", "reader").await;
    let mut body = shell_task("sleep 30");
    body["env"] = json!({"REGION": "eu-west", "API_KEY": "s3cr3t"});
    body["secret_env"] = json!(["API_KEY"]);
    let id = submit_as(&master, &alice, body).await;
    wait_for(&master, &alice, &id, "running").await;

    let env_seen_by = |token: String| {
        let (master, id) = (&master, id.clone());
        async move {
            let one = get(master, &format!("/api/tasks/{id}"), Some(&token)).await.body["env"].clone();
            let list = get(master, "/api/tasks", Some(&token)).await;
            let listed = list.body["tasks"][0]["env"].clone();
            let on_worker = get(master, "/api/workers/env-worker/tasks", Some(&token)).await;
            let placed = on_worker.body["tasks"][0]["env"].clone();
            assert_eq!(listed, one, "a listing shows what the task shows");
            assert_eq!(placed, one, "so does the worker's task list");
            one
        }
    };
    let full = json!({"REGION": "eu-west", "API_KEY": "<secret>"});
    let hidden = json!({"REGION": "<hidden>", "API_KEY": "<secret>"});
    assert_eq!(env_seen_by(alice.clone()).await, full, "the submitter sees its own");
    assert_eq!(env_seen_by(admin.clone()).await, full, "an admin sees all");
    assert_eq!(env_seen_by(reader).await, hidden, "a reader sees the names only");
    assert_eq!(env_seen_by(bob).await, hidden, "so does another submitter");

    assert_eq!(delete(&master, &format!("/api/tasks/{id}"), &alice).await.status, 202);
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_tasks_are_bounded_per_submitter() {
    let (master, admin) = secured(|c| c.auth.max_pending_per_submitter = 3).await;
    let (_, alice) = token(&master, &admin, "alice", "submitter").await;
    let (_, bob) = token(&master, &admin, "bob", "submitter").await;
    // No worker: everything stays pending.
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(submit_as(&master, &alice, shell_task("true")).await);
    }
    let over = post(&master, "/api/tasks", &alice, shell_task("true")).await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert!(over.error().contains("3 pending tasks"), "names the limit: {}", over.body);
    submit_as(&master, &bob, shell_task("true")).await;

    assert_eq!(delete(&master, &format!("/api/tasks/{}", ids[0]), &alice).await.status, 200);
    submit_as(&master, &alice, shell_task("true")).await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_need_a_reader_token_unless_public() {
    let (master, admin) = secured(|_| {}).await;
    let (_, reader) = token(&master, &admin, "prometheus", "reader").await;
    assert_eq!(get(&master, "/metrics", None).await.status, 401);
    let scrape = https_ready_client(&master)
        .get(format!("{}/metrics", base(&master)))
        .bearer_auth(&reader)
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(scrape.status(), 200);
    assert!(scrape.text().await.expect("text").contains("cloudai_"), "Prometheus text");
    master.shutdown().await;

    let (public, _) = secured(|c| c.auth.metrics_public = true).await;
    let open =
        https_ready_client(&public).get(format!("{}/metrics", base(&public))).send().await.expect("GET");
    assert_eq!(open.status(), 200);
    assert_eq!(get(&public, "/api/tasks", None).await.status, 401, "only /metrics is public");
    public.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_token_attempts_are_limited_per_address() {
    let (master, admin) = secured(|c| c.auth.max_failed_attempts = 3).await;
    let guess = format!("cai_{}_{}", &admin[4..16], "0".repeat(64));
    for _ in 0..3 {
        assert_eq!(get(&master, "/api/tasks", Some(&guess)).await.status, 401);
    }
    let limited = get(&master, "/api/tasks", Some(&guess)).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    assert!(limited.error().contains("too many failed token attempts"), "{}", limited.body);
    let retry: u64 = limited.headers["retry-after"].to_str().expect("text").parse().expect("seconds");
    assert!((1..=60).contains(&retry), "{retry}");
    // Until the window ends, this address gets nothing, even with the right token.
    assert_eq!(get(&master, "/api/tasks", Some(&admin)).await.status, 429);
    assert_eq!(get(&master, "/health", None).await.status, 200, "health is not behind the limit");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_authentication_every_caller_is_local() {
    let master = start_master(master_config(Duration::from_secs(5))).await;
    let api = base(&master);
    let task = submit(&api, shell_task("true")).await;
    assert_eq!(task["submitted_by"], "local");
    let (status, audit) = get_json(&format!("{api}/api/audit")).await;
    assert_eq!(status, 200, "{audit}");
    let entries = wait_until(DEADLINE, "the submit audited", || async {
        let (_, audit) = get_json(&format!("{api}/api/audit")).await;
        let entries = audit["entries"].as_array().cloned().unwrap_or_default();
        (!entries.is_empty()).then_some(entries)
    })
    .await;
    assert_eq!((&entries[0]["actor"], &entries[0]["action"]), (&json!("local"), &json!("task.submit")));
    master.shutdown().await;
}

/// The CA a CLI run trusts (`CLOUDAI_CA_CERT`), set by the session test.
static CA_CERT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

fn cloudai(api: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(bin());
    command.args(args).env("CLOUDAI_ADDR", api).env_remove("RUST_LOG").env_remove("CLOUDAI_TOKEN");
    if let Some(ca) = CA_CERT.get() {
        command.env("CLOUDAI_CA_CERT", ca);
    }
    if let Some(token) = token {
        command.env("CLOUDAI_TOKEN", token);
    }
    let out = command.output().expect("run cloudai");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn cli(api: &str, token: Option<&str>, args: &[&str]) -> (i32, String, String) {
    let (api, token) = (api.to_string(), token.map(str::to_string));
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        cloudai(&api, token.as_deref(), &args.iter().map(String::as_str).collect::<Vec<_>>())
    })
    .await
    .expect("cli thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_session_with_the_cli_against_a_master_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let config_home = dir.path().join("config").display().to_string();
    // As `cloudai master` runs by default: TLS and tokens (its client profile kept out of ~).
    let master = Proc::spawn(
        &["master", "--no-console", "--http-port", "127.0.0.1:0", "--grpc-port", "127.0.0.1:0"],
        &[("CLOUDAI_DATA_DIR", &data), ("XDG_CONFIG_HOME", &config_home)],
        None,
    );
    let addr = master.wait_for_line("HTTP API listening on").await;
    let port = addr.rsplit(':').next().expect("port");
    let api = format!("https://localhost:{port}");
    let _ = CA_CERT.set(dir.path().join("pki/ca.crt").display().to_string());
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).expect("admin.token");
    let admin = admin.trim();

    let (code, _, err) = cli(&api, None, &["task", "ls"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("401") && err.contains("Authorization: Bearer"), "{err}");

    let (code, token, err) =
        cli(&api, Some(admin), &["token", "create", "--role", "reader", "--name", "ci"]).await;
    assert_eq!(code, 0, "{err}");
    let token = token.trim();
    assert!(token.starts_with("cai_") && token.lines().count() == 1, "only the token on stdout: {token:?}");
    assert!(err.contains("shown only now"), "{err}");

    let (code, out, err) = cli(&api, Some(admin), &["token", "ls"]).await;
    assert_eq!(code, 0, "{err}");
    let id = token.split('_').nth(1).expect("id");
    let ci_row = out.lines().find(|l| l.contains(" ci ")).unwrap_or_else(|| panic!("ci listed: {out}"));
    assert!(ci_row.starts_with(id) && ci_row.contains("reader"), "{out}");
    assert!(!out.contains(&token[17..]), "no secret in the listing: {out}");

    let (code, _, err) = cli(&api, Some(token), &["task", "ls"]).await;
    assert_eq!(code, 0, "a reader lists tasks: {err}");
    let (code, _, err) = cli(&api, Some(token), &["task", "submit", "--", "true"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("403") && err.contains("submitter role"), "{err}");

    let (code, out, err) = cli(&api, Some(admin), &["token", "revoke", id]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    let (code, _, err) = cli(&api, Some(token), &["task", "ls"]).await;
    assert_ne!(code, 0);
    assert!(err.contains("revoked"), "{err}");

    let (code, out, err) = cli(&api, Some(admin), &["audit"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("token.create") && out.contains("token.revoke"), "{out}");
}

#[tokio::test]
async fn insecure_is_refused_on_an_address_other_machines_reach() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().display().to_string();
    let mut master = Proc::spawn(
        &["master", "--no-console", "--insecure", "--http-port", ":0", "--grpc-port", "127.0.0.1:0"],
        &[("CLOUDAI_DATA_DIR", &data)],
        None,
    );
    let code = master.wait_exit(DEADLINE).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let out = master.output();
    assert_ne!(code, Some(0), "{out}");
    assert!(out.contains("--insecure") && out.contains("loopback") && out.contains("HTTP_PORT"), "{out}");
}
