//! A worker's telemetry history, as `GET /api/workers/{worker_id}/metrics?since=…` adds it.

use std::collections::BTreeMap;

pub use cloudai_history::Field;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The query string asking for history; every part is optional, and giving any of them
/// adds `history` to the answer. Defaults: the last hour, points as stored, every field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryQuery {
    /// A duration ago (`15m`), unix seconds, or RFC 3339.
    pub since: Option<String>,
    /// Same forms as `since`; default now.
    pub until: Option<String>,
    /// A duration (`1m`) or seconds; absent for the points as stored.
    pub step: Option<String>,
    /// The fields wanted; empty for every field.
    pub fields: Vec<Field>,
}

impl HistoryQuery {
    /// The last `since` (e.g. `15m`), points as stored.
    pub fn since(since: impl Into<String>) -> Self {
        Self { since: Some(since.into()), ..Self::default() }
    }

    /// The query-string pairs, as the server reads them (`fields` comma-separated).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut pairs = Vec::new();
        for (name, value) in [("since", &self.since), ("until", &self.until), ("step", &self.step)] {
            if let Some(v) = value {
                pairs.push((name, v.clone()));
            }
        }
        if !self.fields.is_empty() {
            let names: Vec<String> = self.fields.iter().map(Field::to_string).collect();
            pairs.push(("fields", names.join(",")));
        }
        pairs
    }
}

/// The range answered and its points per field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct History {
    /// Unix milliseconds.
    pub since_ms: i64,
    pub until_ms: i64,
    /// 0: points as stored (one per heartbeat, or per minute for older data).
    pub step_ms: u64,
    /// Field (`cpu_usage`, `memory_usage`, `gpu_usage`, `memory_used_mb`, `memory_total_mb`,
    /// `gpu{N}_utilization`, `gpu{N}_memory_used_mb`) → points, oldest first; steps without
    /// data are left out. Keyed by the history's own field type, so the order is the server's.
    #[schema(value_type = BTreeMap<String, Vec<Point>>)]
    pub fields: BTreeMap<Field, Vec<Point>>,
}

impl History {
    pub fn new(since_ms: i64, until_ms: i64, step_ms: u64, series: cloudai_history::Series) -> Self {
        let fields = series
            .fields
            .into_iter()
            .map(|(field, points)| (field, points.into_iter().map(Point::from).collect()))
            .collect();
        Self { since_ms, until_ms, step_ms, fields }
    }

    /// One field's points, oldest first (none when the answer lacks the field).
    pub fn get(&self, field: Field) -> &[Point] {
        self.fields.get(&field).map_or(&[], Vec::as_slice)
    }
}

/// A raw sample (`min == avg == max`), a minute, or a step's aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Point {
    pub timestamp_ms: i64,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
}

impl From<cloudai_history::Point> for Point {
    fn from(p: cloudai_history::Point) -> Self {
        Self { timestamp_ms: p.timestamp_ms, min: p.min, avg: p.avg, max: p.max }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs_are_what_the_server_reads() {
        let query = HistoryQuery {
            step: Some("1m".into()),
            fields: vec![Field::Cpu, Field::GpuUtilization(0)],
            ..HistoryQuery::since("15m")
        };
        let pairs = query.pairs();
        let expected = [("since", "15m"), ("step", "1m"), ("fields", "cpu_usage,gpu0_utilization")];
        assert_eq!(pairs, expected.map(|(k, v)| (k, v.to_string())));
        assert!(HistoryQuery::default().pairs().is_empty());
    }
}
