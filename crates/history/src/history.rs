//! One worker's telemetry history: a raw tier in blocks and a minute tier behind it.

use std::collections::VecDeque;

use crate::HistoryError;
use crate::frame::Frame;
use crate::minute::{MINUTE_MS, MinuteBucket, MinuteTier, minute_of};
use crate::query::{Series, Steps};
use crate::sample::{Field, Sample, mean_utilization, memory_percent};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long raw samples are kept. Blocks are dropped whole, so up to one more block is held.
    pub window_ms: i64,
    /// Duration of one raw block; a multiple of a minute.
    pub block_ms: i64,
    /// How long minute buckets are kept.
    pub long_window_ms: i64,
    /// GPUs with an index at or above this are not recorded.
    pub max_gpus: u32,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { window_ms: 3_600_000, block_ms: 600_000, long_window_ms: 86_400_000, max_gpus: 16 }
    }
}

/// Sizes and counters, for metrics and the memory example.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistoryStats {
    pub raw_samples: usize,
    pub raw_blocks: usize,
    pub raw_compressed_bits: u64,
    pub raw_heap_bytes: usize,
    pub minute_buckets: usize,
    pub minute_compressed_bits: u64,
    pub minute_heap_bytes: usize,
    /// Samples older than the raw window when they arrived; not stored.
    pub expired_samples: u64,
    /// Samples for an already closed minute; kept raw but not in the minute tier.
    pub late_samples: u64,
}

#[derive(Clone, Debug)]
struct Block {
    /// Aligned to `block_ms`; every row's timestamp is in `[start, start + block_ms)`.
    start: i64,
    frame: Frame<Field>,
}

#[derive(Clone, Debug)]
pub struct History {
    config: HistoryConfig,
    /// Sorted by `start`, no two alike.
    blocks: VecDeque<Block>,
    minutes: MinuteTier,
    newest_ts: Option<i64>,
    /// End of the minutes `restore` loaded. Samples that arrive for those minutes are kept
    /// raw only, so a query counts both the restored bucket and those raw samples.
    restored_until: Option<i64>,
    expired_samples: u64,
}

impl History {
    pub fn new(config: HistoryConfig) -> Result<Self, HistoryError> {
        if config.window_ms <= 0 || config.long_window_ms <= 0 {
            return Err(HistoryError::InvalidConfig("windows must be positive"));
        }
        if config.block_ms <= 0 || config.block_ms % MINUTE_MS != 0 {
            return Err(HistoryError::InvalidConfig("block_ms must be a positive multiple of a minute"));
        }
        Ok(History {
            config,
            blocks: VecDeque::new(),
            minutes: MinuteTier::default(),
            newest_ts: None,
            restored_until: None,
            expired_samples: 0,
        })
    }

    pub fn config(&self) -> &HistoryConfig {
        &self.config
    }

    /// Records a sample; returns the minute bucket this sample closed, for persisting.
    ///
    /// Timestamps may arrive in any order: a late sample joins the block of its time if that
    /// block is still held, and is dropped only if it is older than the raw window.
    pub fn append(&mut self, sample: &Sample) -> Option<MinuteBucket> {
        let ts = sample.timestamp_ms;
        let newest = self.newest_ts.map_or(ts, |n| n.max(ts));
        self.newest_ts = Some(newest);
        self.append_raw(sample);
        let closed = self.minutes.add(ts, sample.fields(self.config.max_gpus, false));
        self.expire(newest);
        closed
    }

    /// Closes the open minute if `now_ms` is past its end, so a worker that went silent still
    /// gets its last minute persisted. Pass `now - grace` to wait for stragglers.
    pub fn tick(&mut self, now_ms: i64) -> Option<MinuteBucket> {
        self.minutes.close_due(now_ms)
    }

    /// Loads persisted minute buckets back, once after a restart. Closed minutes already held
    /// win; the open minute takes in its stored part; buckets older than `long_window` (from
    /// the newest data held) are skipped.
    pub fn restore(&mut self, buckets: Vec<MinuteBucket>) {
        let newest_bucket = buckets.iter().map(|b| b.start_ms.saturating_add(MINUTE_MS - 1)).max();
        let newest = match (self.newest_ts, newest_bucket) {
            (Some(a), Some(b)) => a.max(b),
            (a, b) => a.or(b).unwrap_or(i64::MIN),
        };
        self.newest_ts = Some(newest);
        let restored = self.minutes.restore(buckets, newest.saturating_sub(self.config.long_window_ms));
        self.restored_until = self.restored_until.max(restored);
    }

    fn append_raw(&mut self, sample: &Sample) {
        let ts = sample.timestamp_ms;
        let start = ts.saturating_sub(ts.rem_euclid(self.config.block_ms));
        let cutoff = self.newest_ts.unwrap_or(ts).saturating_sub(self.config.window_ms);
        if start.saturating_add(self.config.block_ms) <= cutoff {
            self.expired_samples += 1;
            return;
        }
        // Search from the newest block: in-order samples stop at the first comparison.
        let position = self.blocks.iter().rposition(|b| b.start <= start);
        let index = match position {
            Some(i) if self.blocks[i].start == start => i,
            _ => {
                let at = position.map_or(0, |i| i + 1);
                if at == self.blocks.len()
                    && let Some(previous) = self.blocks.back_mut()
                {
                    previous.frame.seal();
                }
                self.blocks.insert(at, Block { start, frame: Frame::new() });
                at
            }
        };
        let newest_block = index + 1 == self.blocks.len();
        let frame = &mut self.blocks[index].frame;
        frame.push_row(ts, sample.fields(self.config.max_gpus, true));
        if !newest_block {
            frame.seal();
        }
    }

