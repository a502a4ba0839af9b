//! Alert evaluation on the master: one background task feeds the [`AlertEngine`] with
//! worker telemetry and task ends, evaluates it on a tick, and logs and POSTs (webhook)
//! every firing and resolution.
//!
//! Alerting only reads: it snapshots the TelemetryManager on its own tick and listens to
//! the fleet's events, so nothing on the heartbeat path ever waits for it. The engine's lock is
//! held only to feed or read the engine, never across an await.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cloudai_alerts::{
    Alert, AlertEngine, GpuObservation, RuleSet, Webhook, WebhookConfig, WebhookError, WebhookHandle,
    WebhookSettings, WorkerObservation,
};
use cloudai_domain::TaskStatus;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::events::ClusterEvent;
use crate::fleet::{Subscription, Update};
use crate::shutdown::Stage;
use crate::telemetry::{TelemetryManager, WorkerTelemetry};
use cloudai_domain::WorkerInfo;
use cloudai_domain::time::unix_ms;

#[derive(Clone, Debug)]
pub struct AlertConfig {
    /// The rules, from `ALERT_RULES` or built in.
    pub rules: RuleSet,
    /// `ALERT_WEBHOOK_URL`: replaces the rules file's webhook url (keeping its retry settings).
    pub webhook_url: Option<reqwest::Url>,
    /// How often the rules are evaluated.
    pub eval_interval: Duration,
}

impl Default for AlertConfig {
    fn default() -> Self {
        Self { rules: RuleSet::builtin(), webhook_url: None, eval_interval: Duration::from_secs(5) }
    }
}

impl AlertConfig {
    /// The webhook to notify, if any: the rules file's, with the url override applied.
    pub fn webhook(&self) -> Option<WebhookSettings> {
        match (&self.webhook_url, &self.rules.webhook) {
            (Some(url), Some(file)) => {
                Some(WebhookSettings { url: url.clone(), config: file.config.clone() })
            }
            (Some(url), None) => Some(WebhookSettings { url: url.clone(), config: WebhookConfig::default() }),
            (None, file) => file.clone(),
        }
    }
}

/// Handle to the alert state; cheap to clone.
#[derive(Clone)]
pub struct AlertService {
    engine: Arc<Mutex<AlertEngine>>,
    webhook: Option<WebhookHandle>,
}

impl AlertService {
    /// Starts the evaluation task (on `tracker`) and the webhook sender; both stop when
    /// `shutdown` is cancelled.
    pub fn start(
        config: &AlertConfig,
        telemetry: TelemetryManager,
        events: Subscription,
        stage: &Stage,
    ) -> Result<Self, WebhookError> {
        let shutdown = stage.token();
        let settings = config.webhook();
        let webhook_url = settings.as_ref().map(|w| w.url.to_string());
        let webhook = match settings {
            Some(WebhookSettings { url, config }) => Some(Webhook::spawn(url, config, shutdown.clone())?),
            None => None,
        };
        let engine = Arc::new(Mutex::new(AlertEngine::new(config.rules.clone())));
        let service = Self { engine, webhook };
        info!(
            rules = service.engine.lock().rules().len(),
            interval = ?config.eval_interval,
            webhook = webhook_url,
            "alerting started"
        );
        // Subscribed before the task starts, so no event published from now on is missed.
        let evaluator = Evaluator { service: service.clone(), telemetry, interval: config.eval_interval };
        stage.spawn(evaluator.run(events, shutdown));
        // The webhook sender is the stage's too: the stage has stopped once it has exited.
        let sender = service.clone();
        stage.spawn(async move { sender.stopped().await });
        Ok(service)
    }

    /// Firing alerts, then those resolved within the retention; newest first within each.
    pub fn alerts(&self, now_ms: i64) -> Vec<Alert> {
        let mut alerts = self.engine.lock().alerts(now_ms);
        // Stable: keeps the engine's newest-first order inside each group.
        alerts.sort_by_key(|a| a.resolved_at_ms.is_some());
        alerts
    }

    pub fn firing_count(&self) -> usize {
        self.engine.lock().firing_count()
    }

    /// Resolves once the webhook sender has exited (at once without a webhook).
    pub async fn stopped(&self) {
        if let Some(webhook) = &self.webhook {
            webhook.stopped().await;
        }
    }
}

/// The one task that feeds and evaluates the engine.
struct Evaluator {
    service: AlertService,
    telemetry: TelemetryManager,
    interval: Duration,
}

