//! Alerting for the CloudAI master.
//!
//! - [`RuleSet`]: rules from `alerts.json` ([`RuleSet::load`]) or [`RuleSet::builtin`].
//! - [`AlertEngine`]: pure and synchronous. Feed it worker telemetry and task ends, call
//!   [`AlertEngine::evaluate`] on a tick to get firing/resolved transitions, and
//!   [`AlertEngine::alerts`] for `GET /api/alerts`.
//! - [`Webhook`]: a background task POSTing each [`AlertEvent`] as JSON with retries;
//!   [`WebhookHandle::notify`] never blocks (bounded queue, oldest dropped first).
//!
//! Without a `rules` key the built-in rules apply. Durations are humantime strings
//! (`"90s"`, `"5m"`); `for` defaults to 0, `severity` to `warning`, `enabled` to true.
//! Thresholds are strict (`value > threshold`): percent for CPU, memory and GPU memory,
//! °C for GPU temperature, a fraction for the task failure rate. Example (the built-in
//! rules plus a webhook):
//!
//! ```json
#![doc = include_str!("../alerts.example.json")]
//! ```
#![forbid(unsafe_code)]

mod alert;
mod engine;
mod rules;
mod webhook;

pub use alert::{Alert, AlertEvent, AlertKey, AlertStatus, Severity, log_event};
pub use engine::{AlertEngine, GpuObservation, WorkerObservation};
pub use rules::{ConfigError, Rule, RuleKind, RuleSet, WebhookSettings};
pub use webhook::{Webhook, WebhookConfig, WebhookError, WebhookHandle, WebhookStats};