    fn expire(&mut self, newest: i64) {
        let cutoff = newest.saturating_sub(self.config.window_ms);
        while self.blocks.front().is_some_and(|b| b.start.saturating_add(self.config.block_ms) <= cutoff) {
            self.blocks.pop_front();
        }
        self.minutes.expire(newest.saturating_sub(self.config.long_window_ms));
    }

    /// Figures with timestamps in `[since_ms, until_ms)`, aggregated per `step_ms` (anchored
    /// at `since_ms`); `step_ms == 0` returns the stored points themselves.
    ///
    /// Time the raw tier still covers comes from raw samples; older time from minute buckets
    /// (each counted at its start), so steps there are a minute at the finest.
    pub fn query(&self, since_ms: i64, until_ms: i64, step_ms: u64) -> Series {
        let mut steps = Steps::new(since_ms, step_ms);
        if until_ms <= since_ms {
            return steps.finish();
        }
        let raw_start = self.blocks.iter().filter_map(|b| b.frame.ts_range()).map(|(first, _)| first).min();
        // Minutes before `cutoff` come from the minute tier, the rest from raw samples. Blocks
        // are minute-aligned and dropped whole, so the raw tier holds its first minute entirely
        // (unless that is where the worker's data begins, e.g. after a restart).
        let cutoff = match (raw_start, self.minutes.end()) {
            (Some(first), Some(end)) => minute_of(first).min(end),
            (Some(_), None) => i64::MIN,
            (None, Some(end)) => end,
            (None, None) => return steps.finish(),
        };
        // Restored minutes never overlap raw samples (those count as late for them).
        let minutes_until = cutoff.max(self.restored_until.unwrap_or(cutoff));
        if since_ms < minutes_until {
            for bucket in self.minutes.buckets(since_ms, until_ms.min(minutes_until)) {
                for s in &bucket.fields {
                    steps.add(s.field, bucket.start_ms, s.min, s.avg, s.max, u64::from(s.count));
                }
            }
        }
        let since = since_ms.max(cutoff);
        for block in &self.blocks {
            let Some((first, last)) = block.frame.ts_range() else { continue };
            if last < since || first >= until_ms {
                continue;
            }
            let timestamps = block.frame.timestamps();
            let mut columns: Vec<(Field, Vec<f64>)> = block
                .frame
                .keys()
                .into_iter()
                .map(|k| (k, block.frame.column(k).unwrap_or_default()))
                .collect();
            derive_columns(&mut columns, timestamps.len());
            for (field, values) in columns {
                for (&ts, &v) in timestamps.iter().zip(&values) {
                    if (since..until_ms).contains(&ts) {
                        steps.add(field, ts, v, v, v, 1);
                    }
                }
            }
        }
        steps.finish()
    }

    /// Approximate heap use: the compressed buffers and the containers holding them.
    pub fn heap_bytes(&self) -> usize {
        let stats = self.stats();
        stats.raw_heap_bytes + stats.minute_heap_bytes
    }

    pub fn stats(&self) -> HistoryStats {
        HistoryStats {
            raw_samples: self.blocks.iter().map(|b| b.frame.rows()).sum(),
            raw_blocks: self.blocks.len(),
            raw_compressed_bits: self.blocks.iter().map(|b| b.frame.compressed_bits()).sum(),
            raw_heap_bytes: self.blocks.capacity() * size_of::<Block>()
                + self.blocks.iter().map(|b| b.frame.heap_bytes()).sum::<usize>(),
            minute_buckets: self.minutes.len(),
            minute_compressed_bits: self.minutes.compressed_bits(),
            minute_heap_bytes: self.minutes.heap_bytes(),
            expired_samples: self.expired_samples,
            late_samples: self.minutes.late_samples,
        }
    }
}

/// Fills back in the figures the raw tier derives instead of storing: memory % from used
/// and total MB, GPU % as the mean of the GPUs' utilisation. Rows that stored them keep theirs.
fn derive_columns(columns: &mut Vec<(Field, Vec<f64>)>, rows: usize) {
    let position = |columns: &[(Field, Vec<f64>)], field| columns.iter().position(|(f, _)| *f == field);
    let column = |field| position(columns, field).map(|i| &columns[i].1);
    let memory: Option<Vec<f64>> = column(Field::MemoryUsedMb)
        .zip(column(Field::MemoryTotalMb))
        .map(|(used, total)| used.iter().zip(total).map(|(&u, &t)| memory_percent(u, t)).collect());
    let utils: Vec<&Vec<f64>> =
        columns.iter().filter(|(f, _)| matches!(f, Field::GpuUtilization(_))).map(|(_, c)| c).collect();
    let gpu: Option<Vec<f64>> = (!utils.is_empty()).then(|| {
        (0..rows).map(|r| mean_utilization(utils.iter().filter_map(|c| c.get(r).copied()))).collect()
    });
    for (field, derived) in [(Field::Memory, memory), (Field::Gpu, gpu)] {
        let Some(derived) = derived else { continue };
        match position(columns, field) {
            Some(i) => {
                for (stored, derived) in columns[i].1.iter_mut().zip(derived) {
                    if stored.is_nan() {
                        *stored = derived;
                    }
                }
            }
            None if rows > 0 => columns.push((field, derived)),
            None => {}
        }
    }
}
