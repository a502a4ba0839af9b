//! `/api/workers…`: registration details plus live figures, for clients and the CLI.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use cloudai_api::{History, TaskUsage, WorkerDetail, WorkerMetrics, WorkerTask, WorkerTaskList};
use cloudai_domain::WorkerInfo;
use cloudai_store::TaskFilter;

use super::telemetry::{not_found, worker_id};
use super::{ApiError, ApiState, Route, get};
use crate::telemetry::WorkerTelemetry;

pub(super) fn routes() -> Vec<Route> {
    vec![
        get("/api/workers", list),
        get("/api/workers/{worker_id}", one),
        get("/api/workers/{worker_id}/metrics", metrics),
        get("/api/workers/{worker_id}/tasks", tasks),
    ]
}

fn detail(state: &ApiState, info: &WorkerInfo, telemetry: WorkerTelemetry) -> WorkerDetail {
    WorkerDetail::new(info.into(), telemetry.into()).unhealthy(state.fleet.unhealthy(&info.worker_id))
}

async fn list(State(state): State<ApiState>) -> Json<Vec<WorkerDetail>> {
    let all = state.telemetry.list_workers();
    Json(all.into_iter().map(|(info, telemetry)| detail(&state, &info, telemetry)).collect())
}

fn lookup(state: &ApiState, raw: &str) -> Result<(Arc<WorkerInfo>, WorkerTelemetry), ApiError> {
    let id = worker_id(raw)?;
    let info = state.telemetry.get_worker_info(&id);
    let telemetry = state.telemetry.get_worker_telemetry(&id);
    info.zip(telemetry).ok_or_else(|| not_found(raw))
}

async fn one(State(state): State<ApiState>, Path(raw): Path<String>) -> Result<Json<WorkerDetail>, ApiError> {
    let (info, telemetry) = lookup(&state, &raw)?;
    Ok(Json(detail(&state, &info, telemetry)))
}

/// `?since=&until=&step=&fields=`: times are a duration ago (`15m`), unix seconds or
/// RFC 3339; `step` a duration (`1m`) or seconds, absent for the points as stored.
#[derive(serde::Deserialize)]
struct RangeQuery {
    since: Option<String>,
    until: Option<String>,
    step: Option<String>,
    fields: Option<String>,
}

struct Range {
    since_ms: i64,
    until_ms: i64,
    step_ms: u64,
    /// `None`: every field.
    fields: Option<Vec<cloudai_history::Field>>,
}

/// Most points one field may have in an answer with a step (as Prometheus allows).
const MAX_STEPS: i64 = 11_000;

impl RangeQuery {
    fn wanted(&self) -> bool {
        self.since.is_some() || self.until.is_some() || self.step.is_some() || self.fields.is_some()
    }

    /// Defaults: the last hour, as stored, all fields.
    fn parse(&self, now_ms: i64) -> Result<Range, ApiError> {
        let since = match &self.since {
            Some(raw) => parse_time("since", raw, now_ms)?,
            None => now_ms - 3_600_000,
        };
        let until = match &self.until {
            Some(raw) => parse_time("until", raw, now_ms)?,
            None => now_ms,
        };
        if until <= since {
            return Err(ApiError::bad_request("until must be after since"));
        }
        let step = match &self.step {
            Some(raw) => parse_step(raw)?,
            None => 0,
        };
        // Saturating: `since` may be far in the past (`since=1000y`).
        if step > 0 && until.saturating_sub(since) / i64::try_from(step).unwrap_or(i64::MAX) > MAX_STEPS {
            return Err(ApiError::bad_request(format!(
                "step too small for the range: at most {MAX_STEPS} points per field"
            )));
        }
        let fields = self
            .fields
            .as_deref()
            .map(|raw| {
                raw.split(',')
                    .map(|f| f.trim().parse().map_err(|e| ApiError::bad_request(format!("fields: {e}"))))
                    .collect::<Result<Vec<_>, _>>()
            })
            .transpose()?;
        Ok(Range { since_ms: since, until_ms: until, step_ms: step, fields })
    }
}

/// The latest time accepted, in unix seconds: the end of year 9999, as far as RFC 3339 goes.
const MAX_UNIX_SECS: f64 = 253_402_300_799.0;

