//! Criterion benchmark of every eviction policy's request rate (requests per second,
//! reported as element throughput) on a generated Zipf trace, at capacities of 1% and
//! 10% of the distinct keys.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use strata_policies::{replay, Admission, PolicyConfig, ReplayStats, Request, NEVER};

const REQUESTS: usize = 1_000_000;
const KEYS: usize = 100_000;
const ALPHA: f64 = 0.9;

/// Zipf(`ALPHA`) over `KEYS` keys by inverse-CDF sampling, with ranks shuffled over the id
/// space and `next_access` filled in (so the Belady family can run too).
fn zipf_trace() -> Vec<Request> {
    let mut rng = SmallRng::seed_from_u64(42);
    let mut cdf = Vec::with_capacity(KEYS);
    let mut acc = 0.0;
    for k in 1..=KEYS {
        acc += 1.0 / (k as f64).powf(ALPHA);
        cdf.push(acc);
    }
    let mut perm: Vec<u64> = (0..KEYS as u64).collect();
    for i in (1..KEYS).rev() {
        perm.swap(i, rng.gen_range(0..=i));
    }
    let ids: Vec<u64> = (0..REQUESTS)
        .map(|_| {
            let u = rng.gen::<f64>() * acc;
            perm[cdf.partition_point(|&c| c < u).min(KEYS - 1)]
        })
        .collect();
    let mut next = vec![NEVER; REQUESTS];
    let mut last = vec![NEVER; KEYS];
    for i in (0..REQUESTS).rev() {
        next[i] = last[ids[i] as usize];
        last[ids[i] as usize] = i as u64;
    }
    ids.iter().enumerate().map(|(i, &id)| Request { id, time: i as u64, next_access: next[i] }).collect()
}

fn bench_policies(c: &mut Criterion) {
    let trace = zipf_trace();
    let distinct = {
        let mut seen = vec![false; KEYS];
        trace.iter().filter(|r| !std::mem::replace(&mut seen[r.id as usize], true)).count()
    };
    let mut group = c.benchmark_group("policy_ops");
    group.throughput(Throughput::Elements(trace.len() as u64));
    group.sample_size(10);
    for name in ["lru", "fifo", "clock", "sieve", "lfu", "lfu:0", "arc", "s3fifo", "tinylfu", "belady", "lookahead:4096", "static:100000"] {
        let cfg = PolicyConfig::from_name(name).expect("valid policy name");
        for pct in [1usize, 10] {
            let capacity = (distinct * pct / 100).max(1);
            group.bench_with_input(BenchmarkId::new(cfg.label(), format!("{pct}%")), &capacity, |b, &cap| {
                b.iter(|| {
                    let mut policy = cfg.build(cap).expect("valid capacity");
                    let mut admission = Admission::always();
                    let mut stats = ReplayStats::default();
                    replay(policy.as_mut(), &mut admission, &trace, &mut stats);
                    stats.misses
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_policies);
criterion_main!(benches);
