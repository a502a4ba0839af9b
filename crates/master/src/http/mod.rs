//! The master's HTTP API (axum): health, telemetry, workers, tasks, alerts, metrics and the
//! OpenAPI document. Handlers answer with `cloudai_api`'s types, which the document is built from.

mod alerts;
mod auth;
mod cluster;
mod error;
mod json_errors;
mod same_host;
mod tasks;
mod telemetry;
#[cfg(test)]
mod tests;
mod tokens;
mod workers;

use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::handler::Handler;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{self, MethodRouter};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;

pub use error::ApiError;

use crate::tasks::TaskService;
use crate::telemetry::TelemetryManager;

/// Requests (reading the body and writing the answer) taking longer than this get 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body accepted.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the handlers read.
#[derive(Clone)]
pub struct ApiState {
    pub telemetry: TelemetryManager,
    pub tasks: TaskService,
    pub metrics: crate::metrics::Metrics,
    pub alerts: crate::alerting::AlertService,
    pub auth: crate::auth::Auth,
    /// Workers' trust: the join token, revocation.
    pub trust: crate::identity::WorkerTrust,
    /// Where workers dial, for the join token's answer.
    pub grpc_port: u16,
    /// Workers' own word on whether they can run tasks.
    pub fleet: crate::fleet::Fleet,
}

/// One served route. The method is written once, by the helper that mounts the handler
/// ([`get`], [`post`], [`delete`]), so the list the router is built from is what it serves.
struct Route {
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the test comparing routes with the document"))]
    method: &'static str,
    path: &'static str,
    handler: MethodRouter<ApiState>,
}

fn get<H: Handler<T, ApiState>, T: 'static>(path: &'static str, handler: H) -> Route {
    Route { method: "GET", path, handler: routing::get(handler) }
}

fn post<H: Handler<T, ApiState>, T: 'static>(path: &'static str, handler: H) -> Route {
    Route { method: "POST", path, handler: routing::post(handler) }
}

fn delete<H: Handler<T, ApiState>, T: 'static>(path: &'static str, handler: H) -> Route {
    Route { method: "DELETE", path, handler: routing::delete(handler) }
}

/// Every route the router serves.
fn routes() -> Vec<Route> {
    let mut routes = telemetry::routes();
    routes.extend(workers::routes());
    routes.extend(tasks::routes());
    routes.extend(alerts::routes());
    routes.extend(cluster::routes());
    routes.extend(tokens::routes());
    routes.push(get("/metrics", metrics));
    routes.push(get("/openapi.json", openapi_json));
    routes
}

pub fn router(state: ApiState) -> Router {
    // Routes sharing a path (`GET` and `POST /api/tasks`) merge into one method router.
    let api = routes()
        .into_iter()
        .fold(Router::new(), |router, route| router.route(route.path, route.handler))
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT));
    // Around the whole router, so it sees answers as sent: the timeout's 408, and a 405
    // with the `Allow` header the method router adds last.
    Router::new().fallback_service(api).layer(axum::middleware::map_response(json_errors::json_errors))
}

/// `GET /openapi.json`: the document of this API, built once from `cloudai_api`'s types.
async fn openapi_json() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let text = DOCUMENT.get_or_init(|| {
        // The document is plain data (strings, maps, numbers): serialising it cannot fail.
        serde_json::to_string(&cloudai_api::openapi()).unwrap_or_default()
    });
    ([(header::CONTENT_TYPE, "application/json")], text.as_str()).into_response()
}

/// Prometheus scrape: a snapshot of the cluster, encoded off the async threads.
async fn metrics(
    axum::extract::State(state): axum::extract::State<ApiState>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let task_states = state.tasks.count_by_status().await?;
    let counts = state.tasks.counts().await?;
    let (metrics, telemetry, alerts) = (state.metrics.clone(), state.telemetry.clone(), state.alerts.clone());
    // Copying every worker's figures is a pass over the cluster too: not on an async thread.
    let text = tokio::task::spawn_blocking(move || {
        let snapshot = crate::metrics::Snapshot {
            workers: telemetry.list_workers(),
            stats: telemetry.stats(),
            task_states,
            counts,
            alerts_firing: alerts.firing_count(),
        };
        crate::metrics::render(&metrics, snapshot)
    })
    .await
    .map_err(|e| ApiError::internal(format!("metrics: {e}")))?
    .map_err(|e| ApiError::internal(format!("metrics: {e}")))?;
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or_default();
    if accept.contains("application/openmetrics-text") {
        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        return Ok(([(header::CONTENT_TYPE, content_type)], text).into_response());
    }
    let content_type = "text/plain; version=0.0.4; charset=utf-8";
    Ok(([(header::CONTENT_TYPE, content_type)], crate::metrics::to_classic_text(&text)).into_response())
}

/// Connection limits of the HTTP server, so idle or slow clients cannot hold the master's
/// descriptors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HttpLimits {
    /// A connection must send a whole request head this soon after it opens or after its
    /// previous answer (idle keep-alive included), or it is closed.
    pub header_timeout: Duration,
    /// Connections served at once; past it, a new one is answered 503 and closed.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self { header_timeout: Duration::from_secs(10), max_connections: 512 }
    }
}

/// How long a refused connection is given to take its 503.
const REFUSAL_WRITE: Duration = Duration::from_secs(1);

/// Serves the API on `listener` (over TLS with `tls`) until `shutdown` fires, then finishes
/// in-flight requests (idle connections close at once). HTTP/1.1 only: there is no protocol
/// sniffing phase for a silent client to sit in.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    limits: HttpLimits,
    tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut app = router(state);
    // On a loopback address there is no token yet to keep a web page out: only requests that
    // name this machine, from no page or the master's own, are served.
    let local = listener.local_addr()?;
    if local.ip().is_loopback() {
        let port = local.port();
        app =
            app.layer(axum::middleware::from_fn(move |request, next| same_host::check(port, request, next)));
    }
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: go on.
                tracing::warn!(error = %e, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = std::sync::Arc::clone(&permits).try_acquire_owned() else {
            connections.spawn(refuse(stream, limits.max_connections));
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (app, shutdown, tls) = (app.clone(), shutdown.clone(), tls.clone());
        connections.spawn(async move {
            let _permit = permit;
            match tls {
                None => serve_connection(stream, peer, app, limits, shutdown).await,
                // The handshake is held to the same deadline as a request head.
                Some(tls) => match tokio::time::timeout(limits.header_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => serve_connection(stream, peer, app, limits, shutdown).await,
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                },
            }
        });
    }
    connections.close();
    connections.wait().await;
    Ok(())
}

async fn serve_connection<IO>(
    io: IO,
    peer: std::net::SocketAddr,
    app: Router,
    limits: HttpLimits,
    shutdown: CancellationToken,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    // The peer's address, for the limit on failed token attempts.
    let with_peer = tower::ServiceExt::map_request(app, move |mut request: axum::http::Request<_>| {
        request.extensions_mut().insert(auth::PeerAddr(peer));
        request
    });
    let service = hyper_util::service::TowerToHyperService::new(with_peer);
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Answers a connection over the limit with a 503 (the API's JSON error) and closes it.
async fn refuse(mut stream: tokio::net::TcpStream, limit: usize) {
    use tokio::io::AsyncWriteExt;
    let body =
        serde_json::json!({ "error": format!("too many connections (limit {limit}); retry") }).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_WRITE, stream.write_all(answer.as_bytes())).await;
}
