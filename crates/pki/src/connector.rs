//! A TLS connector for tonic channels whose settings can change while the channel lives:
//! a worker's renewed certificate is used from its next connection on, without a new
//! channel (the connections made before keep theirs, which the master accepted then).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// Give tonic an `http://` URI with this connector: it does the TLS itself.
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<RwLock<Arc<ClientConfig>>>,
    server_name: ServerName<'static>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// `host`: the name (or address) the server's certificate must carry.
    pub fn new(host: &str, config: Arc<ClientConfig>) -> Result<Self, crate::PkiError> {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let server_name = ServerName::try_from(host.to_string())
            .map_err(|_| crate::PkiError::BadPem { what: format!("the server name {host:?}") })?;
        Ok(Self { config: Arc::new(RwLock::new(config)), server_name })
    }

    /// Settings for the connections made from now on.
    pub fn set_config(&self, config: Arc<ClientConfig>) {
        *self.config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = config;
    }

    fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl tower_service::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config());
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let host = uri.host().ok_or_else(|| std::io::Error::other(format!("no host in {uri}")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri.port_u16().unwrap_or(443);
            let tcp = TcpStream::connect((host, port)).await?;
            tcp.set_nodelay(true)?;
            Ok(TokioIo::new(connector.connect(server_name, tcp).await?))
        })
    }
}