fn parse_time(name: &str, raw: &str, now_ms: i64) -> Result<i64, ApiError> {
    let raw = raw.trim();
    if let Ok(secs) = raw.parse::<f64>() {
        if secs.is_finite() && (0.0..=MAX_UNIX_SECS).contains(&secs) {
            return Ok((secs * 1000.0).round() as i64);
        }
        // It is unix seconds, only not a time we keep: say the range, not the forms.
        return Err(ApiError::bad_request(format!(
            "{name}: {raw} is out of range for unix seconds: use 0 (1970) to {MAX_UNIX_SECS} (the end of 9999)"
        )));
    }
    if let Ok(ago) = humantime::parse_duration(raw) {
        return Ok(now_ms.saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX)));
    }
    match humantime::parse_rfc3339_weak(raw) {
        Ok(at) => {
            let ms = at.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            return Ok(i64::try_from(ms).unwrap_or(i64::MAX));
        }
        Err(humantime::TimestampError::OutOfRange) => {
            let year = raw.get(..4).and_then(|y| y.parse::<u32>().ok());
            let problem = if year.is_some_and(|y| y < 1970) {
                "is before 1970; times before 1970 are not accepted".to_string()
            } else {
                "is RFC 3339 with a part out of range (month, day, hour, minute or second, or after 9999)"
                    .to_string()
            };
            return Err(ApiError::bad_request(format!("{name}: {raw:?} {problem}")));
        }
        Err(_) => {}
    }
    Err(ApiError::bad_request(format!(
        "{name}: invalid time {raw:?}; use a duration ago (15m), unix seconds or RFC 3339 in UTC (2026-01-31T12:00:00Z)"
    )))
}

fn parse_step(raw: &str) -> Result<u64, ApiError> {
    let raw = raw.trim();
    let ms = match raw.parse::<f64>() {
        Ok(secs) if (0.0..1e9).contains(&secs) => (secs * 1000.0).round() as u64,
        Ok(_) => return Err(ApiError::bad_request(format!("step: {raw:?} is out of range"))),
        Err(_) => humantime::parse_duration(raw)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .map_err(|e| ApiError::bad_request(format!("step: invalid duration {raw:?} ({e})")))?,
    };
    Ok(ms)
}

async fn metrics(
    State(state): State<ApiState>,
    Path(raw): Path<String>,
    Query(range): Query<RangeQuery>,
) -> Result<Json<WorkerMetrics>, ApiError> {
    let (info, t) = lookup(&state, &raw)?;
    let history = if range.wanted() {
        let Range { since_ms, until_ms, step_ms, fields } = range.parse(cloudai_domain::time::unix_ms())?;
        let mut series = state
            .telemetry
            .history(&t.worker_id, since_ms, until_ms, step_ms)
            .ok_or_else(|| not_found(&raw))?;
        if let Some(fields) = fields {
            series.fields.retain(|field, _| fields.contains(field));
        }
        Some(History::new(since_ms, until_ms, step_ms, series))
    } else {
        None
    };
    Ok(Json(WorkerMetrics::new(t.into(), info.cpu_cores, history)))
}

async fn tasks(
    State(state): State<ApiState>,
    axum::Extension(viewer): axum::Extension<crate::auth::Principal>,
    Path(raw): Path<String>,
    Query(q): Query<super::tasks::ListQuery>,
) -> Result<Response, ApiError> {
    let id = worker_id(&raw)?;
    let super::tasks::PageQuery { filter, after, brief } = q.parse()?;
    if filter.status.is_some() {
        return Err(ApiError::bad_request("status: not a filter of a worker's tasks"));
    }
    let telemetry = state.telemetry.get_worker_telemetry(&id);
    let filter = TaskFilter { worker_id: Some(id.clone()), ..filter };
    let mut page = state.tasks.list(filter, after.as_ref()).await?;
    if telemetry.is_none() && page.tasks.is_empty() && after.is_none() {
        return Err(not_found(&raw));
    }
    super::tasks::fit_page(&mut page, brief);
    let running = telemetry.map(|t| t.running_tasks).unwrap_or_default();
    let tasks = page
        .tasks
        .into_iter()
        .map(|task| {
            let usage = running
                .iter()
                .find(|r| r.task_id == task.task_id.as_str() && task.status().is_placed())
                .map(|r| TaskUsage { cpu_percent: r.cpu_percent, memory_bytes: r.memory_bytes });
            WorkerTask { task: super::tasks::listed(task, brief, &viewer), usage }
        })
        .collect();
    super::tasks::page_json(&WorkerTaskList { tasks, next: page.next }, brief)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(name: &str, raw: &str) -> String {
        let e = parse_time(name, raw, 1_000_000).expect_err("refused");
        format!("{e:?}")
    }

    #[test]
    fn times_out_of_range_say_the_range_not_the_forms() {
        assert_eq!(parse_time("since", "1700000000", 0).ok(), Some(1_700_000_000_000));
        assert_eq!(parse_time("since", "1970-01-01T00:00:01Z", 0).ok(), Some(1000));
        assert_eq!(parse_time("since", "1s", 5000).ok(), Some(4000));
        let e = error("until", "1e13");
        assert!(
            e.contains("until: 1e13 is out of range for unix seconds") && e.contains("253402300799"),
            "{e}"
        );
        assert!(!e.contains("RFC 3339"), "{e}");
        assert!(error("since", "-1").contains("out of range"));
        let e = error("since", "1969-12-31T23:59:59Z");
        assert!(e.contains("times before 1970 are not accepted"), "{e}");
        let e = error("since", "2026-13-01T00:00:00Z");
        assert!(e.contains("out of range") && !e.contains("1970"), "{e}");
        let e = error("since", "yesterday");
        assert!(e.contains("invalid time") && e.contains("RFC 3339"), "{e}");
    }
}
