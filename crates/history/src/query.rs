//! Query results and the step aggregation behind them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::minute::Agg;
use crate::sample::Field;

/// One output point: a raw sample (`min == avg == max`), a minute bucket, or a step's aggregate.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Point {
    pub timestamp_ms: i64,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
}

/// Points per field, oldest first; steps without data are left out.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Series {
    pub fields: BTreeMap<Field, Vec<Point>>,
}

impl Series {
    pub fn get(&self, field: Field) -> &[Point] {
        self.fields.get(&field).map_or(&[], Vec::as_slice)
    }
}

/// Collects raw points or minute buckets into step buckets anchored at `since`.
pub(crate) struct Steps {
    since: i64,
    step: u64,
    raw: BTreeMap<Field, Vec<Point>>,
    steps: BTreeMap<Field, BTreeMap<u64, Agg>>,
}

impl Steps {
    pub(crate) fn new(since: i64, step: u64) -> Self {
        Steps { since, step, raw: BTreeMap::new(), steps: BTreeMap::new() }
    }

    /// Adds figures observed at `ts >= since`; non-finite ones are missing data.
    pub(crate) fn add(&mut self, field: Field, ts: i64, min: f64, avg: f64, max: f64, count: u64) {
        if count == 0 || !(min.is_finite() && avg.is_finite() && max.is_finite()) {
            return;
        }
        if self.step == 0 {
            self.raw.entry(field).or_default().push(Point { timestamp_ms: ts, min, avg, max });
            return;
        }
        // Unsigned offset: `ts - since` can exceed i64::MAX when `since` is very negative.
        let index = (ts.wrapping_sub(self.since) as u64) / self.step;
        self.steps.entry(field).or_default().entry(index).or_default().add(min, avg, max, count);
    }

    pub(crate) fn finish(self) -> Series {
        if self.step == 0 {
            let mut fields = self.raw;
            for points in fields.values_mut() {
                // Stable, so samples with equal timestamps keep their arrival order.
                points.sort_by_key(|p| p.timestamp_ms);
            }
            return Series { fields };
        }
        let (since, step) = (self.since, self.step);
        let fields = self
            .steps
            .into_iter()
            .map(|(field, steps)| {
                let points = steps
                    .into_iter()
                    .filter_map(|(index, agg)| {
                        let (min, avg, max, _) = agg.finish()?;
                        let timestamp_ms = since.wrapping_add(index.wrapping_mul(step) as i64);
                        Some(Point { timestamp_ms, min, avg, max })
                    })
                    .collect();
                (field, points)
            })
            .collect();
        Series { fields }
    }
}
