//! Workers over mTLS: a worker joins once with the join token (which pins the cluster CA),
//! gets a certificate for its own key, and from then on may speak only for itself and for
//! the tasks placed on it. Certificates renew while tasks run; a revoked worker is cut off.

mod common;

use std::time::Duration;

use cloudai_master::{Master, MasterConfig, Security, TlsConfig};
use cloudai_proto::v1 as pb;
use cloudai_proto::v1::master_service_client::MasterServiceClient;
use common::*;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

/// A TLS master (its CA made in a fresh data folder) and the folder.
async fn tls_master(tune: impl FnOnce(&mut TlsConfig)) -> (Master, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("tmp").keep();
    let mut config = MasterConfig::new(&dir);
    config.telemetry.inactivity_timeout = Duration::from_secs(2);
    let mut tls = TlsConfig::new(&dir);
    tune(&mut tls);
    config.security = Security::Tls(tls);
    (start_master(config).await, dir)
}

fn ca_of(master: &Master) -> String {
    master.ca_pem.clone().expect("a TLS master has a CA")
}

fn api(master: &Master) -> String {
    format!("https://localhost:{}", master.http_addr.port())
}

/// A real worker agent dialling the master over https with the join token.
fn tls_worker(master: &Master, id: &str) -> cloudai_worker::WorkerConfig {
    worker_for(master, id)
}

fn endpoint(master: &Master) -> Endpoint {
    Endpoint::from_shared(format!("http://localhost:{}", master.grpc_addr.port())).expect("endpoint")
}

