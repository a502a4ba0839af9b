//! `GET /api/alerts`: firing alerts, then recently resolved ones.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    Firing,
    Resolved,
}

impl AlertStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Firing => "firing",
            AlertStatus::Resolved => "resolved",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// One alert: a rule, the worker and GPU it applies to (when it does), and its state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Alert {
    /// The rule's name.
    pub rule: String,
    /// The worker, for per-worker rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = String)]
    pub worker_id: Option<String>,
    /// GPU index, for per-GPU rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = u32)]
    pub gpu: Option<u32>,
    pub status: AlertStatus,
    pub severity: Severity,
    /// The latest observed value (the last one before resolving, once resolved).
    pub value: f64,
    pub threshold: f64,
    /// Unix milliseconds: when the condition started to hold.
    pub since_ms: i64,
    pub fired_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = i64)]
    pub resolved_at_ms: Option<i64>,
    pub message: String,
}

/// The answer of `GET /api/alerts`: firing first, then resolved, newest first in each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AlertList {
    pub alerts: Vec<Alert>,
}

impl From<cloudai_alerts::AlertStatus> for AlertStatus {
    fn from(s: cloudai_alerts::AlertStatus) -> Self {
        match s {
            cloudai_alerts::AlertStatus::Firing => AlertStatus::Firing,
            cloudai_alerts::AlertStatus::Resolved => AlertStatus::Resolved,
        }
    }
}

impl From<cloudai_alerts::Severity> for Severity {
    fn from(s: cloudai_alerts::Severity) -> Self {
        match s {
            cloudai_alerts::Severity::Info => Severity::Info,
            cloudai_alerts::Severity::Warning => Severity::Warning,
            cloudai_alerts::Severity::Critical => Severity::Critical,
        }
    }
}

impl From<cloudai_alerts::Alert> for Alert {
    fn from(a: cloudai_alerts::Alert) -> Self {
        Self {
            rule: a.key.rule,
            worker_id: a.key.worker_id,
            gpu: a.key.gpu,
            status: a.status.into(),
            severity: a.severity.into(),
            value: a.value,
            threshold: a.threshold,
            since_ms: a.since_ms,
            fired_at_ms: a.fired_at_ms,
            resolved_at_ms: a.resolved_at_ms,
            message: a.message,
        }
    }
}
