//! The rule file: parsed from JSON into raw structs, then validated into [`RuleSet`] so that
//! every error names the rule and the field at fault.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::alert::Severity;
use crate::webhook::WebhookConfig;

/// Why a rule file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read alert rules from {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed alert rules")]
    Json(#[source] serde_json::Error),
    #[error("alert rule {rule:?}: field {field:?}: {reason}")]
    Invalid { rule: String, field: &'static str, reason: String },
}

/// What a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleKind {
    /// A worker the master reports as inactive. No threshold.
    WorkerInactive,
    /// Worker CPU usage in percent.
    CpuUsage,
    /// Worker memory usage in percent.
    MemoryUsage,
    /// Per GPU: `memory_used / memory_total` in percent.
    GpuMemoryUsage,
    /// Per GPU: temperature in °C.
    GpuTemperature,
    /// Cluster-wide: failed / finished tasks over `window`, a fraction in `[0, 1)`.
    TaskFailureRate,
}

impl RuleKind {
    const ALL: [(&'static str, RuleKind); 6] = [
        ("worker_inactive", RuleKind::WorkerInactive),
        ("cpu_usage", RuleKind::CpuUsage),
        ("memory_usage", RuleKind::MemoryUsage),
        ("gpu_memory_usage", RuleKind::GpuMemoryUsage),
        ("gpu_temperature", RuleKind::GpuTemperature),
        ("task_failure_rate", RuleKind::TaskFailureRate),
    ];

    fn parse(s: &str) -> Option<RuleKind> {
        Self::ALL.iter().find(|(name, _)| *name == s).map(|(_, kind)| *kind)
    }

    /// Inclusive bounds a threshold must lie in; `None` for kinds without a threshold.
    fn threshold_range(self) -> Option<(f64, f64)> {
        match self {
            RuleKind::WorkerInactive => None,
            RuleKind::CpuUsage | RuleKind::MemoryUsage | RuleKind::GpuMemoryUsage => Some((0.0, 100.0)),
            RuleKind::GpuTemperature => Some((-273.0, 1000.0)),
            RuleKind::TaskFailureRate => Some((0.0, 1.0)),
        }
    }
}

/// One validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub kind: RuleKind,
    /// Fires when the watched value is strictly above this (0 for `worker_inactive`).
    pub threshold: f64,
    /// How long the condition must hold continuously before the alert fires.
    pub for_: Duration,
    pub severity: Severity,
    pub enabled: bool,
    /// `task_failure_rate` only: the sliding window of task ends considered.
    pub window: Duration,
    /// `task_failure_rate` only: fewer finished tasks than this in the window never fire.
    pub min_count: u32,
}

impl Rule {
    fn new(name: &str, kind: RuleKind, threshold: f64, for_secs: u64, severity: Severity) -> Rule {
        Rule {
            name: name.to_owned(),
            kind,
            threshold,
            for_: Duration::from_secs(for_secs),
            severity,
            enabled: true,
            window: DEFAULT_WINDOW,
            min_count: DEFAULT_MIN_COUNT,
        }
    }
}

/// The webhook target from the file; the master spawns [`crate::Webhook`] with it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookSettings {
    pub url: reqwest::Url,
    pub config: WebhookConfig,
}

/// The whole alerts configuration (`alerts.json`).
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    pub rules: Vec<Rule>,
    /// How long resolved alerts stay listed by [`crate::AlertEngine::alerts`].
    pub resolved_retention: Duration,
    /// Cap on resolved alerts kept, whatever the retention.
    pub max_resolved: usize,
    pub webhook: Option<WebhookSettings>,
}

const DEFAULT_WINDOW: Duration = Duration::from_secs(600);
const DEFAULT_MIN_COUNT: u32 = 5;
const DEFAULT_RETENTION: Duration = Duration::from_secs(3600);
const DEFAULT_MAX_RESOLVED: usize = 1000;

impl Default for RuleSet {
    fn default() -> Self {
        RuleSet::builtin()
    }
}

impl RuleSet {
    /// The defaults used when there is no file, or the file has no `rules` key.
    pub fn builtin() -> RuleSet {
        RuleSet {
            rules: builtin_rules(),
            resolved_retention: DEFAULT_RETENTION,
            max_resolved: DEFAULT_MAX_RESOLVED,
            webhook: None,
        }
    }

    pub fn from_json(text: &str) -> Result<RuleSet, ConfigError> {
        let raw: RawFile = serde_json::from_str(text).map_err(ConfigError::Json)?;
        raw.validate()
    }

    pub fn load(path: &Path) -> Result<RuleSet, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        RuleSet::from_json(&text)
    }
}

