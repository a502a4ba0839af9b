//! The rules engine: pure and synchronous, time passed in by the caller.
//!
//! Observations move each condition (rule + labels) through [`Phase`]; [`AlertEngine::evaluate`]
//! turns pendings that held long enough into firings and clearings into resolutions, so
//! transitions come out in one place, on the caller's tick.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use crate::alert::{Alert, AlertEvent, AlertKey, AlertStatus};
use crate::rules::{Rule, RuleKind, RuleSet};

/// Cap on task outcomes kept for failure-rate rules, whatever their window.
const MAX_TASK_OUTCOMES: usize = 100_000;

/// One telemetry sample of a worker, as the master sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerObservation {
    pub worker_id: String,
    /// Unix milliseconds.
    pub at_ms: i64,
    /// False once the master considers the worker gone (missed heartbeats).
    pub active: bool,
    /// Percent; NaN means unknown.
    pub cpu_usage: f64,
    /// Percent; NaN means unknown.
    pub memory_usage: f64,
    pub gpus: Vec<GpuObservation>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct GpuObservation {
    pub index: u32,
    pub memory_used_mb: u64,
    /// 0 means unknown.
    pub memory_total_mb: u64,
    /// `None` when the driver does not report it.
    pub temperature_c: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// Holding since `since_ms`, not yet for the rule's `for`.
    Pending {
        since_ms: i64,
    },
    Firing {
        since_ms: i64,
        fired_at_ms: i64,
    },
    /// Stopped holding at `at_ms` while firing; resolved by the next `evaluate`, unless it
    /// holds again first.
    Clearing {
        since_ms: i64,
        fired_at_ms: i64,
        at_ms: i64,
    },
}

#[derive(Debug, Clone, Copy)]
struct Cond {
    value: f64,
    phase: Phase,
}

/// A worker condition: (index into the engine's rules, GPU index).
type CondKey = (usize, Option<u32>);

#[derive(Debug)]
struct WorkerState {
    last_at_ms: i64,
    /// Dropped by `evaluate` once its alerts have resolved.
    forgotten: bool,
    conds: BTreeMap<CondKey, Cond>,
}

