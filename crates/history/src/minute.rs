//! The minute tier: min/avg/max/count per field per minute, kept Gorilla-encoded.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::HistoryError;
use crate::frame::Frame;
use crate::sample::{Field, to_f32};

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

/// Version byte leading every encoding, so a future layout can be told apart.
const ENCODING_VERSION: u8 = 1;
/// Per field: kind (1), GPU index (2), min, avg, max (f32, 12), count (4).
const FIELD_BYTES: usize = 19;

/// Encodes buckets compactly for the store: a version byte, then per bucket its start
/// (i64), field count (u16) and per field 19 bytes, little endian. Figures are stored as
/// f32, which is exact: the minute tier holds only f32-precision values.
pub fn encode_buckets(buckets: &[MinuteBucket]) -> Vec<u8> {
    let fields: usize = buckets.iter().map(|b| b.fields.len()).sum();
    let mut out = Vec::with_capacity(1 + buckets.len() * 10 + fields * FIELD_BYTES);
    out.push(ENCODING_VERSION);
    for bucket in buckets {
        out.extend_from_slice(&bucket.start_ms.to_le_bytes());
        // A bucket holds at most 4 + 2 * max_gpus fields, far below u16::MAX.
        out.extend_from_slice(&(bucket.fields.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        for s in bucket.fields.iter().take(usize::from(u16::MAX)) {
            let (kind, index) = field_code(s.field);
            out.push(kind);
            out.extend_from_slice(&index.to_le_bytes());
            for v in [s.min, s.avg, s.max] {
                out.extend_from_slice(&(v as f32).to_le_bytes());
            }
            out.extend_from_slice(&s.count.to_le_bytes());
        }
    }
    out
}

pub fn decode_buckets(bytes: &[u8]) -> Result<Vec<MinuteBucket>, HistoryError> {
    let mut r = Reader(bytes);
    match r.take::<1>()? {
        [ENCODING_VERSION] => {}
        [v] => return Err(HistoryError::Decode(format!("unknown encoding version {v}"))),
    }
    let mut buckets = Vec::new();
    while !r.0.is_empty() {
        let start_ms = i64::from_le_bytes(r.take()?);
        if start_ms.rem_euclid(MINUTE_MS) != 0 {
            return Err(HistoryError::Decode(format!("bucket start {start_ms} is not on a minute")));
        }
        let n = u16::from_le_bytes(r.take()?);
        let mut fields = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let [kind] = r.take()?;
            let field = field_of(kind, u16::from_le_bytes(r.take()?))?;
            let mut stat = || Ok::<_, HistoryError>(f64::from(f32::from_le_bytes(r.take()?)));
            let (min, avg, max) = (stat()?, stat()?, stat()?);
            let count = u32::from_le_bytes(r.take()?);
            if !(min <= avg && avg <= max) || count == 0 {
                return Err(HistoryError::Decode(format!("inconsistent figures for {field}")));
            }
            fields.push(FieldStats { field, min, avg, max, count });
        }
        buckets.push(MinuteBucket { start_ms, fields });
    }
    Ok(buckets)
}

fn field_code(field: Field) -> (u8, u16) {
    // GPU indices are below `max_gpus` (u32 in the config, small in practice): saturate.
    let gpu = |i: u32| u16::try_from(i).unwrap_or(u16::MAX);
    match field {
        Field::Cpu => (0, 0),
        Field::Memory => (1, 0),
        Field::Gpu => (2, 0),
        Field::MemoryUsedMb => (3, 0),
        Field::MemoryTotalMb => (6, 0),
        Field::GpuUtilization(i) => (4, gpu(i)),
        Field::GpuMemoryUsedMb(i) => (5, gpu(i)),
    }
}

fn field_of(kind: u8, index: u16) -> Result<Field, HistoryError> {
    Ok(match kind {
        0 => Field::Cpu,
        1 => Field::Memory,
        2 => Field::Gpu,
        3 => Field::MemoryUsedMb,
        4 => Field::GpuUtilization(u32::from(index)),
        5 => Field::GpuMemoryUsedMb(u32::from(index)),
        6 => Field::MemoryTotalMb,
        _ => return Err(HistoryError::Decode(format!("unknown field kind {kind}"))),
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], HistoryError> {
        let Some((head, rest)) = self.0.split_first_chunk::<N>() else {
            return Err(HistoryError::Decode("truncated".into()));
        };
        self.0 = rest;
        Ok(*head)
    }
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

    /// Merges `restored` with what is held: a closed minute already held wins, the open minute
    /// takes the stored part of itself in. Returns the end of the newest minute taken from
    /// `restored` into the closed ones. Call once per restart: a second call would count the
    /// open minute's stored part twice.
    pub(crate) fn restore(&mut self, restored: Vec<MinuteBucket>, cutoff: i64) -> Option<i64> {
        let mut all = self.buckets(i64::MIN, i64::MAX);
        let held: std::collections::HashSet<i64> = all.iter().map(|b| b.start_ms).collect();
        let open_start = self.open.as_ref().map_or(i64::MAX, |o| o.start);
        // The minute still open (samples came before the restore): the stored part of it
        // joins it, so the minute closes with both.
        if let Some(open) = &mut self.open
            && let Some(stored) = restored.iter().find(|b| b.start_ms == open.start)
        {
            for s in &stored.fields {
                let i = open.fields.iter().position(|(f, _)| *f == s.field).unwrap_or_else(|| {
                    open.fields.push((s.field, Agg::default()));
                    open.fields.len() - 1
                });
                open.fields[i].1.add(s.min, s.avg, s.max, u64::from(s.count));
            }
        }
        let taken: Vec<_> = restored
            .into_iter()
            .filter(|b| b.start_ms < open_start && !held.contains(&b.start_ms))
            .filter(|b| b.start_ms.saturating_add(MINUTE_MS) > cutoff)
            .collect();
        let newest = taken.iter().map(|b| b.start_ms.saturating_add(MINUTE_MS)).max();
        all.extend(taken);
        all.sort_by_key(|b| b.start_ms); // stable: held buckets stay ahead of restored ones
        all.dedup_by_key(|b| b.start_ms);
        self.chunks.clear();
        for bucket in all.iter().filter(|b| b.start_ms.saturating_add(MINUTE_MS) > cutoff) {
            self.push_closed(bucket);
        }
        newest
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