/// A gRPC client over TLS with `config` (the connector does the TLS).
fn client_with(
    master: &Master,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> MasterServiceClient<Channel> {
    let connector = cloudai_pki::TlsConnector::new("localhost", config).expect("connector");
    MasterServiceClient::new(endpoint(master).connect_with_connector_lazy(connector))
}

/// Joins as `id` through the RPC, as a worker does: a certificate for a fresh key.
async fn join_as(master: &Master, id: &str) -> Result<(String, String), tonic::Status> {
    let token = master.trust.join_token().expect("token");
    let pinned = cloudai_pki::pinned_client_config(&token.ca_fingerprint).expect("pinned");
    let csr = cloudai_pki::WorkerCsr::new(id).expect("csr");
    let request = pb::JoinRequest {
        join_secret: token.secret.as_str().into(),
        worker_id: id.into(),
        csr_pem: csr.csr_pem.clone(),
    };
    let answer = client_with(master, pinned).join_cluster(request).await?.into_inner();
    Ok((answer.certificate_pem, csr.key_pem))
}

/// A client over mTLS holding `id`'s certificate.
async fn mtls_client(master: &Master, id: &str) -> MasterServiceClient<Channel> {
    let (cert, key) = join_as(master, id).await.expect("join");
    let config = cloudai_pki::client_config(&ca_of(master), Some((&cert, &key))).expect("mTLS config");
    client_with(master, config)
}

async fn https_json(client: &reqwest::Client, url: &str) -> (u16, serde_json::Value) {
    let resp = client.get(url).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

async fn https_submit(client: &reqwest::Client, api: &str, body: serde_json::Value) -> String {
    let resp = client.post(format!("{api}/api/tasks")).json(&body).send().await.expect("submit");
    assert_eq!(resp.status().as_u16(), 201);
    let task: serde_json::Value = resp.json().await.expect("json");
    task["task_id"].as_str().expect("id").to_string()
}

async fn https_wait_status(client: &reqwest::Client, api: &str, id: &str, status: &str) -> serde_json::Value {
    wait_until(DEADLINE, &format!("task {id} {status}"), || async {
        let (_, task) = https_json(client, &format!("{api}/api/tasks/{id}")).await;
        (task["status"] == status).then_some(task)
    })
    .await
}

async fn worker_listed(client: &reqwest::Client, api: &str, id: &str) -> Option<serde_json::Value> {
    let (_, workers) = https_json(client, &format!("{api}/workers")).await;
    workers.get(id).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_joins_with_the_token_and_runs_tasks_over_mtls() {
    let (master, _) = tls_master(|_| {}).await;
    let (client, api) = (tls_client(&ca_of(&master)), api(&master));
    let config = tls_worker(&master, "w1");
    let data_dir = config.data_dir.clone();
    let worker = InProcessWorker::start(config.clone());
    wait_until(DEADLINE, "w1 registered over mTLS", || worker_listed(&client, &api, "w1")).await;

    let id = https_submit(&client, &api, shell_task("echo over-mtls")).await;
    https_wait_status(&client, &api, &id, "completed").await;
    let (_, logs) = https_json(&client, &format!("{api}/api/tasks/{id}/logs")).await;
    assert!(logs.to_string().contains("over-mtls"), "{logs}");

    // Its key never left it, and is private; the certificate is kept for the next start.
    use std::os::unix::fs::PermissionsExt;
    let key = std::fs::metadata(data_dir.join("identity/worker.key")).expect("key kept");
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    worker.stop().await;

    // Restarted without the token, it comes back with the certificate it kept.
    let worker = InProcessWorker::start(cloudai_worker::WorkerConfig { join_token: None, ..config });
    wait_until(DEADLINE, "w1 back without a token", || async {
        let w = worker_listed(&client, &api, "w1").await?;
        (w["is_active"] == true).then_some(())
    })
    .await;
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_a_wrong_token_or_another_ca_cannot_register() {
    let (master, _) = tls_master(|_| {}).await;
    let ca = ca_of(&master);

    // TLS that trusts the CA, but no client certificate: only JoinCluster is open.
    let mut anonymous = client_with(&master, cloudai_pki::client_config(&ca, None).expect("config"));
    let refused = anonymous.register_worker(registration("w1")).await.expect_err("no certificate");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("join"), "{}", refused.message());

    // A real worker without a token says what it needs; with a wrong secret it is refused.
    let mut config = tls_worker(&master, "w1");
    config.join_token = None;
    let err = cloudai_worker::run(config.clone(), Default::default()).await.expect_err("no token");
    assert!(err.to_string().contains("CLOUDAI_JOIN_TOKEN"), "{err}");
    let mut wrong = master.trust.join_token().expect("token");
    wrong.secret = cloudai_pki::JoinSecret::parse(&"0".repeat(64)).expect("secret");
    config.join_token = Some(wrong.clone());
    let err = cloudai_worker::run(config.clone(), Default::default()).await.expect_err("wrong token");
    assert!(format!("{err:#}").contains("not this cluster's"), "{err:#}");

    // A token pinning another CA: the worker refuses the master before sending its secret.
    let (other_ca, _) = cloudai_pki::ClusterCa::create("other").expect("other CA");
    let mut foreign = master.trust.join_token().expect("token");
    foreign.ca_fingerprint = other_ca.fingerprint();
    config.join_token = Some(foreign);
    let err = cloudai_worker::run(config, Default::default()).await.expect_err("foreign pin");
    assert!(format!("{err:#}").contains("join token names"), "{err:#}");

    // A certificate for w1 from another CA fails the handshake.
    let csr = cloudai_pki::WorkerCsr::new("w1").expect("csr");
    let cert = other_ca.sign_worker("w1", &csr.csr_pem, Duration::from_secs(600)).expect("signed");
    let config = cloudai_pki::client_config(&ca, Some((&cert.chain_pem, &csr.key_pem))).expect("config");
    let err =
        client_with(&master, config).register_worker(registration("w1")).await.expect_err("foreign cert");
    assert_ne!(err.code(), Code::Ok);
    assert!(master.fleet.state(&cloudai_domain::WorkerId::parse("w1").expect("id")).is_none());

    // Failed join attempts from one address are rate limited.
    let mut last = None;
    for _ in 0..8 {
        let token = master.trust.join_token().expect("token");
        let pinned = cloudai_pki::pinned_client_config(&token.ca_fingerprint).expect("pinned");
        let request =
            pb::JoinRequest { join_secret: "0".repeat(64), worker_id: "x".into(), csr_pem: String::new() };
        last = client_with(&master, pinned).join_cluster(request).await.err();
    }
    assert_eq!(last.map(|s| s.code()), Some(Code::ResourceExhausted));

    // The plain-text API is gone: https with the CA only.
    let plain =
        http_client().get(format!("http://localhost:{}/health", master.http_addr.port())).send().await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true), "plain HTTP must not be served");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_cannot_speak_for_another_or_touch_its_tasks() {
    let (master, _) = tls_master(|_| {}).await;
    let (client, api) = (tls_client(&ca_of(&master)), api(&master));
    let w1 = InProcessWorker::start(tls_worker(&master, "w1"));
    wait_until(DEADLINE, "w1 registered", || worker_listed(&client, &api, "w1")).await;
    let task = https_submit(&client, &api, shell_task("sleep 30")).await;
    let running = https_wait_status(&client, &api, &task, "running").await;
    assert_eq!(running["worker_id"], "w1");

    // w2 joins with its own certificate, then tries to pass for w1 and to touch w1's task.
    let w2 = RawWorker::register_over(mtls_client(&master, "w2").await, "w2").await;
    let mut as_w1 = w2.client.clone();
    let heartbeat = pb::Heartbeat { worker_id: "w1".into(), ..Default::default() };
    let refused = as_w1.send_heartbeat(heartbeat).await.expect_err("w2 heartbeats as w1");
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let unregister = as_w1.unregister_worker(pb::UnregisterWorkerRequest { worker_id: "w1".into() }).await;
    assert_eq!(unregister.expect_err("w2 unregisters w1").code(), Code::PermissionDenied);
    let impostor = w2.speaking_as("w1");
    let fake = impostor.report(&task, 1, pb::TaskStatus::Completed, Some(0), String::new()).await;
    assert_eq!(fake.expect_err("fake completion as w1").code(), Code::PermissionDenied);
    let w2 = impostor.speaking_as("w2");
    let fake = w2.report(&task, 1, pb::TaskStatus::Completed, Some(0), String::new()).await;
    assert_eq!(fake.expect_err("w2 reports w1's task").code(), Code::PermissionDenied);
    let shipped = w2.ship(&task, b"written by w2\n").await;
    assert_eq!(shipped.expect_err("w2 ships into w1's task").code(), Code::PermissionDenied);

    // The task is untouched and still w1's; the refusals are counted.
    let (_, now) = https_json(&client, &format!("{api}/api/tasks/{task}")).await;
    assert_eq!((now["status"].as_str(), now["worker_id"].as_str()), (Some("running"), Some("w1")), "{now}");
    let (_, logs) = https_json(&client, &format!("{api}/api/tasks/{task}/logs")).await;
    assert!(!logs.to_string().contains("written by w2"), "{logs}");
    let metrics =
        client.get(format!("{api}/metrics")).send().await.expect("metrics").text().await.expect("text");
    for reason in ["not_itself", "not_placed_here"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("cloudai_worker_requests_denied_total") && l.contains(reason)),
            "{reason} counted"
        );
    }
    let _ = client.delete(format!("{api}/api/tasks/{task}")).send().await;
    w1.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_worker_is_cut_off() {
    let (master, dir) = tls_master(|_| {}).await;
    let (client, api) = (tls_client(&ca_of(&master)), api(&master));
    let config = tls_worker(&master, "w1");
    let worker = std::thread::spawn({
        let config = config.clone();
        move || {
            let runtime = tokio::runtime::Runtime::new().expect("runtime");
            runtime.block_on(cloudai_worker::run(config, Default::default()))
        }
    });
    wait_until(DEADLINE, "w1 registered", || worker_listed(&client, &api, "w1")).await;

    assert!(master.trust.revoke(&cloudai_domain::WorkerId::parse("w1").expect("id")).expect("revoke"));
    // Its next heartbeat is refused, and the worker stops saying why.
    let ended = tokio::task::spawn_blocking(move || worker.join()).await.expect("join").expect("thread");
    let err = ended.expect_err("a revoked worker stops");
    assert!(format!("{err:#}").contains("revoked"), "{err:#}");
    wait_until(DEADLINE, "w1 inactive", || async {
        let w = worker_listed(&client, &api, "w1").await?;
        (w["is_active"] == false).then_some(())
    })
    .await;
    // It cannot join again under that id, even with the token; the revocation is durable.
    let again = join_as(&master, "w1").await.expect_err("rejoin");
    assert_eq!(again.code(), Code::PermissionDenied);
    let revoked = std::fs::read_to_string(dir.join("pki/revoked")).expect("revoked list");
    assert!(revoked.lines().any(|l| l == "w1"), "{revoked}");
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_renew_while_tasks_run() {
    // Six-second certificates: renewed at four seconds, the first one dead at six.
    let tune = |tls: &mut TlsConfig| tls.worker_cert_lifetime = Duration::from_secs(6);
    let (master, dir) = tls_master(tune).await;
    let (http_port, grpc_port) = (master.http_addr.port(), master.grpc_addr.port());
    let (client, api) = (tls_client(&ca_of(&master)), api(&master));
    let config = tls_worker(&master, "w1");
    let cert_path = config.data_dir.join("identity/worker.crt");
    let worker = InProcessWorker::start(config);
    wait_until(DEADLINE, "w1 registered", || worker_listed(&client, &api, "w1")).await;
    let first = std::fs::read_to_string(&cert_path).expect("certificate");
    let task = https_submit(&client, &api, shell_task("sleep 12; echo survived")).await;
    https_wait_status(&client, &api, &task, "running").await;

    wait_until(DEADLINE, "the certificate renewed", || async {
        let now = std::fs::read_to_string(&cert_path).ok()?;
        (now != first).then_some(())
    })
    .await;
    // Past the first certificate's end, the master restarts: every connection is new, so
    // the worker gets back in only with its renewed certificate.
    tokio::time::sleep(Duration::from_secs(3)).await;
    master.shutdown().await;
    let mut config = MasterConfig::new(&dir);
    config.telemetry.inactivity_timeout = Duration::from_secs(2);
    let mut tls = TlsConfig::new(&dir);
    tune(&mut tls);
    config.security = Security::Tls(tls);
    let master = start_master_on(config, http_port, grpc_port).await;
    let client = tls_client(&ca_of(&master));
    let done = https_wait_status(&client, &api, &task, "completed").await;
    assert_eq!(done["attempt"], 1, "the task ran once, through the renewal and the restart: {done}");
    let (_, logs) = https_json(&client, &format!("{api}/api/tasks/{task}/logs")).await;
    assert!(logs.to_string().contains("survived"), "{logs}");
    worker.stop().await;
    master.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_join_token_and_revocation_are_an_admins_over_the_api() {
    let dir = tempfile::tempdir().expect("tmp").keep();
    let mut config = MasterConfig::new(&dir);
    config.telemetry.inactivity_timeout = Duration::from_secs(2);
    config.auth.required = true;
    config.security = Security::Tls(TlsConfig::new(&dir));
    let master = start_master(config).await;
    let admin = std::fs::read_to_string(dir.join("admin.token")).expect("admin token");
    let admin = admin.trim();
    let (client, api) = (tls_client(&ca_of(&master)), api(&master));
    let call = |method: reqwest::Method, path: &str, token: &str| {
        client.request(method, format!("{api}{path}")).bearer_auth(token.to_string()).send()
    };
    let reader: serde_json::Value = client
        .post(format!("{api}/api/tokens"))
        .bearer_auth(admin)
        .json(&serde_json::json!({"name": "ops", "role": "reader"}))
        .send()
        .await
        .expect("create reader")
        .json()
        .await
        .expect("json");
    let reader = reader["token"].as_str().expect("token").to_string();

    // Only an admin sees the join token.
    let refused = call(reqwest::Method::GET, "/api/cluster/join-token", &reader).await.expect("get");
    assert_eq!(refused.status().as_u16(), 403);
    let shown: serde_json::Value = call(reqwest::Method::GET, "/api/cluster/join-token", admin)
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let old = master.trust.join_token().expect("token");
    assert_eq!(shown["token"], old.to_string());
    assert_eq!(shown["grpc_port"], master.grpc_addr.port());

    // Rotated, the old token admits no one; the new one does.
    let rotated: serde_json::Value = call(reqwest::Method::POST, "/api/cluster/join-token/rotate", admin)
        .await
        .expect("rotate")
        .json()
        .await
        .expect("json");
    assert_ne!(rotated["token"], old.to_string());
    let mut stale = worker_for(&master, "w1");
    stale.join_token = Some(old);
    let err = cloudai_worker::run(stale, Default::default()).await.expect_err("old token");
    assert!(err.to_string().contains("not this cluster's"), "{err}");
    let worker = std::thread::spawn({
        let config = worker_for(&master, "w1");
        move || {
            tokio::runtime::Runtime::new()
                .expect("runtime")
                .block_on(cloudai_worker::run(config, Default::default()))
        }
    });
    wait_until(DEADLINE, "w1 joined with the new token", || async {
        let (_, workers) = https_json_as(&client, &format!("{api}/workers"), admin).await;
        workers.get("w1").cloned()
    })
    .await;

    // Revoked through the API: the worker stops; a second revoke says it was already.
    let revoked: serde_json::Value = call(reqwest::Method::POST, "/api/workers/w1/revoke", admin)
        .await
        .expect("revoke")
        .json()
        .await
        .expect("json");
    assert_eq!(revoked, serde_json::json!({"worker_id": "w1", "newly_revoked": true}));
    let ended = tokio::task::spawn_blocking(move || worker.join()).await.expect("join").expect("thread");
    assert!(ended.is_err(), "a revoked worker stops");
    let again: serde_json::Value = call(reqwest::Method::POST, "/api/workers/w1/revoke", admin)
        .await
        .expect("revoke")
        .json()
        .await
        .expect("json");
    assert_eq!(again["newly_revoked"], false);
    let no = call(reqwest::Method::POST, "/api/workers/w2/revoke", &reader).await.expect("revoke");
    assert_eq!(no.status().as_u16(), 403, "a reader revokes nothing");

    // Both changes are in the audit trail, with who made them.
    let audit: serde_json::Value =
        call(reqwest::Method::GET, "/api/audit", admin).await.expect("audit").json().await.expect("json");
    let actions: Vec<(&str, &str)> = audit["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .filter_map(|e| Some((e["action"].as_str()?, e["actor"].as_str()?)))
        .collect();
    assert!(actions.contains(&("worker.revoke", "bootstrap")), "{audit}");
    assert!(actions.contains(&("cluster.join_token.rotate", "bootstrap")), "{audit}");
    master.shutdown().await;
}

async fn https_json_as(client: &reqwest::Client, url: &str, token: &str) -> (u16, serde_json::Value) {
    let resp = client.get(url).bearer_auth(token).send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}
