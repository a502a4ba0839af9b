//! A small client for the master's HTTP API, used by the CLI and the benchmarks.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the master at {addr} (is it running? set CLOUDAI_ADDR or --addr): {source}")]
    Unreachable {
        addr: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the master says ({status}): {message}")]
    Refused { status: u16, message: String },
    #[error("unexpected answer from the master: {0}")]
    BadAnswer(String),
}

#[derive(Clone)]
pub struct ApiClient {
    addr: String,
    http: reqwest::Client,
}

impl ApiClient {
    pub fn new(addr: &str) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(64)
            .build()
            .unwrap_or_default();
        Self { addr: addr.trim_end_matches('/').to_string(), http }
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.addr)
    }

    fn unreachable(&self, source: reqwest::Error) -> ClientError {
        ClientError::Unreachable { addr: self.addr.clone(), source }
    }

    async fn answer<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, ClientError> {
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| self.unreachable(e))?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused { status: status.as_u16(), message });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::BadAnswer(e.to_string()))
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.http.get(self.url(path)).timeout(Duration::from_secs(30)).send().await;
        self.answer(resp.map_err(|e| self.unreachable(e))?).await
    }

    pub async fn post<T: DeserializeOwned>(&self, path: &str, body: &Value) -> Result<T, ClientError> {
        let resp = self.http.post(self.url(path)).json(body).timeout(Duration::from_secs(30)).send().await;
        self.answer(resp.map_err(|e| self.unreachable(e))?).await
    }

    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.http.delete(self.url(path)).timeout(Duration::from_secs(30)).send().await;
        self.answer(resp.map_err(|e| self.unreachable(e))?).await
    }

    /// Follows a task's output, calling `on_data` with each chunk's text until the task ends.
    pub async fn follow_logs(
        &self,
        task_id: &str,
        mut on_data: impl FnMut(&str, &str),
    ) -> Result<(), ClientError> {
        let resp = self
            .http
            .get(self.url(&format!("/api/tasks/{task_id}/logs?follow=true")))
            .send()
            .await
            .map_err(|e| self.unreachable(e))?;
        if !resp.status().is_success() {
            return self.answer::<Value>(resp).await.map(|_| ());
        }
        let mut resp = resp;
        let mut pending = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.unreachable(e))? {
            pending.extend_from_slice(&chunk);
            while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let v: Value =
                    serde_json::from_slice(&line).map_err(|e| ClientError::BadAnswer(e.to_string()))?;
                on_data(v["stream"].as_str().unwrap_or("stdout"), v["data"].as_str().unwrap_or_default());
            }
        }
        Ok(())
    }
}
