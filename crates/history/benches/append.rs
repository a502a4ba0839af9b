//! Append cost per sample: `cargo bench -p cloudai-history --bench append`.

use std::hint::black_box;

use cloudai_history::{GorillaSeries, History, HistoryConfig, Sample};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

/// A smooth, slightly jittered heartbeat stream (deterministic, no RNG dependency).
fn samples(n: usize, gpus: u32) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let t = i as f64;
            let gpu_util = |g: u32| ((t / 40.0 + f64::from(g)).sin() * 40.0 + 50.0).round();
            Sample {
                timestamp_ms: 1_800_000_000_000 + i as i64 * 5_000 + (i as i64 * 7919 % 5) - 2,
                cpu: f64::from(((t / 30.0).sin() * 20.0 + 40.0) as f32),
                memory: (8_000.0 + (t / 100.0).cos() * 500.0).round() / 32_000.0 * 100.0,
                gpu: if gpus == 0 { 0.0 } else { (0..gpus).map(gpu_util).sum::<f64>() / f64::from(gpus) },
                memory_used_mb: (8_000.0 + (t / 100.0).cos() * 500.0).round(),
                memory_total_mb: 32_000.0,
                gpus: (0..gpus).map(|g| (g, gpu_util(g), 20_000.0 + f64::from(g) * 100.0)).collect(),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    for gpus in [0, 4] {
        let input = samples(720, gpus);
        group.throughput(Throughput::Elements(input.len() as u64));
        group.bench_function(format!("history_hour_{gpus}_gpus"), |b| {
            b.iter_batched(
                || History::new(HistoryConfig::default()).expect("default config is valid"),
                |mut history| {
                    for sample in &input {
                        black_box(history.append(sample));
                    }
                    history
                },
                BatchSize::SmallInput,
            )
        });
    }
    let points: Vec<(i64, f64)> = samples(720, 0).iter().map(|s| (s.timestamp_ms, s.cpu)).collect();
    group.throughput(Throughput::Elements(points.len() as u64));
    group.bench_function("gorilla_series", |b| {
        b.iter(|| {
            let mut series = GorillaSeries::new();
            for &(t, v) in &points {
                series.push(black_box(t), black_box(v));
            }
            series
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