impl Evaluator {
    async fn run(mut self, mut events: Subscription, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut listening = true;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {
                    // A pass over every worker: on a blocking thread, off the async ones that
                    // answer heartbeats.
                    self = match tokio::task::spawn_blocking(move || {
                        self.evaluate();
                        self
                    })
                    .await
                    {
                        Ok(evaluator) => evaluator,
                        Err(e) => {
                            warn!(error = %e, "alert evaluation failed; alerting stops");
                            break;
                        }
                    };
                }
                update = events.recv(), if listening => match update {
                    Some(Update::Event(e)) => self.on_event(e),
                    // Workers that left unheard of are forgotten; task ends missed are only
                    // missing from the failure rate.
                    Some(Update::Resync(fleet)) => {
                        let present: HashSet<&str> = fleet.workers.iter().map(|(w, _)| w.worker_id.as_str()).collect();
                        self.service.engine.lock().forget_workers_except(|id| present.contains(id));
                    }
                    None => listening = false,
                },
            }
        }
        info!("alerting stopped");
    }

    fn evaluate(&mut self) {
        let now = unix_ms();
        let mut observations = Vec::new();
        self.telemetry.for_each_worker(|info, t| observations.push(observation(info, t, now)));
        let events = {
            let mut engine = self.service.engine.lock();
            for obs in &observations {
                engine.observe_worker(obs);
            }
            engine.evaluate(now)
        };
        for event in &events {
            cloudai_alerts::log_event(event);
            if let Some(webhook) = &self.service.webhook {
                webhook.notify(event);
            }
        }
    }

    fn on_event(&mut self, event: ClusterEvent) {
        match event {
            ClusterEvent::WorkerInactive { worker_id } => {
                // Observed at once; it fires on the next tick.
                let obs = WorkerObservation {
                    worker_id: worker_id.to_string(),
                    at_ms: unix_ms(),
                    active: false,
                    cpu_usage: f64::NAN,
                    memory_usage: f64::NAN,
                    gpus: Vec::new(),
                };
                self.service.engine.lock().observe_worker(&obs);
            }
            ClusterEvent::WorkerUnregistered { worker_id, .. } => {
                // Left cleanly: not an outage, so its alerts resolve rather than fire.
                self.service.engine.lock().forget_worker(worker_id.as_str());
            }
            ClusterEvent::TaskFinished { status, .. } => {
                // A cancel is a person's choice, not a failure: left out of the rate.
                let failed = match status {
                    TaskStatus::Completed => false,
                    TaskStatus::Failed => true,
                    _ => return,
                };
                self.service.engine.lock().observe_task_end(unix_ms(), failed);
            }
            ClusterEvent::WorkerRegistered { .. }
            | ClusterEvent::WorkerActive { .. }
            | ClusterEvent::WorkerHealth { .. }
            | ClusterEvent::WorkerLost { .. } => {}
        }
    }
}

/// One worker's figures for the engine; figures the master does not have are unknown
/// (NaN / `None`), never zero.
fn observation(info: &WorkerInfo, t: &WorkerTelemetry, now_ms: i64) -> WorkerObservation {
    // Before its first heartbeat a worker's usage figures are placeholders.
    let reported = t.last_update > 0;
    let usage = |v: f64| if reported { v } else { f64::NAN };
    WorkerObservation {
        worker_id: info.worker_id.to_string(),
        at_ms: now_ms,
        active: t.is_active,
        cpu_usage: usage(t.cpu_usage),
        memory_usage: usage(t.memory_usage),
        gpus: t
            .gpus
            .iter()
            .map(|g| GpuObservation {
                index: g.index,
                memory_used_mb: g.memory_used_mb,
                memory_total_mb: g.memory_total_mb,
                temperature_c: g.temperature_c,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(raw: &str) -> reqwest::Url {
        reqwest::Url::parse(raw).expect("valid url")
    }

    fn seen(worker: &str, at_ms: i64, active: bool) -> WorkerObservation {
        WorkerObservation {
            worker_id: worker.to_string(),
            at_ms,
            active,
            cpu_usage: f64::NAN,
            memory_usage: f64::NAN,
            gpus: Vec::new(),
        }
    }

    #[test]
    fn firing_alerts_are_listed_before_resolved_ones() {
        let mut engine = AlertEngine::new(RuleSet::builtin());
        engine.observe_worker(&seen("a", 1_000, false));
        engine.evaluate(1_000);
        engine.observe_worker(&seen("b", 2_000, false));
        engine.evaluate(2_000);
        engine.observe_worker(&seen("b", 3_000, true));
        engine.evaluate(3_000);
        let service = AlertService { engine: Arc::new(Mutex::new(engine)), webhook: None };
        // b fired later, so the engine alone would list its resolved alert first.
        let listed: Vec<(Option<String>, bool)> = service
            .alerts(4_000)
            .into_iter()
            .map(|a| (a.key.worker_id, a.resolved_at_ms.is_some()))
            .collect();
        assert_eq!(listed, [(Some("a".to_string()), false), (Some("b".to_string()), true)]);
        assert_eq!(service.firing_count(), 1);
    }

    #[test]
    fn the_webhook_url_override_keeps_the_file_retry_settings() {
        let file = r#"{"webhook": {"url": "http://file.example:9000/hook", "max_attempts": 2}}"#;
        let rules = RuleSet::from_json(file).expect("valid rules");
        let mut config = AlertConfig { rules, ..AlertConfig::default() };
        let from_file = config.webhook().expect("the file's webhook");
        assert_eq!(from_file.url, url("http://file.example:9000/hook"));

        config.webhook_url = Some(url("http://override.example/hook"));
        let overridden = config.webhook().expect("a webhook");
        assert_eq!(overridden.url, url("http://override.example/hook"));
        assert_eq!(overridden.config.max_attempts, 2);

        let bare = AlertConfig { webhook_url: Some(url("http://x.example/")), ..AlertConfig::default() };
        assert_eq!(bare.webhook().map(|w| w.config), Some(WebhookConfig::default()));
        assert!(AlertConfig::default().webhook().is_none());
    }
}
