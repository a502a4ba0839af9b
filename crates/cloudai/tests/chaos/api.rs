//! The master's HTTPS API, as the suite reads it: submissions, tasks, workers, telemetry,
//! alerts, and the waits built on them (each polls with a deadline).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};

use super::cluster::{Cluster, MAX_RETRIES};
use super::ledger::task_script;

impl Cluster {
    /// Waits until `/health` answers; returns when it did.
    pub async fn wait_healthy(&self, timeout: Duration) -> anyhow::Result<Instant> {
        let deadline = Instant::now() + timeout;
        loop {
            let ok = self
                .client
                .get(format!("{}/health", self.api))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(Instant::now());
            }
            if Instant::now() > deadline {
                bail!("the master's /health did not answer within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub async fn wait_workers_active(&self, ids: &[&str], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let workers = self.workers().await.unwrap_or_default();
            let active =
                ids.iter().all(|id| workers.iter().any(|w| w["worker_id"] == *id && w["is_active"] == true));
            if active {
                return Ok(());
            }
            if Instant::now() > deadline {
                let hints: Vec<String> = ids.iter().map(|id| self.logs_hint(&self.worker(id))).collect();
                bail!("workers {ids:?} not all active within {timeout:?}: {workers:?}\n{}", hints.join("\n"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        let resp = self.client.get(format!("{}{path}", self.api)).bearer_auth(&self.token).send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        if !status.is_success() {
            bail!("GET {path}: {status}: {body}");
        }
        Ok(body)
    }

    pub async fn workers(&self) -> anyhow::Result<Vec<Value>> {
        let body = self.get("/api/workers").await?;
        Ok(body.as_array().cloned().unwrap_or_default())
    }

    pub async fn telemetry(&self, id: &str) -> anyhow::Result<Value> {
        self.get(&format!("/telemetry/{id}")).await
    }

    pub async fn alerts(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self.get("/api/alerts").await?["alerts"].as_array().cloned().unwrap_or_default())
    }

    pub async fn events(&self, task: &str) -> anyhow::Result<Vec<Value>> {
        Ok(self.get(&format!("/api/tasks/{task}/events")).await?.as_array().cloned().unwrap_or_default())
    }

    /// Every task, by one page (the suite submits far fewer than 1000).
    pub async fn tasks(&self) -> anyhow::Result<Vec<Value>> {
        Ok(self.get("/api/tasks?limit=1000&brief=true").await?["tasks"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Submits a task; its answer's id.
    pub async fn submit(&self, body: &Value) -> anyhow::Result<String> {
        let resp = self
            .client
            .post(format!("{}/api/tasks", self.api))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await?;
        let status = resp.status();
        let answer: Value = resp.json().await?;
        if status.as_u16() != 201 {
            bail!("POST /api/tasks: {status}: {answer}");
        }
        answer["task_id"].as_str().map(str::to_owned).context("task_id in the answer")
    }

    /// Submits `n` ledger tasks; `seconds(i)` and `keep(i)` shape task `i`.
    pub async fn submit_work(
        &self,
        n: usize,
        seconds: impl Fn(usize) -> u32,
        keep: impl Fn(usize) -> bool,
    ) -> anyhow::Result<Submitted> {
        let mut submitted = Submitted::default();
        for i in 0..n {
            let mut body = json!({
                "driver": "process", "command": ["sh", "-c", task_script(seconds(i))],
                "cpu_required": 0.1, "memory_required": 16, "max_retries": MAX_RETRIES,
            });
            if keep(i) {
                body["on_disconnect"] = json!("keep");
                body["max_disconnect_secs"] = json!(120);
                match self.submit(&body).await {
                    Ok(id) => {
                        submitted.keep.push(id.clone());
                        submitted.ids.push(id);
                        continue;
                    }
                    // A master without the field: the rest of the scenario still tells something.
                    Err(e) if format!("{e:#}").contains("unknown field") => {
                        submitted.refused_keep = Some(format!("{e:#}"));
                        if let Some(fields) = body.as_object_mut() {
                            fields.remove("on_disconnect");
                            fields.remove("max_disconnect_secs");
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            submitted.ids.push(self.submit(&body).await?);
        }
        Ok(submitted)
    }

    /// Waits until every task in `ids` runs (status `running`).
    pub async fn wait_running(&self, ids: &[String], timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            let tasks = self.tasks().await.unwrap_or_default();
            let running = ids
                .iter()
                .filter(|id| tasks.iter().any(|t| t["task_id"] == id.as_str() && t["status"] == "running"))
                .count();
            if running == ids.len() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{running} of {} tasks running after {timeout:?}", ids.len());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until every task in `ids` has ended, or `timeout`; the tasks as last seen.
    pub async fn wait_final(&self, ids: &[String], timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut last = Vec::new();
        loop {
            if let Ok(tasks) = self.tasks().await {
                last = tasks;
            }
            let ended = ids.iter().all(|id| last.iter().any(|t| t["task_id"] == id.as_str() && is_final(t)));
            if ended || Instant::now() > deadline {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Seconds from `since` until every worker in `ids` has had a heartbeat applied that it
    /// sent at or after `since_ms` (unix ms: the containers share this machine's clock), so a
    /// heartbeat queued during the fault and delivered late does not count; polled every
    /// 50 ms, or `None` by `timeout`.
    pub async fn heartbeats_back(
        &self,
        ids: &[&str],
        since: Instant,
        since_ms: u64,
        timeout: Duration,
    ) -> Option<f64> {
        let mut pending: Vec<&str> = ids.to_vec();
        while since.elapsed() < timeout {
            let mut still = Vec::new();
            for id in pending {
                let fresh = self
                    .telemetry(id)
                    .await
                    .ok()
                    .and_then(|t| t["sample_time_ms"].as_u64())
                    .is_some_and(|ms| ms >= since_ms);
                if !fresh {
                    still.push(id);
                }
            }
            if still.is_empty() {
                return Some(since.elapsed().as_secs_f64());
            }
            pending = still;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// The ledger tasks a scenario submitted.
#[derive(Debug, Default)]
pub struct Submitted {
    pub ids: Vec<String>,
    /// Those submitted with `on_disconnect: keep`.
    pub keep: Vec<String>,
    /// Why the master refused `on_disconnect: keep`, if it did (they were submitted without).
    pub refused_keep: Option<String>,
}

/// This machine's wall clock in unix milliseconds.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

pub fn is_final(task: &Value) -> bool {
    matches!(task["status"].as_str(), Some("completed" | "failed" | "cancelled"))
}
