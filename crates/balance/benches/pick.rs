//! `Picker::pick` per strategy with 3, 10 and 100 candidates, no exclusions (the common
//! case), plus one excluded member (a retry). Run: `cargo bench -p hastack-balance --bench pick`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hastack_balance::{
    Candidate, HashAlgorithm, Load, PickRequest, Picker, Strategy, hash_key, member_id,
};
use tokio::time::Instant;

const STRATEGIES: [Strategy; 6] = [
    Strategy::RoundRobin,
    Strategy::Random,
    Strategy::LeastConn,
    Strategy::P2cEwma,
    Strategy::Hash(HashAlgorithm::Maglev),
    Strategy::Hash(HashAlgorithm::Ketama),
];

fn candidates(n: usize, now: Instant) -> Vec<Candidate> {
    (0..n)
        .map(|i| {
            let load = Arc::new(Load::new());
            load.observe(Duration::from_micros(200 + (i as u64 * 37) % 300), now);
            for _ in 0..(i % 4) {
                load.begin();
            }
            Candidate {
                member: i,
                id: member_id(&format!("10.0.0.{i}:8080")),
                weight: 1 + (i as u32 % 3),
                load,
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let now = Instant::now();
    let keys: Vec<u64> = (0..1024u32).map(|k| hash_key(&k.to_le_bytes())).collect();
    for (label, exclude) in [("pick", &[][..]), ("pick_excluding_one", &[0usize][..])] {
        let mut group = c.benchmark_group(label);
        for n in [3usize, 10, 100] {
            for s in STRATEGIES {
                let picker = Picker::new(s, candidates(n, now));
                let mut k = 0usize;
                group.bench_with_input(BenchmarkId::new(s.name(), n), &picker, |b, p| {
                    b.iter(|| {
                        k = (k + 1) & 1023;
                        let req = PickRequest {
                            now,
                            hash: Some(keys[k]),
                            exclude,
                        };
                        black_box(p.pick(black_box(&req)))
                    });
                });
            }
        }
        group.finish();
    }
    let mut group = c.benchmark_group("load");
    let load = Load::new();
    load.observe(Duration::from_micros(300), now);
    let mut t = now;
    group.bench_function("cost", |b| {
        b.iter(|| black_box(&load).cost(black_box(now)));
    });
    group.bench_function("observe", |b| {
        b.iter(|| {
            t += Duration::from_micros(50);
            black_box(&load).observe(Duration::from_micros(300), black_box(t));
        });
    });
    group.finish();

    let mut group = c.benchmark_group("build");
    for n in [3usize, 10, 100] {
        for s in STRATEGIES {
            let cands = candidates(n, now);
            group.bench_with_input(BenchmarkId::new(s.name(), n), &cands, |b, cands| {
                b.iter(|| black_box(Picker::new(s, cands.clone())));
            });
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
