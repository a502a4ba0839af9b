//! Behaviour of one worker's history: expiry, queries, minute buckets, restore, disorder.

use cloudai_history::{
    Field, FieldStats, History, HistoryConfig, HistoryError, MINUTE_MS, MinuteBucket, Point, Sample,
    decode_buckets, encode_buckets,
};

const HOUR: i64 = 3_600_000;

fn history() -> History {
    History::new(HistoryConfig::default()).unwrap()
}

fn cpu(ts: i64, cpu: f64) -> Sample {
    Sample { timestamp_ms: ts, cpu, memory: 50.0, memory_used_mb: 4096.0, ..Sample::default() }
}

fn point(ts: i64, min: f64, avg: f64, max: f64) -> Point {
    Point { timestamp_ms: ts, min, avg, max }
}

fn raw_cpu(h: &History) -> Vec<(i64, f64)> {
    h.query(i64::MIN, i64::MAX, 0).get(Field::Cpu).iter().map(|p| (p.timestamp_ms, p.avg)).collect()
}

#[test]
fn config_is_validated() {
    let bad = HistoryConfig { block_ms: 90_000, ..HistoryConfig::default() };
    assert!(matches!(History::new(bad), Err(HistoryError::InvalidConfig(_))));
    let bad = HistoryConfig { window_ms: 0, ..HistoryConfig::default() };
    assert!(History::new(bad).is_err());
}

#[test]
fn block_is_dropped_whole_once_it_ends_at_the_window_edge() {
    let mut h = history();
    h.append(&cpu(0, 1.0));
    h.append(&cpu(599_999, 2.0));
    // The first block is [0, 10 min); the window reaches back to 10 min only at 70 min.
    h.append(&cpu(HOUR + 599_999, 3.0));
    assert_eq!(h.stats().raw_blocks, 2);
    assert_eq!(raw_cpu(&h), vec![(0, 1.0), (599_999, 2.0), (HOUR + 599_999, 3.0)]);
    h.append(&cpu(HOUR + 600_000, 4.0));
    assert_eq!(h.stats().raw_blocks, 2, "old block dropped, new one opened");
    assert_eq!(h.stats().raw_samples, 2);
    let raw = h.query(0, HOUR, 0);
    // What the raw tier lost is still answered by the minute tier, one point per minute.
    assert_eq!(raw.get(Field::Cpu), &[point(0, 1.0, 1.0, 1.0), point(540_000, 2.0, 2.0, 2.0)]);
}

#[test]
fn query_aggregates_min_avg_max_per_step() {
    let mut h = history();
    for i in 0..10 {
        h.append(&cpu(i * 1_000, i as f64));
    }
    let series = h.query(0, 10_000, 5_000);
    assert_eq!(series.get(Field::Cpu), &[point(0, 0.0, 2.0, 4.0), point(5_000, 5.0, 7.0, 9.0)]);
    assert_eq!(series.get(Field::Memory), &[point(0, 50.0, 50.0, 50.0), point(5_000, 50.0, 50.0, 50.0)]);
    // Steps are anchored at `since`; `until` is exclusive; empty steps are left out.
    let series = h.query(2_000, 9_000, 3_000);
    assert_eq!(
        series.get(Field::Cpu),
        &[point(2_000, 2.0, 3.0, 4.0), point(5_000, 5.0, 6.0, 7.0), point(8_000, 8.0, 8.0, 8.0)]
    );
    assert!(h.query(20_000, 30_000, 1_000).fields.is_empty());
    assert!(h.query(5_000, 5_000, 0).fields.is_empty());
}

#[test]
fn non_finite_values_are_missing_data() {
    let mut h = history();
    h.append(&cpu(0, f64::NAN));
    h.append(&cpu(1_000, f64::INFINITY));
    h.append(&cpu(2_000, 7.0));
    assert_eq!(raw_cpu(&h), vec![(2_000, 7.0)]);
    assert_eq!(h.query(0, 3_000, 3_000).get(Field::Cpu), &[point(0, 7.0, 7.0, 7.0)]);
}

