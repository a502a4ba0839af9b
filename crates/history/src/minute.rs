//! The minute tier: min/avg/max/count per field per minute, kept Gorilla-encoded.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::HistoryError;
use crate::frame::Frame;
use crate::sample::Field;

pub const MINUTE_MS: i64 = 60_000;
/// Minutes per chunk; a chunk is sealed and later dropped whole.
const CHUNK_ROWS: usize = 60;

/// One field's figures over one minute; `min`, `avg` and `max` are rounded to f32 precision.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "StatsRepr", into = "StatsRepr")]
pub struct FieldStats {
    pub field: Field,
    pub min: f64,
    pub avg: f64,
    pub max: f64,
    pub count: u32,
}

/// A closed minute, as `append` hands it out for persisting and `restore` takes it back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MinuteBucket {
    /// Start of the minute, a multiple of 60 000.
    pub start_ms: i64,
    /// Fields with at least one finite value in the minute, in `Field` order.
    pub fields: Vec<FieldStats>,
}

/// An array rather than an object, so stored buckets do not repeat five key names per field.
type StatsRepr = (Field, f64, f64, f64, u32);

impl From<StatsRepr> for FieldStats {
    fn from((field, min, avg, max, count): StatsRepr) -> Self {
        FieldStats { field, min, avg, max, count }
    }
}

impl From<FieldStats> for StatsRepr {
    fn from(s: FieldStats) -> Self {
        (s.field, s.min, s.avg, s.max, s.count)
    }
}

/// Serialises buckets as compact JSON. Non-finite figures (only possible in buckets built by
/// hand; the history never produces them) would come out as `null` and fail to decode.
pub fn encode_buckets(buckets: &[MinuteBucket]) -> Vec<u8> {
    serde_json::to_vec(buckets).expect("buckets hold only numbers and string-named fields")
}

pub fn decode_buckets(bytes: &[u8]) -> Result<Vec<MinuteBucket>, HistoryError> {
    serde_json::from_slice(bytes).map_err(HistoryError::Decode)
}

/// Running min/max/sum/count; non-finite inputs are treated as missing.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Agg {
    min: f64,
    max: f64,
    sum: f64,
    count: u64,
}

impl Default for Agg {
    fn default() -> Self {
        Agg { min: f64::INFINITY, max: f64::NEG_INFINITY, sum: 0.0, count: 0 }
    }
}

impl Agg {
    pub(crate) fn add_value(&mut self, v: f64) {
        self.add(v, v, v, 1);
    }

    pub(crate) fn add(&mut self, min: f64, avg: f64, max: f64, count: u64) {
        if count == 0 || !(min.is_finite() && avg.is_finite() && max.is_finite()) {
            return;
        }
        self.min = self.min.min(min);
        self.max = self.max.max(max);
        self.sum += avg * count as f64;
        self.count += count;
    }