#[derive(Debug)]
pub struct AlertEngine {
    /// Enabled rules only.
    rules: Vec<Rule>,
    resolved_retention_ms: i64,
    max_resolved: usize,
    workers: HashMap<String, WorkerState>,
    /// Cluster-wide conditions (task failure rate), by rule index.
    cluster: BTreeMap<usize, Cond>,
    /// (at_ms, failed), in arrival order.
    tasks: VecDeque<(i64, bool)>,
    max_window_ms: i64,
    /// Oldest first, at most `max_resolved`.
    resolved: VecDeque<Alert>,
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// Applies one observation to a condition. `value: None` keeps the previous value (the
/// labels disappeared, e.g. a GPU no longer reported).
fn apply<K: Ord>(map: &mut BTreeMap<K, Cond>, key: K, holding: bool, value: Option<f64>, at_ms: i64) {
    let Some(cond) = map.get_mut(&key) else {
        if holding {
            map.insert(
                key,
                Cond { value: value.unwrap_or(f64::NAN), phase: Phase::Pending { since_ms: at_ms } },
            );
        }
        return;
    };
    if let Some(v) = value {
        cond.value = v;
    }
    cond.phase = match (cond.phase, holding) {
        (Phase::Clearing { since_ms, fired_at_ms, .. }, true) => Phase::Firing { since_ms, fired_at_ms },
        (Phase::Pending { .. }, false) => {
            map.remove(&key);
            return;
        }
        (Phase::Firing { since_ms, fired_at_ms }, false) => Phase::Clearing { since_ms, fired_at_ms, at_ms },
        (phase, _) => phase,
    };
}

fn message(rule: &Rule, key: &AlertKey, value: f64) -> String {
    let worker = key.worker_id.as_deref().unwrap_or("?");
    let gpu = key.gpu.unwrap_or(0);
    let t = rule.threshold;
    let held = if rule.for_.is_zero() {
        String::new()
    } else {
        format!(" for {}", humantime::format_duration(rule.for_))
    };
    match rule.kind {
        RuleKind::WorkerInactive => format!("worker {worker} is inactive"),
        RuleKind::CpuUsage => format!("cpu usage {value:.1}% above {t}%{held} on worker {worker}"),
        RuleKind::MemoryUsage => format!("memory usage {value:.1}% above {t}%{held} on worker {worker}"),
        RuleKind::GpuMemoryUsage => {
            format!("gpu {gpu} memory usage {value:.1}% above {t}%{held} on worker {worker}")
        }
        RuleKind::GpuTemperature => {
            format!("gpu {gpu} temperature {value:.0} °C above {t} °C{held} on worker {worker}")
        }
        RuleKind::TaskFailureRate => format!(
            "task failure rate {value:.2} above {t} over the last {} (at least {} finished)",
            humantime::format_duration(rule.window),
            rule.min_count
        ),
    }
}

fn build_alert(rule: &Rule, key: AlertKey, cond: &Cond) -> Alert {
    let (since_ms, fired_at_ms, status, resolved_at_ms) = match cond.phase {
        // Only reached for pendings about to fire; the caller patches `fired_at_ms`.
        Phase::Pending { since_ms } => (since_ms, since_ms, AlertStatus::Firing, None),
        Phase::Firing { since_ms, fired_at_ms } => (since_ms, fired_at_ms, AlertStatus::Firing, None),
        Phase::Clearing { since_ms, fired_at_ms, at_ms } => {
            (since_ms, fired_at_ms, AlertStatus::Resolved, Some(at_ms))
        }
    };
    Alert {
        message: message(rule, &key, cond.value),
        key,
        status,
        severity: rule.severity,
        value: cond.value,
        threshold: rule.threshold,
        since_ms,
        fired_at_ms,
        resolved_at_ms,
    }
}

/// Moves one condition on at `now_ms`; returns the event, if any, and whether to keep it.
fn advance(
    rule: &Rule,
    key: impl FnOnce() -> AlertKey,
    cond: &mut Cond,
    now_ms: i64,
) -> (Option<Alert>, bool) {
    match cond.phase {
        Phase::Pending { since_ms } if now_ms.saturating_sub(since_ms) >= millis(rule.for_) => {
            cond.phase = Phase::Firing { since_ms, fired_at_ms: now_ms };
            (Some(build_alert(rule, key(), cond)), true)
        }
        Phase::Clearing { .. } => (Some(build_alert(rule, key(), cond)), false),
        _ => (None, true),
    }
}

impl AlertEngine {
    pub fn new(rule_set: RuleSet) -> AlertEngine {
        let rules: Vec<Rule> = rule_set.rules.into_iter().filter(|r| r.enabled).collect();
        let max_window_ms = rules
            .iter()
            .filter(|r| r.kind == RuleKind::TaskFailureRate)
            .map(|r| millis(r.window))
            .max()
            .unwrap_or(0);
        AlertEngine {
            rules,
            resolved_retention_ms: millis(rule_set.resolved_retention),
            max_resolved: rule_set.max_resolved.max(1),
            workers: HashMap::new(),
            cluster: BTreeMap::new(),
            tasks: VecDeque::new(),
            max_window_ms,
            resolved: VecDeque::new(),
        }
    }