#[test]
fn minute_closes_when_the_next_minute_starts() {
    let mut h = history();
    for i in 0..12 {
        assert_eq!(h.append(&cpu(i * 5_000, i as f64)), None);
    }
    let bucket = h.append(&cpu(MINUTE_MS, 100.0)).expect("first minute closed");
    assert_eq!(bucket.start_ms, 0);
    let cpu_stats = bucket.fields.iter().find(|s| s.field == Field::Cpu).unwrap();
    assert_eq!(*cpu_stats, FieldStats { field: Field::Cpu, min: 0.0, avg: 5.5, max: 11.0, count: 12 });
    assert_eq!(
        bucket.fields.iter().map(|s| s.field).collect::<Vec<_>>(),
        [Field::Cpu, Field::Memory, Field::Gpu, Field::MemoryUsedMb]
    );
    // A silent worker's last minute closes on a tick past its end, and only once.
    assert_eq!(h.tick(2 * MINUTE_MS - 1), None);
    assert_eq!(h.tick(2 * MINUTE_MS).map(|b| b.start_ms), Some(MINUTE_MS));
    assert_eq!(h.tick(3 * MINUTE_MS), None);
    assert_eq!(h.stats().minute_buckets, 2);
}

fn three_hours(h: &mut History) -> Vec<MinuteBucket> {
    // cpu = minute index, so each minute's bucket is constant and each hour's average known.
    (0..3 * 720).filter_map(|i| h.append(&cpu(i * 5_000, (i / 12) as f64))).collect()
}

#[test]
fn long_range_queries_are_answered_from_the_minute_tier() {
    let mut h = history();
    let closed = three_hours(&mut h);
    assert_eq!(closed.len(), 179, "every minute but the open last one");
    assert!(h.stats().raw_samples <= 840, "raw tier holds about an hour");
    let hourly = h.query(0, 3 * HOUR, HOUR as u64);
    assert_eq!(
        hourly.get(Field::Cpu),
        &[point(0, 0.0, 29.5, 59.0), point(HOUR, 60.0, 89.5, 119.0), point(2 * HOUR, 120.0, 149.5, 179.0),]
    );
    // Step 0 over the minute tier yields one point per minute.
    let minutes = h.query(0, HOUR, 0);
    assert_eq!(minutes.get(Field::Cpu).len(), 60);
    assert_eq!(minutes.get(Field::Cpu)[59], point(59 * MINUTE_MS, 59.0, 59.0, 59.0));
}

#[test]
fn minute_tier_expires_after_the_long_window() {
    let config = HistoryConfig { long_window_ms: 2 * HOUR, ..HistoryConfig::default() };
    let mut h = History::new(config).unwrap();
    three_hours(&mut h);
    let first_minute = |h: &History| h.query(0, 4 * HOUR, 0).get(Field::Cpu)[0].timestamp_ms;
    // Minutes are dropped an hour-long chunk at a time, once its last minute is out of the window.
    assert_eq!(first_minute(&h), 0);
    h.append(&cpu(3 * HOUR, 1.0));
    assert_eq!(first_minute(&h), HOUR);
    assert_eq!(h.stats().minute_buckets, 120);
}

#[test]
fn buckets_survive_encode_decode_and_restore() {
    let mut before = history();
    let closed = three_hours(&mut before);
    let bytes = encode_buckets(&closed);
    // Version, then per bucket 8 + 2 bytes and 19 per field (cpu, memory, gpu, memory MB).
    assert_eq!(bytes.len(), 1 + closed.len() * (10 + 4 * 19));
    let decoded = decode_buckets(&bytes).unwrap();
    assert_eq!(decoded, closed);

    let mut after = history();
    after.restore(decoded);
    let per_minute = |h: &History| h.query(0, 179 * MINUTE_MS, MINUTE_MS as u64);
    assert_eq!(per_minute(&after), per_minute(&before));
    assert_eq!(after.query(0, 3 * HOUR, 0).get(Field::Cpu).len(), 179);
    // New samples continue where the restored minutes end; a restored minute is not re-opened.
    assert_eq!(after.append(&cpu(10_000, 1.0)), None);
    assert_eq!(after.stats().late_samples, 1);
    let next = after.append(&cpu(3 * HOUR, 5.0));
    assert_eq!(next, None, "minute 180 is open");
    assert_eq!(after.tick(3 * HOUR + MINUTE_MS).map(|b| b.start_ms), Some(3 * HOUR));

    // Restoring again changes nothing: minutes already held win.
    let held = after.query(0, 4 * HOUR, 0);
    let mut tampered = closed.clone();
    tampered[0].fields[0].max = 1e9;
    after.restore(tampered);
    assert_eq!(after.query(0, 4 * HOUR, 0), held);
}