    /// `(min, avg, max, count)`, `None` if nothing finite was added.
    pub(crate) fn finish(&self) -> Option<(f64, f64, f64, u64)> {
        // The clamp keeps rounding (or a sum overflowing to infinity) inside [min, max].
        let avg = (self.sum / self.count as f64).clamp(self.min, self.max);
        (self.count > 0).then_some((self.min, avg, self.max, self.count))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stat {
    Min,
    Avg,
    Max,
    Count,
}

#[derive(Clone, Debug)]
struct OpenMinute {
    start: i64,
    fields: Vec<(Field, Agg)>,
}

impl OpenMinute {
    fn close(&self) -> MinuteBucket {
        let mut fields: Vec<FieldStats> = self
            .fields
            .iter()
            .filter_map(|(field, agg)| {
                let (min, avg, max, count) = agg.finish()?;
                let count = u32::try_from(count).unwrap_or(u32::MAX);
                Some(FieldStats {
                    field: *field,
                    min: to_f32(min),
                    avg: to_f32(avg),
                    max: to_f32(max),
                    count,
                })
            })
            .collect();
        fields.sort_by_key(|s| s.field);
        MinuteBucket { start_ms: self.start, fields }
    }
}

/// Minute figures are kept to f32 precision (about 7 significant digits, whole numbers exact
/// to 16 777 216): plenty for charts, and it halves the tier, since an average of f64 values
/// otherwise has all 52 mantissa bits set. Rounding is monotonic, so min <= avg <= max holds.
fn to_f32(v: f64) -> f64 {
    let rounded = f64::from(v as f32);
    if rounded.is_finite() { rounded } else { v }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct MinuteTier {
    chunks: VecDeque<Frame<(Field, Stat)>>,
    open: Option<OpenMinute>,
    last_closed: Option<i64>,
    /// Samples for a minute already closed; they stay in the raw tier only.
    pub(crate) late_samples: u64,
}

pub(crate) fn minute_of(ts: i64) -> i64 {
    ts.saturating_sub(ts.rem_euclid(MINUTE_MS))
}

impl MinuteTier {
    /// Folds a sample in; returns the previous minute if this sample closed it.
    pub(crate) fn add(
        &mut self,
        ts: i64,
        values: impl Iterator<Item = (Field, f64)>,
    ) -> Option<MinuteBucket> {
        let minute = minute_of(ts);
        if self.last_closed.is_some_and(|closed| minute <= closed) {
            self.late_samples += 1;
            return None;
        }
        let mut closed = None;
        match &self.open {
            Some(open) if minute < open.start => {
                self.late_samples += 1;
                return None;
            }
            Some(open) if minute > open.start => closed = self.close_open(),
            _ => {}
        }
        let open = self.open.get_or_insert_with(|| OpenMinute { start: minute, fields: Vec::new() });
        for (field, value) in values {
            match open.fields.iter_mut().find(|(f, _)| *f == field) {
                Some((_, agg)) => agg.add_value(value),
                None => {
                    let mut agg = Agg::default();
                    agg.add_value(value);
                    open.fields.push((field, agg));
                }
            }
        }
        closed
    }

    /// Closes the open minute if `now_ms` is past its end (a silent worker's last minute).
    pub(crate) fn close_due(&mut self, now_ms: i64) -> Option<MinuteBucket> {
        let due = self.open.as_ref()?.start.saturating_add(MINUTE_MS) <= now_ms;
        if due { self.close_open() } else { None }
    }

    fn close_open(&mut self) -> Option<MinuteBucket> {
        let bucket = self.open.take()?.close();
        self.push_closed(&bucket);
        Some(bucket)
    }

    fn push_closed(&mut self, bucket: &MinuteBucket) {
        self.last_closed = Some(self.last_closed.map_or(bucket.start_ms, |c| c.max(bucket.start_ms)));
        if self.chunks.back().is_none_or(|c| c.rows() >= CHUNK_ROWS) {
            if let Some(full) = self.chunks.back_mut() {
                full.seal();
            }
            self.chunks.push_back(Frame::new());
        }
        let values = bucket.fields.iter().flat_map(|s| {
            [
                ((s.field, Stat::Min), s.min),
                ((s.field, Stat::Avg), s.avg),
                ((s.field, Stat::Max), s.max),
                ((s.field, Stat::Count), f64::from(s.count)),
            ]
        });
        if let Some(chunk) = self.chunks.back_mut() {
            chunk.push_row(bucket.start_ms, values);
        }
    }

    /// End of the closed minutes (exclusive), if any.
    pub(crate) fn end(&self) -> Option<i64> {
        self.last_closed.map(|c| c.saturating_add(MINUTE_MS))
    }

    /// Drops chunks whose every minute ended at or before `cutoff`.
    pub(crate) fn expire(&mut self, cutoff: i64) {
        while let Some((_, last)) = self.chunks.front().and_then(Frame::ts_range) {
            if last.saturating_add(MINUTE_MS) > cutoff {
                break;
            }
            self.chunks.pop_front();
        }
    }

    /// Closed buckets starting in `[since, until)`, oldest first.
    pub(crate) fn buckets(&self, since: i64, until: i64) -> Vec<MinuteBucket> {
        let mut out = Vec::new();
        for chunk in &self.chunks {
            let Some((first, last)) = chunk.ts_range() else { continue };
            if last < since || first >= until {
                continue;
            }
            out.extend(decode_chunk(chunk).into_iter().filter(|b| (since..until).contains(&b.start_ms)));
        }
        out
    }

    /// Merges `restored` with what is held; a minute already held (or still open) wins.
    pub(crate) fn restore(&mut self, restored: Vec<MinuteBucket>, cutoff: i64) {
        let mut all = self.buckets(i64::MIN, i64::MAX);
        let open_start = self.open.as_ref().map_or(i64::MAX, |o| o.start);
        all.extend(restored.into_iter().filter(|b| b.start_ms < open_start));
        all.sort_by_key(|b| b.start_ms); // stable: held buckets stay ahead of restored ones
        all.dedup_by_key(|b| b.start_ms);
        self.chunks.clear();
        for bucket in all.iter().filter(|b| b.start_ms.saturating_add(MINUTE_MS) > cutoff) {
            self.push_closed(bucket);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.chunks.iter().map(Frame::rows).sum()
    }

    pub(crate) fn compressed_bits(&self) -> u64 {
        self.chunks.iter().map(Frame::compressed_bits).sum()
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        let open = self.open.as_ref().map_or(0, |o| o.fields.capacity() * size_of::<(Field, Agg)>());
        self.chunks.capacity() * size_of::<Frame<(Field, Stat)>>()
            + self.chunks.iter().map(Frame::heap_bytes).sum::<usize>()
            + open
    }
}

fn decode_chunk(chunk: &Frame<(Field, Stat)>) -> Vec<MinuteBucket> {
    let mut buckets: Vec<MinuteBucket> = chunk
        .timestamps()
        .into_iter()
        .map(|start_ms| MinuteBucket { start_ms, fields: Vec::new() })
        .collect();
    let mut fields: Vec<Field> = chunk.keys().into_iter().map(|(field, _)| field).collect();
    fields.dedup();
    for field in fields {
        let column = |stat| chunk.column((field, stat)).unwrap_or_default();
        let (min, avg, max, count) =
            (column(Stat::Min), column(Stat::Avg), column(Stat::Max), column(Stat::Count));
        for (row, bucket) in buckets.iter_mut().enumerate() {
            // A field absent from a minute has NaN in every column, its count included.
            let Some(&count) = count.get(row).filter(|c| !c.is_nan()) else { continue };
            let stat = |values: &[f64]| values.get(row).copied().unwrap_or(f64::NAN);
            bucket.fields.push(FieldStats {
                field,
                min: stat(&min),
                avg: stat(&avg),
                max: stat(&max),
                count: count as u32,
            });
        }
    }
    buckets
}