    /// The enabled rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Records one sample. An inactive worker only feeds `worker_inactive`: its other
    /// alerts clear, since its last figures are stale.
    pub fn observe_worker(&mut self, obs: &WorkerObservation) {
        let Self { rules, workers, .. } = self;
        let state = workers.entry(obs.worker_id.clone()).or_insert_with(|| WorkerState {
            last_at_ms: obs.at_ms,
            forgotten: false,
            conds: BTreeMap::new(),
        });
        state.last_at_ms = obs.at_ms;
        state.forgotten = false;
        let at = obs.at_ms;
        let conds = &mut state.conds;
        let mut seen = BTreeSet::new();
        // Records a figure; unknown ones (NaN) keep the condition as it was.
        let measure = |conds: &mut BTreeMap<CondKey, Cond>, key: CondKey, rule: &Rule, v: Option<f64>| {
            if let Some(v) = v.filter(|v| v.is_finite()) {
                apply(conds, key, v > rule.threshold, Some(v), at);
            }
            key
        };
        for (i, rule) in rules.iter().enumerate() {
            match rule.kind {
                RuleKind::WorkerInactive => {
                    let v = if obs.active { 0.0 } else { 1.0 };
                    apply(conds, (i, None), !obs.active, Some(v), at);
                    seen.insert((i, None));
                }
                _ if !obs.active => {}
                RuleKind::CpuUsage => {
                    seen.insert(measure(conds, (i, None), rule, Some(obs.cpu_usage)));
                }
                RuleKind::MemoryUsage => {
                    seen.insert(measure(conds, (i, None), rule, Some(obs.memory_usage)));
                }
                RuleKind::GpuMemoryUsage => {
                    for g in &obs.gpus {
                        let pct = (g.memory_total_mb > 0)
                            .then(|| g.memory_used_mb as f64 * 100.0 / g.memory_total_mb as f64);
                        seen.insert(measure(conds, (i, Some(g.index)), rule, pct));
                    }
                }
                RuleKind::GpuTemperature => {
                    for g in &obs.gpus {
                        seen.insert(measure(conds, (i, Some(g.index)), rule, g.temperature_c));
                    }
                }
                RuleKind::TaskFailureRate => {}
            }
        }
        let gone: Vec<CondKey> = conds.keys().filter(|k| !seen.contains(k)).copied().collect();
        for key in gone {
            apply(conds, key, false, None, at);
        }
    }

    /// Records a task reaching a final state (succeeded or failed; cancelled tasks are
    /// better left out).
    pub fn observe_task_end(&mut self, at_ms: i64, failed: bool) {
        if self.max_window_ms == 0 {
            return;
        }
        if self.tasks.len() >= MAX_TASK_OUTCOMES {
            self.tasks.pop_front();
        }
        self.tasks.push_back((at_ms, failed));
    }

    /// Clears a removed worker's alerts; they resolve on the next `evaluate`.
    pub fn forget_worker(&mut self, worker_id: &str) {
        let Some(state) = self.workers.get_mut(worker_id) else { return };
        state.forgotten = true;
        let keys: Vec<CondKey> = state.conds.keys().copied().collect();
        for key in keys {
            apply(&mut state.conds, key, false, None, state.last_at_ms);
        }
    }

    /// Forgets every worker `present` says is gone (after events about them were missed).
    pub fn forget_workers_except(&mut self, present: impl Fn(&str) -> bool) {
        let gone: Vec<String> = self.workers.keys().filter(|id| !present(id)).cloned().collect();
        for worker_id in gone {
            self.forget_worker(&worker_id);
        }
    }

    fn observe_failure_rates(&mut self, now_ms: i64) {
        let oldest = now_ms.saturating_sub(self.max_window_ms);
        while self.tasks.front().is_some_and(|&(at, _)| at < oldest) {
            self.tasks.pop_front();
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.kind != RuleKind::TaskFailureRate {
                continue;
            }
            let from = now_ms.saturating_sub(millis(rule.window));
            let (finished, failed) = self
                .tasks
                .iter()
                .filter(|&&(at, _)| at >= from && at <= now_ms)
                .fold((0u64, 0u64), |(n, f), &(_, failed)| (n + 1, f + u64::from(failed)));
            let rate = if finished == 0 { 0.0 } else { failed as f64 / finished as f64 };
            let holding = finished >= u64::from(rule.min_count) && rate > rule.threshold;
            apply(&mut self.cluster, i, holding, Some(rate), now_ms);
        }
    }

