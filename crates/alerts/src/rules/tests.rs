use std::time::Duration;

use super::*;

fn err(text: &str) -> (String, &'static str, String) {
    match RuleSet::from_json(text) {
        Err(ConfigError::Invalid { rule, field, reason }) => (rule, field, reason),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

#[test]
fn builtin_defaults() {
    let set = RuleSet::builtin();
    let names: Vec<&str> = set.rules.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "worker_inactive",
            "cpu_high",
            "memory_high",
            "gpu_memory_high",
            "gpu_temperature_high",
            "task_failure_rate"
        ]
    );
    let cpu = &set.rules[1];
    assert_eq!((cpu.kind, cpu.threshold, cpu.for_), (RuleKind::CpuUsage, 90.0, Duration::from_secs(300)));
    let temp = &set.rules[4];
    assert_eq!((temp.threshold, temp.for_), (85.0, Duration::from_secs(120)));
    let rate = &set.rules[5];
    assert_eq!((rate.threshold, rate.window, rate.min_count), (0.5, Duration::from_secs(600), 5));
    assert_eq!(set.rules[0].severity, Severity::Critical);
    assert!(set.rules.iter().all(|r| r.enabled));
    assert_eq!(set.resolved_retention, Duration::from_secs(3600));
    assert_eq!(set.max_resolved, 1000);
    assert_eq!(set.webhook, None);
    assert_eq!(RuleSet::from_json("{}").unwrap(), set, "no rules key means the built-in rules");
}

#[test]
fn documented_example_is_the_builtin_set_plus_a_webhook() {
    let set = RuleSet::from_json(include_str!("../../alerts.example.json")).unwrap();
    let hook = set.webhook.clone().expect("the example has a webhook");
    assert_eq!(hook.url.as_str(), "http://alerts.internal:9000/hook");
    assert_eq!(hook.config, WebhookConfig::default());
    assert_eq!(RuleSet { webhook: None, ..set }, RuleSet::builtin());
}

#[test]
fn parses_a_custom_file() {
    let set = RuleSet::from_json(
        r#"{ "resolved_retention": "10m", "max_resolved": 5, "rules": [
            { "name": "hot", "kind": "gpu_temperature", "threshold": 70.5, "for": "90s", "severity": "info" },
            { "name": "cpu", "kind": "cpu_usage", "threshold": 50, "enabled": false }
        ] }"#,
    )
    .unwrap();
    assert_eq!(set.resolved_retention, Duration::from_secs(600));
    assert_eq!(set.max_resolved, 5);
    assert_eq!(set.rules[0].for_, Duration::from_secs(90));
    assert_eq!(set.rules[0].severity, Severity::Info);
    assert_eq!(set.rules[1].for_, Duration::ZERO);
    assert_eq!(set.rules[1].severity, Severity::Warning);
    assert!(!set.rules[1].enabled);
}

#[test]
fn validation_errors_name_rule_and_field() {
    let rule = |body: &str| format!(r#"{{ "rules": [ {{ "name": "r1", {body} }} ] }}"#);
    let cases: &[(&str, &str, &str)] = &[
        (r#""kind": "disk_usage", "threshold": 1"#, "kind", "unknown kind"),
        (r#""kind": "cpu_usage""#, "threshold", "required"),
        (r#""kind": "cpu_usage", "threshold": 101"#, "threshold", "outside"),
        (r#""kind": "task_failure_rate", "threshold": 1.5"#, "threshold", "outside"),
        (r#""kind": "worker_inactive", "threshold": 1"#, "threshold", "not used"),
        (r#""kind": "cpu_usage", "threshold": 1, "for": "5 parsecs""#, "for", "5 parsecs"),
        (r#""kind": "cpu_usage", "threshold": 1, "severity": "page""#, "severity", "unknown severity"),
        (r#""kind": "cpu_usage", "threshold": 1, "window": "1m""#, "window", "only used"),
        (r#""kind": "task_failure_rate", "threshold": 0.1, "window": "0s""#, "window", "positive"),
        (r#""kind": "task_failure_rate", "threshold": 0.1, "min_count": 0"#, "min_count", "at least 1"),
    ];
    for (body, field, reason) in cases {
        let (r, f, why) = err(&rule(body));
        assert_eq!((r.as_str(), f), ("r1", *field), "{body}");
        assert!(why.contains(reason), "{body}: {why}");
    }
    let (r, f, _) = err(
        r#"{ "rules": [ { "name": "a", "kind": "worker_inactive" }, { "name": "a", "kind": "worker_inactive" } ] }"#,
    );
    assert_eq!((r.as_str(), f), ("a", "name"));
    let (_, f, _) = err(r#"{ "rules": [ { "name": " ", "kind": "worker_inactive" } ] }"#);
    assert_eq!(f, "name");
    let (r, f, _) = err(r#"{ "webhook": { "url": "https://x.example/hook" } }"#);
    assert_eq!((r.as_str(), f), ("<webhook>", "url"));
    let (r, f, _) = err(r#"{ "resolved_retention": "soon" }"#);
    assert_eq!((r.as_str(), f), ("<file>", "resolved_retention"));
    let msg = ConfigError::Invalid { rule: "r1".into(), field: "for", reason: "bad".into() }.to_string();
    assert_eq!(msg, r#"alert rule "r1": field "for": bad"#);
}

#[test]
fn malformed_json_and_unknown_fields_are_rejected() {
    assert!(matches!(RuleSet::from_json("{"), Err(ConfigError::Json(_))));
    let e = RuleSet::from_json(r#"{ "rules": [ { "name": "a", "kind": "cpu_usage", "treshold": 1 } ] }"#);
    assert!(matches!(e, Err(ConfigError::Json(ref j)) if j.to_string().contains("treshold")), "{e:?}");
}

#[test]
fn load_reads_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("alerts.json");
    assert!(matches!(RuleSet::load(&path), Err(ConfigError::Read { .. })));
    std::fs::write(&path, r#"{ "max_resolved": 7 }"#).unwrap();
    assert_eq!(RuleSet::load(&path).unwrap().max_resolved, 7);
}
