//! Every DTO reads what today's server writes, writes it back byte for byte, and refuses an
//! answer that lacks a field the server always sends, naming that field.
//!
//! Samples come from the server's own types where this crate can build them (domain tasks
//! and events, alerts, history series) and otherwise are copied in the field order of the
//! master's structs (`telemetry/model.rs`, `http/*.rs`).

use std::collections::BTreeMap;

use cloudai_api::*;
use cloudai_domain::{TaskId, TaskStatus, WorkerId};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// Parses as the client does: the error names the JSON path and the field.
fn parse<T: DeserializeOwned>(json: &str) -> Result<T, String> {
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| e.to_string())
}

/// `json` parses into `T` and serialises back to the same bytes.
fn round_trips<T: DeserializeOwned + serde::Serialize>(json: &str) -> T {
    let value: T = parse(json).unwrap_or_else(|e| panic!("{e}\nin {json}"));
    assert_eq!(serde_json::to_string(&value).expect("serialise"), json);
    value
}

/// Removing any top-level field not in `optional` is an error naming it; removing an
/// optional one is not.
fn each_field_is_required<T: DeserializeOwned>(json: &str, optional: &[&str]) {
    let full: Value = serde_json::from_str(json).expect("sample is JSON");
    let keys: Vec<String> = full.as_object().expect("an object").keys().cloned().collect();
    for key in &keys {
        let mut cut = full.clone();
        cut.as_object_mut().expect("object").remove(key);
        let result = parse::<T>(&cut.to_string());
        if optional.contains(&key.as_str()) {
            assert!(result.is_ok(), "{key} is optional: {result:?}", result = result.err());
        } else {
            let err = result.err().unwrap_or_else(|| panic!("{key} missing must be an error"));
            assert!(err.contains(&format!("`{key}`")), "error must name {key}: {err}");
        }
    }
    for key in optional {
        assert!(keys.iter().any(|k| k == key), "the sample has the optional {key}");
    }
}

const GPU: &str = r#"{"index":0,"uuid":"GPU-0","model":"Simulated GPU","utilization_percent":37.5,"memory_used_mb":2048,"memory_total_mb":16384,"temperature_c":61.0,"power_watts":120.5,"energy_mj":123456,"sm_clock_mhz":1410,"mem_clock_mhz":1215,"xid_errors":0}"#;
const GPU_OPTIONAL: &[&str] =
    &["temperature_c", "power_watts", "energy_mj", "sm_clock_mhz", "mem_clock_mhz", "xid_errors"];
const RUNNING: &str = r#"{"task_id":"0199a0b2-7c3e-7000-8000-000000000001","status":"running","cpu_percent":12.5,"memory_bytes":1048576,"started_at":1790000000}"#;

fn telemetry_sample() -> String {
    format!(
        r#"{{"worker_id":"worker-1","cpu_usage":12.5,"memory_usage":40.25,"gpu_usage":37.5,"memory_used_mb":6442,"memory_total_mb":16000,"gpus":[{GPU}],"running_tasks":[{RUNNING}],"last_update":1790000005,"sample_time_ms":1790000004900,"is_active":true,"heartbeats_received":42,"heartbeats_dropped":1}}"#
    )
}