fn builtin_rules() -> Vec<Rule> {
    use RuleKind::*;
    use Severity::*;
    vec![
        Rule::new("worker_inactive", WorkerInactive, 0.0, 0, Critical),
        Rule::new("cpu_high", CpuUsage, 90.0, 300, Warning),
        Rule::new("memory_high", MemoryUsage, 90.0, 300, Warning),
        Rule::new("gpu_memory_high", GpuMemoryUsage, 95.0, 300, Warning),
        Rule::new("gpu_temperature_high", GpuTemperature, 85.0, 120, Critical),
        Rule::new("task_failure_rate", TaskFailureRate, 0.5, 0, Warning),
    ]
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    rules: Option<Vec<RawRule>>,
    resolved_retention: Option<String>,
    max_resolved: Option<usize>,
    webhook: Option<RawWebhook>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: String,
    kind: String,
    threshold: Option<f64>,
    #[serde(rename = "for")]
    for_: Option<String>,
    severity: Option<String>,
    enabled: Option<bool>,
    window: Option<String>,
    min_count: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWebhook {
    url: String,
    max_queue: Option<usize>,
    initial_backoff: Option<String>,
    max_backoff: Option<String>,
    max_attempts: Option<u32>,
    timeout: Option<String>,
}

fn invalid(rule: &str, field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { rule: rule.to_owned(), field, reason: reason.into() }
}

fn duration(
    rule: &str,
    field: &'static str,
    text: Option<&str>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match text {
        None => Ok(default),
        Some(t) => humantime::parse_duration(t).map_err(|e| invalid(rule, field, format!("{t:?}: {e}"))),
    }
}

impl RawFile {
    fn validate(self) -> Result<RuleSet, ConfigError> {
        // File-level fields are reported against a pseudo rule name.
        const FILE: &str = "<file>";
        let resolved_retention =
            duration(FILE, "resolved_retention", self.resolved_retention.as_deref(), DEFAULT_RETENTION)?;
        let max_resolved = self.max_resolved.unwrap_or(DEFAULT_MAX_RESOLVED);
        if max_resolved == 0 {
            return Err(invalid(FILE, "max_resolved", "must be at least 1"));
        }
        let rules = match self.rules {
            None => builtin_rules(),
            Some(raw) => {
                let mut names = HashSet::new();
                let mut rules = Vec::with_capacity(raw.len());
                for r in raw {
                    let rule = r.validate()?;
                    if !names.insert(rule.name.clone()) {
                        return Err(invalid(&rule.name, "name", "duplicate rule name"));
                    }
                    rules.push(rule);
                }
                rules
            }
        };
        let webhook = self.webhook.map(RawWebhook::validate).transpose()?;
        Ok(RuleSet { rules, resolved_retention, max_resolved, webhook })
    }
}

impl RawRule {
    fn validate(self) -> Result<Rule, ConfigError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid("<unnamed>", "name", "must not be empty"));
        }
        let kind = RuleKind::parse(&self.kind).ok_or_else(|| {
            let known: Vec<&str> = RuleKind::ALL.iter().map(|(n, _)| *n).collect();
            invalid(
                &name,
                "kind",
                format!("unknown kind {:?}, expected one of {}", self.kind, known.join(", ")),
            )
        })?;
        let threshold = match (kind.threshold_range(), self.threshold) {
            (None, None) => 0.0,
            (None, Some(_)) => return Err(invalid(&name, "threshold", "not used by kind worker_inactive")),
            (Some(_), None) => return Err(invalid(&name, "threshold", "required")),
            (Some((lo, hi)), Some(t)) if !(lo..=hi).contains(&t) => {
                return Err(invalid(&name, "threshold", format!("{t} is outside {lo}..={hi}")));
            }
            (Some(_), Some(t)) => t,
        };
        let for_ = duration(&name, "for", self.for_.as_deref(), Duration::ZERO)?;
        let severity = match self.severity.as_deref() {
            None => Severity::Warning,
            Some(s) => Severity::parse(s).ok_or_else(|| {
                invalid(
                    &name,
                    "severity",
                    format!("unknown severity {s:?}, expected info, warning or critical"),
                )
            })?,
        };
        let is_rate = kind == RuleKind::TaskFailureRate;
        if !is_rate && self.window.is_some() {
            return Err(invalid(&name, "window", "only used by kind task_failure_rate"));
        }
        if !is_rate && self.min_count.is_some() {
            return Err(invalid(&name, "min_count", "only used by kind task_failure_rate"));
        }
        let window = duration(&name, "window", self.window.as_deref(), DEFAULT_WINDOW)?;
        if window.is_zero() {
            return Err(invalid(&name, "window", "must be positive"));
        }
        let min_count = self.min_count.unwrap_or(DEFAULT_MIN_COUNT);
        if min_count == 0 {
            return Err(invalid(&name, "min_count", "must be at least 1"));
        }
        Ok(Rule {
            name,
            kind,
            threshold,
            for_,
            severity,
            enabled: self.enabled.unwrap_or(true),
            window,
            min_count,
        })
    }
}

impl RawWebhook {
    fn validate(self) -> Result<WebhookSettings, ConfigError> {
        const HOOK: &str = "<webhook>";
        let url = reqwest::Url::parse(&self.url)
            .map_err(|e| invalid(HOOK, "url", format!("{:?}: {e}", self.url)))?;
        // The workspace builds reqwest without TLS.
        if url.scheme() != "http" {
            return Err(invalid(HOOK, "url", format!("scheme {:?} unsupported, only http", url.scheme())));
        }
        let d = WebhookConfig::default();
        let config = WebhookConfig {
            max_queue: self.max_queue.unwrap_or(d.max_queue),
            initial_backoff: duration(
                HOOK,
                "initial_backoff",
                self.initial_backoff.as_deref(),
                d.initial_backoff,
            )?,
            max_backoff: duration(HOOK, "max_backoff", self.max_backoff.as_deref(), d.max_backoff)?,
            max_attempts: self.max_attempts.unwrap_or(d.max_attempts),
            timeout: duration(HOOK, "timeout", self.timeout.as_deref(), d.timeout)?,
        };
        if config.max_queue == 0 {
            return Err(invalid(HOOK, "max_queue", "must be at least 1"));
        }
        if config.max_attempts == 0 {
            return Err(invalid(HOOK, "max_attempts", "must be at least 1"));
        }
        if config.timeout.is_zero() {
            return Err(invalid(HOOK, "timeout", "must be positive"));
        }
        Ok(WebhookSettings { url, config })
    }
}

#[cfg(test)]
mod tests;
