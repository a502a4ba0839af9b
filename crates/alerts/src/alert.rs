//! What the engine reports: alerts (for the API) and transitions (for logs and webhooks).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Identifies one alert: the rule plus the labels it applies to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    pub rule: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub worker_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub gpu: Option<u32>,
}

impl fmt::Display for AlertKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.rule)?;
        match (&self.worker_id, self.gpu) {
            (Some(w), Some(g)) => write!(f, "{{worker_id={w},gpu={g}}}"),
            (Some(w), None) => write!(f, "{{worker_id={w}}}"),
            (None, Some(g)) => write!(f, "{{gpu={g}}}"),
            (None, None) => Ok(()),
        }
    }
}

/// How bad an alert is; each rule sets it for the alerts it raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    /// The rule file's spelling.
    pub(crate) fn parse(s: &str) -> Option<Severity> {
        match s {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

/// One alert as listed by `GET /api/alerts`. Times are Unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    #[serde(flatten)]
    pub key: AlertKey,
    pub status: AlertStatus,
    pub severity: Severity,
    /// The latest observed value (the last one before resolving, once resolved).
    pub value: f64,
    pub threshold: f64,
    /// When the condition started to hold.
    pub since_ms: i64,
    pub fired_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub resolved_at_ms: Option<i64>,
    pub message: String,
}

/// A transition returned by [`crate::AlertEngine::evaluate`]; its JSON is the webhook body:
/// `{"status":"firing"|"resolved","alert":{...}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    pub status: AlertStatus,
    pub alert: Alert,
}

/// Writes an event to the log: firing at WARN (ERROR for critical), resolved at INFO.
pub fn log_event(event: &AlertEvent) {
    let a = &event.alert;
    let key = a.key.to_string();
    match (event.status, a.severity) {
        (AlertStatus::Firing, Severity::Critical) => {
            tracing::error!(alert = %key, value = a.value, threshold = a.threshold, "alert firing: {}", a.message)
        }
        (AlertStatus::Firing, _) => {
            tracing::warn!(alert = %key, value = a.value, threshold = a.threshold, "alert firing: {}", a.message)
        }
        (AlertStatus::Resolved, _) => {
            tracing::info!(alert = %key, value = a.value, "alert resolved: {}", a.message)
        }
    }
}