#[test]
fn malformed_bucket_bytes_are_an_error() {
    let good = encode_buckets(&[MinuteBucket {
        start_ms: MINUTE_MS,
        fields: vec![FieldStats { field: Field::GpuUtilization(3), min: 1.0, avg: 2.0, max: 3.0, count: 12 }],
    }]);
    assert!(decode_buckets(&good).is_ok());
    let mut bad_kind = good.clone();
    bad_kind[11] = 9;
    let mut min_above_max = good.clone();
    min_above_max[14..18].copy_from_slice(&5.0f32.to_le_bytes());
    let mut off_minute = good.clone();
    off_minute[1] = 1;
    for bytes in [&b""[..], &[7], &good[..good.len() - 1], &bad_kind, &min_above_max, &off_minute] {
        assert!(matches!(decode_buckets(bytes), Err(HistoryError::Decode(_))), "{bytes:?}");
    }
}

#[test]
fn out_of_order_samples_are_kept_and_returned_in_time_order() {
    let mut h = history();
    h.append(&cpu(10_000, 1.0));
    h.append(&cpu(5_000, 2.0));
    h.append(&cpu(5_000, 3.0));
    h.append(&cpu(15_000, 4.0));
    assert_eq!(raw_cpu(&h), vec![(5_000, 2.0), (5_000, 3.0), (10_000, 1.0), (15_000, 4.0)]);

    // A straggler for an earlier block still held goes into that block.
    h.append(&cpu(700_000, 5.0));
    h.append(&cpu(590_000, 6.0));
    assert_eq!(h.stats().raw_blocks, 2);
    assert_eq!(raw_cpu(&h).len(), 6);
    // It arrived after its minute closed, so only the raw tier has it.
    assert_eq!(h.stats().late_samples, 1);

    // Older than the window: nothing to keep it in.
    h.append(&cpu(3 * HOUR, 7.0));
    h.append(&cpu(HOUR, 8.0));
    assert_eq!(h.stats().expired_samples, 1);
    assert_eq!(raw_cpu(&h).last(), Some(&(3 * HOUR, 7.0)));
}

