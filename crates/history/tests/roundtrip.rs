//! History compression round-trips exactly (property tests).

use cloudai_history::{Field, GorillaSeries, History, HistoryConfig, Sample};
use proptest::prelude::*;

/// Timestamps that exercise every delta-of-delta bucket: regular, jittered, equal, backwards, wild.
fn timestamps(max_len: usize) -> impl Strategy<Value = Vec<i64>> {
    let step = prop_oneof![
        Just(5_000i64),
        4_990i64..5_010,
        -300i64..300,
        -5_000i64..5_000,
        -3_000_000_000i64..3_000_000_000,
        any::<i64>(),
    ];
    (any::<i64>(), prop::collection::vec(step, 0..max_len)).prop_map(|(start, steps)| {
        std::iter::once(start)
            .chain(steps.into_iter().scan(start, |t, d| {
                *t = t.wrapping_add(d);
                Some(*t)
            }))
            .collect()
    })
}

/// Any bit pattern (NaN payloads, -0.0, infinities, subnormals) plus the usual telemetry shapes.
fn value() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<u64>().prop_map(f64::from_bits),
        any::<f32>().prop_map(f64::from),
        (0u32..100_000).prop_map(f64::from),
        Just(0.0),
        Just(-0.0),
        Just(f64::NAN),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_points_round_trip_bit_for_bit(points in prop::collection::vec((any::<i64>(), any::<u64>()), 0..200)) {
        let mut series = GorillaSeries::new();
        for &(t, bits) in &points {
            series.push(t, f64::from_bits(bits));
        }
        prop_assert_eq!(series.len(), points.len());
        let back: Vec<(i64, u64)> = series.iter().map(|(t, v)| (t, v.to_bits())).collect();
        prop_assert_eq!(back, points);
    }

    #[test]
    fn telemetry_shaped_points_round_trip_bit_for_bit(
        (ts, values) in timestamps(300).prop_flat_map(|ts| {
            let n = ts.len();
            (Just(ts), prop::collection::vec(value(), n))
        })
    ) {
        let mut series = GorillaSeries::new();
        for (&t, &v) in ts.iter().zip(&values) {
            series.push(t, v);
        }
        let back: Vec<(i64, u64)> = series.iter().map(|(t, v)| (t, v.to_bits())).collect();
        let want: Vec<(i64, u64)> = ts.iter().zip(&values).map(|(&t, v)| (t, v.to_bits())).collect();
        prop_assert_eq!(back, want);
    }

    /// The columnar raw tier gives back every finite value it kept, at its timestamp.
    #[test]
    fn raw_tier_returns_what_was_appended(
        offsets in prop::collection::vec(-20_000i64..20_000, 1..200),
        values in prop::collection::vec(any::<f32>(), 200),
    ) {
        let mut history = History::new(HistoryConfig::default()).unwrap();
        let mut want = Vec::new();
        for (i, (&offset, &v)) in offsets.iter().zip(&values).enumerate() {
            let ts = 1_000_000_000 + i as i64 * 5_000 + offset;
            let v = f64::from(v);
            history.append(&Sample { timestamp_ms: ts, cpu: v, ..Sample::default() });
            if v.is_finite() {
                want.push((ts, v.to_bits()));
            }
        }
        want.sort_by_key(|p| p.0);
        let series = history.query(i64::MIN, i64::MAX, 0);
        let got: Vec<(i64, u64)> =
            series.get(Field::Cpu).iter().map(|p| (p.timestamp_ms, p.avg.to_bits())).collect();
        prop_assert_eq!(got, want);
    }
}
