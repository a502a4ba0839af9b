use super::*;
use crate::alert::AlertStatus::{Firing, Resolved};

const MIN: i64 = 60_000;

fn engine(rules: &str) -> AlertEngine {
    AlertEngine::new(RuleSet::from_json(&format!(r#"{{ "rules": [ {rules} ] }}"#)).unwrap())
}

fn worker(id: &str, at_ms: i64, cpu: f64, mem: f64) -> WorkerObservation {
    WorkerObservation {
        worker_id: id.into(),
        at_ms,
        active: true,
        cpu_usage: cpu,
        memory_usage: mem,
        gpus: vec![],
    }
}

fn gpu(index: u32, used: u64, total: u64, temp: Option<f64>) -> GpuObservation {
    GpuObservation { index, memory_used_mb: used, memory_total_mb: total, temperature_c: temp }
}

fn key(rule: &str, worker: Option<&str>, gpu: Option<u32>) -> AlertKey {
    AlertKey { rule: rule.into(), worker_id: worker.map(Into::into), gpu }
}

fn summary(events: &[AlertEvent]) -> Vec<(AlertStatus, String)> {
    events.iter().map(|e| (e.status, e.alert.key.to_string())).collect()
}

#[test]
fn cpu_and_memory_fire_only_after_holding_for_the_duration_then_resolve() {
    for (rule, kind) in [("cpu", "cpu_usage"), ("mem", "memory_usage")] {
        let mut e =
            engine(&format!(r#"{{ "name": "{rule}", "kind": "{kind}", "threshold": 90, "for": "5m" }}"#));
        let sample =
            |at, v| if kind == "cpu_usage" { worker("w1", at, v, 0.0) } else { worker("w1", at, 0.0, v) };
        e.observe_worker(&sample(0, 95.0));
        assert!(e.evaluate(0).is_empty());
        e.observe_worker(&sample(4 * MIN, 99.0));
        assert!(e.evaluate(5 * MIN - 1).is_empty(), "{rule}: pending until 5m have passed");
        assert!(e.alerts(5 * MIN - 1).is_empty(), "{rule}: pending alerts are not listed");
        let events = e.evaluate(5 * MIN);
        assert_eq!(summary(&events), [(Firing, format!("{rule}{{worker_id=w1}}"))]);
        let a = &events[0].alert;
        assert_eq!((a.value, a.threshold, a.since_ms, a.fired_at_ms), (99.0, 90.0, 0, 5 * MIN));
        assert!(a.message.contains("99.0% above 90% for 5m on worker w1"), "{}", a.message);
        assert!(e.evaluate(6 * MIN).is_empty(), "{rule}: firing is reported once");
        assert_eq!(e.firing_count(), 1);

        e.observe_worker(&sample(7 * MIN, 90.0)); // not strictly above
        let events = e.evaluate(7 * MIN + 1);
        assert_eq!(summary(&events), [(Resolved, format!("{rule}{{worker_id=w1}}"))]);
        assert_eq!(events[0].alert.resolved_at_ms, Some(7 * MIN));
        assert_eq!(events[0].alert.value, 90.0);
        assert!(e.evaluate(8 * MIN).is_empty());
        let listed = e.alerts(8 * MIN);
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, Resolved);
        assert_eq!(e.firing_count(), 0);
    }
}

#[test]
fn an_interruption_restarts_the_pending_period() {
    let mut e = engine(r#"{ "name": "cpu", "kind": "cpu_usage", "threshold": 90, "for": "5m" }"#);
    e.observe_worker(&worker("w1", 0, 95.0, 0.0));
    e.observe_worker(&worker("w1", MIN, 10.0, 0.0));
    e.observe_worker(&worker("w1", 2 * MIN, 95.0, 0.0));
    e.observe_worker(&worker("w1", 3 * MIN, f64::NAN, 0.0)); // unknown: no change
    assert!(e.evaluate(6 * MIN).is_empty());
    let events = e.evaluate(7 * MIN);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].alert.since_ms, 2 * MIN);
}

#[test]
fn a_dip_between_two_ticks_does_not_resolve_if_it_holds_again() {
    let mut e = engine(r#"{ "name": "cpu", "kind": "cpu_usage", "threshold": 90 }"#);
    e.observe_worker(&worker("w1", 0, 95.0, 0.0));
    assert_eq!(e.evaluate(0).len(), 1);
    e.observe_worker(&worker("w1", 1000, 10.0, 0.0));
    e.observe_worker(&worker("w1", 2000, 95.0, 0.0));
    assert!(e.evaluate(3000).is_empty());
    assert_eq!(e.alerts(3000)[0].status, Firing);
}

#[test]
fn gpu_memory_is_labelled_per_gpu() {
    let mut e = engine(r#"{ "name": "gpumem", "kind": "gpu_memory_usage", "threshold": 95, "for": "1m" }"#);
    let with_gpus = |at, gpus| WorkerObservation { gpus, ..worker("w1", at, 0.0, 0.0) };
    let gpus = vec![gpu(0, 1000, 16000, None), gpu(1, 15800, 16000, None), gpu(2, 10, 0, None)];
    e.observe_worker(&with_gpus(0, gpus.clone()));
    e.observe_worker(&worker("w2", 0, 0.0, 0.0));
    let events = e.evaluate(MIN);
    assert_eq!(summary(&events), [(Firing, "gpumem{worker_id=w1,gpu=1}".to_string())]);
    assert_eq!(events[0].alert.key, key("gpumem", Some("w1"), Some(1)));
    assert!((events[0].alert.value - 98.75).abs() < 1e-9);
    assert!(events[0].alert.message.contains("gpu 1 memory usage 98.8%"), "{}", events[0].alert.message);
    // GPU 1 no longer reported: its alert resolves.
    e.observe_worker(&with_gpus(2 * MIN, vec![gpus[0].clone()]));
    assert_eq!(summary(&e.evaluate(2 * MIN)), [(Resolved, "gpumem{worker_id=w1,gpu=1}".to_string())]);
}

#[test]
fn gpu_temperature_fires_after_its_duration_and_missing_readings_change_nothing() {
    let mut e = engine(r#"{ "name": "hot", "kind": "gpu_temperature", "threshold": 85, "for": "2m" }"#);
    let temps = |at, t0: Option<f64>, t1: Option<f64>| WorkerObservation {
        gpus: vec![gpu(0, 0, 1, t0), gpu(1, 0, 1, t1)],
        ..worker("w1", at, 0.0, 0.0)
    };
    e.observe_worker(&temps(0, Some(90.0), Some(86.0)));
    e.observe_worker(&temps(MIN, None, Some(70.0)));
    assert!(e.evaluate(2 * MIN - 1).is_empty());
    let events = e.evaluate(2 * MIN);
    assert_eq!(summary(&events), [(Firing, "hot{worker_id=w1,gpu=0}".to_string())]);
    assert_eq!(events[0].alert.value, 90.0);
    e.observe_worker(&temps(3 * MIN, Some(80.0), Some(80.0)));
    assert_eq!(summary(&e.evaluate(3 * MIN)), [(Resolved, "hot{worker_id=w1,gpu=0}".to_string())]);
}

#[test]
fn task_failure_rate_needs_a_minimum_count_and_slides_out_of_its_window() {
    let mut e = engine(
        r#"{ "name": "fail", "kind": "task_failure_rate", "threshold": 0.5, "window": "10m", "min_count": 5 }"#,
    );
    for i in 0..4 {
        e.observe_task_end(i * 1000, true);
    }
    assert!(e.evaluate(5000).is_empty(), "4 failures of 4 is below the minimum count");
    for _ in 0..4 {
        e.observe_task_end(6000, false);
    }
    assert!(e.evaluate(6000).is_empty(), "4 failed of 8 is exactly 0.5, not above");
    e.observe_task_end(7000, true);
    let events = e.evaluate(7000);
    assert_eq!(summary(&events), [(Firing, "fail".to_string())]);
    assert!((events[0].alert.value - 5.0 / 9.0).abs() < 1e-9);
    assert_eq!(events[0].alert.key, key("fail", None, None));
    // Ten minutes later all outcomes have left the window.
    let events = e.evaluate(7000 + 10 * MIN + 1);
    assert_eq!(summary(&events), [(Resolved, "fail".to_string())]);
    assert!(e.tasks.is_empty(), "outcomes past the window are dropped");
}

#[test]
fn task_outcomes_are_bounded() {
    let mut e = engine(r#"{ "name": "fail", "kind": "task_failure_rate", "threshold": 0.5 }"#);
    for i in 0..MAX_TASK_OUTCOMES + 10 {
        e.observe_task_end(i as i64, false);
    }
    assert_eq!(e.tasks.len(), MAX_TASK_OUTCOMES);
    let mut no_rate = engine(r#"{ "name": "cpu", "kind": "cpu_usage", "threshold": 90 }"#);
    no_rate.observe_task_end(0, true);
    assert!(no_rate.tasks.is_empty(), "nothing is kept without a failure-rate rule");
}

#[test]
fn inactive_worker_fires_at_once_clears_its_other_alerts_and_resolves_when_active() {
    let mut e = AlertEngine::new(RuleSet::builtin());
    e.observe_worker(&worker("w1", 0, 99.0, 10.0));
    assert_eq!(summary(&e.evaluate(5 * MIN)), [(Firing, "cpu_high{worker_id=w1}".to_string())]);
    e.observe_worker(&WorkerObservation { active: false, ..worker("w1", 6 * MIN, 99.0, 10.0) });
    let events = e.evaluate(6 * MIN);
    assert_eq!(
        summary(&events),
        [
            (Resolved, "cpu_high{worker_id=w1}".to_string()),
            (Firing, "worker_inactive{worker_id=w1}".to_string())
        ]
    );
    assert_eq!(events[1].alert.severity, crate::Severity::Critical);
    assert_eq!(events[1].alert.message, "worker w1 is inactive");
    e.observe_worker(&worker("w1", 7 * MIN, 10.0, 10.0));
    assert_eq!(summary(&e.evaluate(7 * MIN)), [(Resolved, "worker_inactive{worker_id=w1}".to_string())]);
}

#[test]
fn forgotten_workers_resolve_and_are_dropped() {
    let mut e = engine(r#"{ "name": "down", "kind": "worker_inactive" }"#);
    e.observe_worker(&WorkerObservation { active: false, ..worker("w1", 0, 0.0, 0.0) });
    e.observe_worker(&worker("w2", 0, 0.0, 0.0));
    assert_eq!(e.evaluate(0).len(), 1);
    e.forget_worker("w1");
    e.forget_worker("w2");
    e.forget_worker("nobody");
    assert_eq!(summary(&e.evaluate(MIN)), [(Resolved, "down{worker_id=w1}".to_string())]);
    assert!(e.workers.is_empty());
}

#[test]
fn disabled_rules_never_fire() {
    let mut e = engine(r#"{ "name": "cpu", "kind": "cpu_usage", "threshold": 1, "enabled": false }"#);
    e.observe_worker(&worker("w1", 0, 99.0, 0.0));
    assert!(e.evaluate(MIN).is_empty());
    assert!(e.rules().is_empty());
}

#[test]
fn resolved_alerts_are_bounded_by_count_and_retention_newest_first() {
    let set = RuleSet::from_json(
        r#"{ "max_resolved": 3, "resolved_retention": "10m",
             "rules": [ { "name": "down", "kind": "worker_inactive" } ] }"#,
    )
    .unwrap();
    let mut e = AlertEngine::new(set);
    for i in 0..5i64 {
        let id = format!("w{i}");
        e.observe_worker(&WorkerObservation { active: false, ..worker(&id, i * MIN, 0.0, 0.0) });
        e.evaluate(i * MIN);
        e.observe_worker(&worker(&id, i * MIN + 1, 0.0, 0.0));
        e.evaluate(i * MIN + 1);
    }
    e.observe_worker(&WorkerObservation { active: false, ..worker("w9", 5 * MIN, 0.0, 0.0) });
    e.evaluate(5 * MIN);
    let listed = e.alerts(5 * MIN);
    let ids: Vec<(&str, AlertStatus)> =
        listed.iter().map(|a| (a.key.worker_id.as_deref().unwrap(), a.status)).collect();
    assert_eq!(ids, [("w9", Firing), ("w4", Resolved), ("w3", Resolved), ("w2", Resolved)]);
    // w2 resolved at 2m+1ms: gone 10 minutes later; w3 and w4 stay a little longer.
    let later: Vec<String> =
        e.alerts(12 * MIN + 2).iter().map(|a| a.key.worker_id.clone().unwrap()).collect();
    assert_eq!(later, ["w9", "w4", "w3"]);
    e.evaluate(14 * MIN + 2);
    assert_eq!(e.resolved.len(), 0);
}

#[test]
fn events_serialise_as_the_webhook_body() {
    let mut e = engine(r#"{ "name": "hot", "kind": "gpu_temperature", "threshold": 85 }"#);
    e.observe_worker(&WorkerObservation {
        gpus: vec![gpu(3, 0, 1, Some(91.0))],
        ..worker("w1", 10, 0.0, 0.0)
    });
    let event = e.evaluate(20).pop().unwrap();
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "status": "firing",
            "alert": {
                "rule": "hot", "worker_id": "w1", "gpu": 3, "status": "firing", "severity": "warning",
                "value": 91.0, "threshold": 85.0, "since_ms": 10, "fired_at_ms": 20,
                "message": "gpu 3 temperature 91 °C above 85 °C on worker w1"
            }
        })
    );
    let back: AlertEvent = serde_json::from_value(json).unwrap();
    assert_eq!(back, event);
}