#[test]
fn gpus_appearing_later_are_tracked_per_index() {
    let mut h = history();
    h.append(&Sample { timestamp_ms: 0, cpu: 1.0, ..Sample::default() });
    let with_gpus = Sample {
        timestamp_ms: 5_000,
        gpus: vec![(0, 90.0, 1_000.0), (1, 10.0, 2_000.0)],
        ..Sample::default()
    };
    h.append(&with_gpus);
    h.append(&Sample {
        timestamp_ms: 10_000,
        gpus: vec![(1, 20.0, 2_500.0), (99, 1.0, 1.0)],
        ..Sample::default()
    });
    let series = h.query(0, 15_000, 0);
    assert_eq!(series.get(Field::GpuUtilization(0)), &[point(5_000, 90.0, 90.0, 90.0)]);
    let mem1: Vec<f64> = series.get(Field::GpuMemoryUsedMb(1)).iter().map(|p| p.avg).collect();
    assert_eq!(mem1, [2_000.0, 2_500.0]);
    assert!(series.get(Field::GpuUtilization(99)).is_empty(), "beyond max_gpus");
    let json = serde_json::to_string(&series).unwrap();
    assert!(json.contains(r#""gpu1_memory_used_mb":[{"timestamp_ms":5000"#), "{json}");
}

/// Before a restart: two samples in minute 1 (cpu 10 and 20), flushed as a partial bucket.
fn minute_flushed_at_a_restart() -> MinuteBucket {
    let mut before = history();
    before.append(&cpu(MINUTE_MS + 1_000, 10.0));
    before.append(&cpu(MINUTE_MS + 2_000, 20.0));
    before.tick(i64::MAX).expect("the open minute closes")
}

#[test]
fn a_restored_minute_and_new_samples_in_it_are_both_counted() {
    let flushed = minute_flushed_at_a_restart();
    // After: the bucket is restored, and the worker goes on within the same minute.
    let mut after = history();
    after.restore(vec![flushed]);
    after.append(&cpu(MINUTE_MS + 30_000, 60.0));
    let minute = after.query(MINUTE_MS, 2 * MINUTE_MS, MINUTE_MS as u64);
    assert_eq!(minute.get(Field::Cpu), [point(MINUTE_MS, 10.0, 30.0, 60.0)]);
    // Only the restored bucket lies before the restart.
    let before_restart = after.query(0, MINUTE_MS + 3_000, 0);
    assert_eq!(before_restart.get(Field::Cpu), [point(MINUTE_MS, 10.0, 15.0, 20.0)]);
}

#[test]
fn memory_percent_is_derived_from_used_and_total_when_the_total_is_known() {
    let mut h = history();
    let sample = |ts, used| Sample {
        timestamp_ms: ts,
        memory: used / 64_000.0 * 100.0,
        memory_used_mb: used,
        memory_total_mb: 64_000.0,
        ..Sample::default()
    };
    h.append(&sample(1_000, 16_000.0));
    h.append(&sample(6_000, 32_000.0));
    // A worker that does not report its total: memory % is kept as reported.
    h.append(&Sample { timestamp_ms: 11_000, memory: 42.5, ..Sample::default() });
    let raw = h.query(0, MINUTE_MS, 0);
    let memory: Vec<f64> = raw.get(Field::Memory).iter().map(|p| p.avg).collect();
    assert_eq!(memory, [25.0, 50.0, 42.5]);
    assert_eq!(raw.get(Field::MemoryTotalMb).len(), 2);
    // The minute tier keeps memory % itself.
    let bucket = h.tick(i64::MAX).expect("minute closes");
    let stats = bucket.fields.iter().find(|s| s.field == Field::Memory).expect("memory in the minute");
    assert_eq!((stats.min, stats.max, stats.count), (25.0, 50.0, 3));
}

#[test]
fn gpu_percent_is_derived_from_the_gpus_when_it_is_their_mean() {
    let mut h = history();
    let sample = |ts, gpu, utils: [f64; 2]| Sample {
        timestamp_ms: ts,
        gpu,
        gpus: vec![(0, utils[0], 1_000.0), (1, utils[1], 2_000.0)],
        ..Sample::default()
    };
    h.append(&sample(1_000, 30.0, [20.0, 40.0]));
    // A worker whose GPU % is not the plain mean keeps what it reported.
    h.append(&sample(6_000, 35.5, [20.0, 40.0]));
    let gpu: Vec<f64> = h.query(0, MINUTE_MS, 0).get(Field::Gpu).iter().map(|p| p.avg).collect();
    assert_eq!(gpu, [30.0, 35.5]);
}

#[test]
fn a_stored_minute_joins_the_open_one_when_samples_came_first() {
    let flushed = minute_flushed_at_a_restart();
    // After the restart a heartbeat arrives before the stored minutes are read back.
    let mut after = history();
    after.append(&cpu(MINUTE_MS + 30_000, 60.0));
    after.restore(vec![flushed]);
    let closed = after.tick(i64::MAX).expect("minute closes");
    let stats = closed.fields.iter().find(|s| s.field == Field::Cpu).expect("cpu");
    assert_eq!((stats.min, stats.avg, stats.max, stats.count), (10.0, 30.0, 60.0, 3));
}