    /// Returns the transitions since the last call: pendings that held for their rule's
    /// `for` fire, cleared alerts resolve. Call it on a periodic tick.
    pub fn evaluate(&mut self, now_ms: i64) -> Vec<AlertEvent> {
        self.observe_failure_rates(now_ms);
        let mut alerts = Vec::new();
        let rules = &self.rules;
        for (worker_id, state) in &mut self.workers {
            state.conds.retain(|&(i, gpu), cond| {
                let key =
                    || AlertKey { rule: rules[i].name.clone(), worker_id: Some(worker_id.clone()), gpu };
                let (alert, keep) = advance(&rules[i], key, cond, now_ms);
                alerts.extend(alert);
                keep
            });
        }
        self.workers.retain(|_, s| !(s.forgotten && s.conds.is_empty()));
        self.cluster.retain(|&i, cond| {
            let key = || AlertKey { rule: rules[i].name.clone(), worker_id: None, gpu: None };
            let (alert, keep) = advance(&rules[i], key, cond, now_ms);
            alerts.extend(alert);
            keep
        });
        // Deterministic order for logs, webhooks and tests.
        alerts
            .sort_by(|a, b| (a.resolved_at_ms.is_none(), &a.key).cmp(&(b.resolved_at_ms.is_none(), &b.key)));
        let events: Vec<AlertEvent> =
            alerts.into_iter().map(|alert| AlertEvent { status: alert.status, alert }).collect();
        for e in events.iter().filter(|e| e.status == AlertStatus::Resolved) {
            if self.resolved.len() >= self.max_resolved {
                self.resolved.pop_front();
            }
            self.resolved.push_back(e.alert.clone());
        }
        let keep_from = now_ms.saturating_sub(self.resolved_retention_ms);
        self.resolved.retain(|a| a.resolved_at_ms.unwrap_or(i64::MAX) >= keep_from);
        events
    }

    /// Firing alerts and those resolved within the retention, newest (by firing time) first.
    pub fn alerts(&self, now_ms: i64) -> Vec<Alert> {
        let rules = &self.rules;
        let firing = |cond: &Cond| matches!(cond.phase, Phase::Firing { .. } | Phase::Clearing { .. });
        let mut out: Vec<Alert> = Vec::new();
        for (worker_id, state) in &self.workers {
            for (&(i, gpu), cond) in state.conds.iter().filter(|(_, c)| firing(c)) {
                let key = AlertKey { rule: rules[i].name.clone(), worker_id: Some(worker_id.clone()), gpu };
                out.push(self.as_firing(&rules[i], key, cond));
            }
        }
        for (&i, cond) in self.cluster.iter().filter(|(_, c)| firing(c)) {
            let key = AlertKey { rule: rules[i].name.clone(), worker_id: None, gpu: None };
            out.push(self.as_firing(&rules[i], key, cond));
        }
        let keep_from = now_ms.saturating_sub(self.resolved_retention_ms);
        out.extend(
            self.resolved.iter().filter(|a| a.resolved_at_ms.unwrap_or(i64::MAX) >= keep_from).cloned(),
        );
        out.sort_by(|a, b| b.fired_at_ms.cmp(&a.fired_at_ms).then_with(|| a.key.cmp(&b.key)));
        out
    }

    /// A clearing alert is still firing until `evaluate` resolves it.
    fn as_firing(&self, rule: &Rule, key: AlertKey, cond: &Cond) -> Alert {
        let mut alert = build_alert(rule, key, cond);
        alert.status = AlertStatus::Firing;
        alert.resolved_at_ms = None;
        alert
    }

    /// Number of alerts currently firing.
    pub fn firing_count(&self) -> usize {
        let firing = |c: &Cond| matches!(c.phase, Phase::Firing { .. } | Phase::Clearing { .. });
        self.workers.values().flat_map(|s| s.conds.values()).filter(|c| firing(c)).count()
            + self.cluster.values().filter(|c| firing(c)).count()
    }
}

#[cfg(test)]
mod tests;