#[test]
fn health_and_telemetry() {
    let health: Health = round_trips(r#"{"status":"healthy","time":1790000000}"#);
    assert_eq!(health.status, "healthy");
    each_field_is_required::<Health>(r#"{"status":"healthy","time":1790000000}"#, &[]);

    let gpu: GpuStats = round_trips(GPU);
    assert_eq!(gpu.temperature_c, Some(61.0));
    each_field_is_required::<GpuStats>(GPU, GPU_OPTIONAL);
    let bare = r#"{"index":1,"uuid":"GPU-1","model":"m","utilization_percent":0.0,"memory_used_mb":0,"memory_total_mb":1}"#;
    assert_eq!(round_trips::<GpuStats>(bare).power_watts, None, "unreported fields stay out");

    let running: RunningTask = round_trips(RUNNING);
    assert_eq!(running.status, TaskStatus::Running);
    each_field_is_required::<RunningTask>(RUNNING, &[]);

    let sample = telemetry_sample();
    let t: WorkerTelemetry = round_trips(&sample);
    assert_eq!((t.worker_id.as_str(), t.gpus.len(), t.running_tasks.len()), ("worker-1", 1, 1));
    each_field_is_required::<WorkerTelemetry>(&sample, &[]);

    let map = format!(r#"{{"worker-1":{sample}}}"#);
    let all: TelemetryMap = round_trips(&map);
    assert!(all.contains_key(&WorkerId::parse("worker-1").expect("id")));
}

#[test]
fn worker_summaries() {
    let one = r#"{"worker_id":"worker-1","hostname":"host-a","is_active":true,"cpu_usage":12.5,"memory_usage":40.25,"gpu_usage":0.0,"gpu_count":0,"task_count":2,"last_update":1790000005}"#;
    let summary: WorkerSummary = round_trips(one);
    assert_eq!(summary.task_count, 2);
    each_field_is_required::<WorkerSummary>(one, &[]);
    let map: WorkerSummaryMap = round_trips(&format!(r#"{{"worker-1":{one}}}"#));
    assert_eq!(map.len(), 1);
}

fn detail_sample() -> String {
    format!(
        r#"{{"worker_id":"worker-1","hostname":"host-a","cpu_cores":8.0,"memory_mb":16000,"gpus":[{{"index":0,"uuid":"GPU-0","model":"Simulated GPU","memory_total_mb":16384}}],"labels":{{"zone":"a"}},"version":"0.1.0","drivers":["process","docker"],"registered_at":1790000000,"is_active":true,"telemetry":{}}}"#,
        telemetry_sample()
    )
}

#[test]
fn worker_details() {
    let sample = detail_sample();
    let w: WorkerDetail = round_trips(&sample);
    assert_eq!(w.info.cpu_cores, 8.0);
    assert_eq!(w.info.drivers, [cloudai_domain::Driver::Process, cloudai_domain::Driver::Docker]);
    each_field_is_required::<WorkerDetail>(&sample, &[]);
    let list: Vec<WorkerDetail> = round_trips(&format!("[{sample}]"));
    assert_eq!(list.len(), 1);

    // A nested field: the error says where.
    let mut cut: Value = serde_json::from_str(&sample).expect("json");
    cut["telemetry"].as_object_mut().expect("telemetry").remove("cpu_usage");
    let err = parse::<WorkerDetail>(&cut.to_string()).expect_err("missing telemetry.cpu_usage");
    assert!(err.contains("telemetry") && err.contains("`cpu_usage`"), "{err}");
}

const METRICS: &str = r#"{"worker_id":"hist-1","is_active":true,"last_update":1790000005,"cpu_usage":12.5,"cpu_cores":8.0,"memory_usage":40.25,"memory_used_mb":6442,"memory_total_mb":16000,"gpu_usage":37.5,"gpus":[],"history":{"since_ms":1789999700000,"until_ms":1790000000000,"step_ms":60000,"fields":{"cpu_usage":[{"timestamp_ms":1789999700000,"min":1.0,"avg":2.5,"max":4.0}],"gpu0_utilization":[]}}}"#;

#[test]
fn worker_metrics_with_history() {
    let m: WorkerMetrics = round_trips(METRICS);
    let history = m.history.as_ref().expect("history");
    assert_eq!(history.fields[&cloudai_api::history::Field::Cpu][0].avg, 2.5);
    each_field_is_required::<WorkerMetrics>(METRICS, &["history"]);
    let history_json = serde_json::to_string(history).expect("json");
    each_field_is_required::<History>(&history_json, &[]);

    // The server builds `history` from a history series: same JSON.
    let mut series = cloudai_history::Series::default();
    let point = cloudai_history::Point { timestamp_ms: 1_789_999_700_000, min: 1.0, avg: 2.5, max: 4.0 };
    series.fields.insert(cloudai_history::Field::Cpu, vec![point]);
    series.fields.insert(cloudai_history::Field::GpuUtilization(0), vec![]);
    assert_eq!(&History::new(1_789_999_700_000, 1_790_000_000_000, 60_000, series), history);
}

fn domain_task(status_after: &[TaskStatus]) -> cloudai_domain::Task {
    let body = br#"{"driver":"process","command":["sh","-c","echo hi"],"env":{"WHO":"me"},"cpu_required":0.5,"memory_required":64,"gpu_required":1,"priority":3}"#;
    let spec = cloudai_domain::TaskSpec::from_json(body).expect("valid spec");
    let mut task = cloudai_domain::Task::new(TaskId::generate(), spec, 1_790_000_000_000);
    let worker = WorkerId::parse("w1").expect("id");
    for (i, &to) in status_after.iter().enumerate() {
        let at = 1_790_000_000_000 + i as i64 * 1000;
        match to {
            TaskStatus::Queued => {
                task.place(worker.clone(), vec![0], at).expect("placed");
            }
            _ => {
                let outcome = cloudai_domain::Outcome { exit_code: Some(7), error: None };
                task.transition(to, "exited with code 7", outcome, at).expect("legal move");
            }
        }
    }
    task
}

#[test]
fn tasks_as_the_domain_serialises_them() {
    use TaskStatus::*;
    let mut pending = domain_task(&[]);
    pending.set_pending_reason("no worker has room".into());
    for task in [pending, domain_task(&[Queued, Running]), domain_task(&[Queued, Running, Failed])] {
        let json = serde_json::to_string(&task).expect("domain json");
        let dto: Task = round_trips(&json);
        assert_eq!(dto, Task::from(task.clone()), "From<domain::Task> builds the same DTO");
        // `command` and `env` are left out of brief listings.
        let optional = [
            "worker_id",
            "pending_reason",
            "exit_code",
            "error",
            "started_at_ms",
            "finished_at_ms",
            "command",
            "env",
        ];
        let present: Vec<&str> =
            optional.into_iter().filter(|k| json.contains(&format!("\"{k}\""))).collect();
        each_field_is_required::<Task>(&json, &present);
    }
    let docker = br#"{"docker_image":"python:3.9","cpu_required":2.0,"memory_required":1024}"#;
    let spec = cloudai_domain::TaskSpec::from_json(docker).expect("valid");
    let json = serde_json::to_string(&cloudai_domain::Task::new(TaskId::generate(), spec, 1)).expect("json");
    each_field_is_required::<Task>(&json, &["docker_image", "command", "env"]);
}

#[test]
fn worker_tasks_carry_usage_while_placed() {
    let task = serde_json::to_string(&domain_task(&[TaskStatus::Queued, TaskStatus::Running])).expect("json");
    let with_usage =
        format!(r#"{},"usage":{{"cpu_percent":12.5,"memory_bytes":1048576}}}}"#, &task[..task.len() - 1]);
    let on_worker: WorkerTask = round_trips(&with_usage);
    assert_eq!(on_worker.usage.map(|u| u.memory_bytes), Some(1_048_576));
    let without: WorkerTask = round_trips(&task);
    assert_eq!(without.usage, None);
    let err = parse::<WorkerTask>(&task.replace(r#""attempt":1,"#, "")).expect_err("attempt missing");
    assert!(err.contains("`attempt`"), "{err}");
}

#[test]
fn events_and_summary() {
    use TaskStatus::*;
    let task = domain_task(&[]);
    let mut moved = task.clone();
    let first = task.created_event();
    let placed = moved.place(WorkerId::parse("w1").expect("id"), vec![], 2).expect("placed");
    for event in [first, placed] {
        let json = serde_json::to_string(&event).expect("json");
        let dto: TaskEvent = round_trips(&json);
        assert_eq!(dto, TaskEvent::from(event.clone()));
        let optional: &[&str] = if event.worker_id.is_some() { &["worker_id"] } else { &[] };
        each_field_is_required::<TaskEvent>(&json, optional);
    }
    assert!(serde_json::to_string(&task.created_event()).expect("json").contains(r#""from":null"#));

    let counts: BTreeMap<TaskStatus, u64> = TaskStatus::ALL.into_iter().zip([3, 0, 1, 7, 2, 0]).collect();
    let json = serde_json::to_string(&counts).expect("json");
    let summary: TaskSummary = round_trips(&json);
    assert_eq!(summary, TaskSummary::from(counts));
    assert_eq!((summary.get(Completed), summary.get(Pending)), (7, 3));
    each_field_is_required::<TaskSummary>(&json, &[]);
}

#[test]
fn logs_and_follow_lines() {
    let chunk = r#"{"seq":1,"stream":"stdout","data":"hello\n","time_ms":1790000000000}"#;
    let line: LogChunk = round_trips(chunk);
    assert_eq!(line, LogChunk::new(1, LogStream::Stdout, b"hello\n", 1_790_000_000_000));
    each_field_is_required::<LogChunk>(chunk, &[]);
    let logs = format!(
        r#"{{"task_id":"0199a0b2-7c3e-7000-8000-000000000001","status":"completed","logs":[{chunk},{}],"dropped_bytes":0,"next_seq":2}}"#,
        r#"{"seq":2,"stream":"stderr","data":"oops\n","time_ms":1790000000001}"#
    );
    let page: TaskLogs = round_trips(&logs);
    assert_eq!(page.logs[1].stream, LogStream::Stderr);
    each_field_is_required::<TaskLogs>(&logs, &[]);
}

#[test]
fn alerts_as_the_engine_serialises_them() {
    let alert = cloudai_alerts::Alert {
        key: cloudai_alerts::AlertKey {
            rule: "gpu_hot".into(),
            worker_id: Some("gpu-box-1".into()),
            gpu: Some(1),
        },
        status: cloudai_alerts::AlertStatus::Resolved,
        severity: cloudai_alerts::Severity::Warning,
        value: 91.5,
        threshold: 90.0,
        since_ms: 1_790_000_000_000,
        fired_at_ms: 1_790_000_060_000,
        resolved_at_ms: Some(1_790_000_120_000),
        message: "gpu 1 temperature 92 °C above 90 °C for 1m on worker gpu-box-1".into(),
    };
    let mut cluster_wide = alert.clone();
    cluster_wide.key =
        cloudai_alerts::AlertKey { rule: "task_failure_rate".into(), worker_id: None, gpu: None };
    cluster_wide.status = cloudai_alerts::AlertStatus::Firing;
    cluster_wide.resolved_at_ms = None;
    cluster_wide.message = "task failure rate 0.60 above 0.50 over the last 1m".into();
    // As the handler writes `AlertList` (a struct: fields in order, unlike `json!`).
    let json = |a: &cloudai_alerts::Alert| serde_json::to_string(a).expect("json");
    let list = format!(r#"{{"alerts":[{},{}]}}"#, json(&cluster_wide), json(&alert));
    let dto: AlertList = round_trips(&list);
    assert_eq!(dto.alerts[1], Alert::from(alert.clone()));
    assert_eq!(dto.alerts[0].status, AlertStatus::Firing);
    each_field_is_required::<Alert>(&json(&alert), &["worker_id", "gpu", "resolved_at_ms"]);
    each_field_is_required::<AlertList>(&list, &[]);
}

#[test]
fn submissions_are_what_the_server_validates() {
    let mut submit = SubmitTask::process(vec!["sh".into(), "-c".into(), "echo hi".into()], 0.5, 64);
    submit.env.insert("WHO".into(), "me".into());
    submit.gpu_required = Some(1);
    let body = serde_json::to_vec(&submit).expect("json");
    let spec = cloudai_domain::TaskSpec::from_json(&body).expect("the server accepts it");
    assert_eq!((spec.gpu_required, spec.max_retries, spec.env.len()), (1, 1, 1));

    let docker = serde_json::to_string(&SubmitTask::docker("python:3.9", 2.0, 1024)).expect("json");
    assert_eq!(
        docker,
        r#"{"docker_image":"python:3.9","cpu_required":2.0,"memory_required":1024,"driver":"docker"}"#
    );
    let spec = cloudai_domain::TaskSpec::from_json(docker.as_bytes()).expect("accepted");
    assert_eq!(spec.docker_image.as_deref(), Some("python:3.9"));
    // The seeds' body parses into the request type too.
    let seeds = r#"{"docker_image":"python:3.9","cpu_required":2.0,"memory_required":1024,"priority":5}"#;
    assert_eq!(parse::<SubmitTask>(seeds).expect("seeds body").priority, Some(5));
    let err = parse::<SubmitTask>(r#"{"docker_image":"x","memory_required":1}"#).expect_err("cpu");
    assert!(err.contains("`cpu_required`"), "{err}");
}

#[test]
fn error_bodies() {
    let body: ApiErrorBody = round_trips(r#"{"error":"task \"nope\" not found"}"#);
    assert_eq!(body.error, "task \"nope\" not found");
    each_field_is_required::<ApiErrorBody>(r#"{"error":"x"}"#, &[]);
}

/// The worker-side domain types convert to DTOs that the server writes byte for byte as it
/// wrote the domain types before.
#[test]
fn worker_types_convert_from_the_domain_unchanged() {
    let info = cloudai_domain::WorkerInfo {
        worker_id: WorkerId::parse("worker-1").expect("id"),
        hostname: "host-1".into(),
        cpu_cores: 8.0,
        memory_mb: 16000,
        gpus: vec![cloudai_domain::GpuInfo {
            index: 0,
            uuid: "GPU-0".into(),
            model: "Simulated GPU".into(),
            memory_total_mb: 16384,
        }],
        labels: BTreeMap::from([("zone".to_string(), "a".to_string())]),
        version: "0.1.0".into(),
        drivers: vec![cloudai_domain::Driver::Process, cloudai_domain::Driver::Docker],
        registered_at: 1_790_000_000,
    };
    assert_eq!(json(&WorkerInfo::from(&info)), json(&info));

    let gpu = cloudai_domain::GpuStats {
        index: 0,
        uuid: "GPU-0".into(),
        model: "Simulated GPU".into(),
        utilization_percent: 37.5,
        memory_used_mb: 2048,
        memory_total_mb: 16384,
        temperature_c: Some(61.0),
        power_watts: None,
        energy_mj: Some(123_456),
        sm_clock_mhz: None,
        mem_clock_mhz: Some(1215),
        xid_errors: None,
    };
    assert_eq!(json(&GpuStats::from(gpu.clone())), json(&gpu));

    let running = cloudai_domain::RunningTask {
        task_id: "0199a0b2-7c3e-7000-8000-000000000001".into(),
        status: cloudai_domain::RunningStatus::Queued,
        cpu_percent: 12.5,
        memory_bytes: 1_048_576,
        started_at: 1_790_000_000,
    };
    let dto = RunningTask::try_from(running.clone()).expect("a task of ours");
    assert_eq!((dto.status, json(&dto)), (TaskStatus::Queued, json(&running)));
    let odd = cloudai_domain::RunningTask { task_id: "no spaces allowed".into(), ..running };
    let err = RunningTask::try_from(odd).expect_err("not a task id");
    assert!(err.to_string().contains("no spaces allowed"), "{err}");
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("serialise")
}
