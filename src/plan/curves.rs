//! The planner's one pass over a workload: LRU miss-ratio curves per table and for all
//! tables together (exact by stack distances, or SHARDS-sampled), and every candidate
//! two-level set-up replayed through the engine's tier logic (spatially sampled for
//! long traces), from one streaming read of the trace.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use strata_policies::mrc::{SpatialSampler, StackDistances};
use strata_policies::{PolicyConfigError, Request, NEVER};

use crate::data::TableLayout;
use crate::progress::Progress;
use crate::sim::{TierCounts, TwoLevel, TwoLevelConfig};
use crate::trace::{KeyRemapper, KeySource, TraceError, TraceRecord};

/// A table whose rows fit under this count gets an exact curve even when the pass
/// samples: sampling it would keep too few of its rows, and tracking all of them is cheap.
pub const EXACT_TABLE_ROWS: u64 = 1 << 17;

/// A sampled set-up keeps at least this many rows of its smallest tier (its rate is
/// raised, by powers of two, until it does).
pub const MIN_SAMPLED_TIER_ROWS: u64 = 2048;

/// Requests read per chunk of the pass.
const PASS_CHUNK: usize = 1 << 18;

/// What one pass computes.
#[derive(Clone, Debug)]
pub struct PassOptions {
    /// The tables the keys are global rows of; `None` = keys are names, mapped to dense
    /// ids in first-seen order (one table).
    pub layout: Option<TableLayout>,
    /// SHARDS rate of the curves (1.0 = exact).
    pub sample_rate: f64,
    /// SHARDS rate of the two-level simulations before [`setup_rate`] raises it for
    /// small tiers (1.0 = every lookup).
    pub simulate_rate: f64,
    /// Two-level set-ups to replay.
    pub setups: Vec<TwoLevelConfig>,
    /// Lookups before this stream position warm the set-ups up uncounted.
    pub count_from: u64,
    /// Lookups per batch (the store reads a batch's rows once).
    pub batch_lookups: u64,
    /// Worker threads (at least 1).
    pub threads: usize,
}

/// The LRU curve of one table.
#[derive(Debug)]
pub struct TableCurve {
    pub name: String,
    /// Rows of the table (the layout's count, or the distinct rows seen).
    pub rows: u64,
    pub curve: StackDistances,
}

/// One set-up's counts and the rate it was replayed at.
#[derive(Clone, Debug)]
pub struct SetupCounts {
    pub config: TwoLevelConfig,
    pub sample_rate: f64,
    pub counts: TierCounts,
}

/// What the pass found.
#[derive(Debug)]
pub struct PassResult {
    pub requests: u64,
    /// Distinct rows requested (estimated from the sample when sampling).
    pub distinct_rows: u64,
    /// Per-table curves (empty for a key trace: `all` is its one table).
    pub tables: Vec<TableCurve>,
    pub all: StackDistances,
    pub setups: Vec<SetupCounts>,
    pub seconds: f64,
}

/// A share of the pass's work, run on one thread per chunk.
enum Work {
    All(StackDistances),
    Tables {
        layout: TableLayout,
        curves: Vec<StackDistances>,
    },
    /// Set-ups replaying the kept lookups of `streams[stream]`.
    Setups {
        stream: usize,
        setups: Vec<TwoLevel>,
    },
}

/// The lookups of each chunk that one sampler keeps, their rows renumbered densely in
/// first-seen order (so the policies' per-row arrays grow with the kept rows, not with
/// the whole id space). Filled once per chunk for every set-up sharing the rate.
struct SampledStream {
    sampler: SpatialSampler,
    remap: Option<KeyRemapper>,
    kept_ids: Vec<u64>,
    dense: Vec<u64>,
    kept: Vec<Request>,
}

impl SampledStream {
    fn new(sampler: SpatialSampler) -> Self {
        let remap = (!sampler.keeps_all()).then(KeyRemapper::new);
        SampledStream { sampler, remap, kept_ids: Vec::new(), dense: Vec::new(), kept: Vec::new() }
    }

    fn fill(&mut self, ids: &[u64], start: u64) {
        self.kept.clear();
        let Some(remap) = self.remap.as_mut() else {
            self.kept.extend(ids.iter().enumerate().map(|(i, &id)| Request { id, time: start + i as u64, next_access: NEVER }));
            return;
        };
        self.kept_ids.clear();
        let mut times = Vec::new();
        for (i, &id) in ids.iter().enumerate() {
            if self.sampler.keeps(id) {
                self.kept_ids.push(id);
                times.push(start + i as u64);
            }
        }
        remap.map_chunk(self.kept_ids.iter().copied(), &mut self.dense);
        self.kept.extend(self.dense.iter().zip(times).map(|(&id, time)| Request { id, time, next_access: NEVER }));
    }
}

impl Work {
    /// Runs the lookups `ids`, the first at stream position `start`; curves restart
    /// their counts at position `count_from` (the set-ups skip those lookups themselves).
    fn run(&mut self, ids: &[u64], start: u64, count_from: u64, streams: &[SampledStream]) {
        if let Work::Setups { stream, setups } = self {
            let kept = &streams[*stream].kept;
            setups.iter_mut().for_each(|s| s.replay(kept));
            return;
        }
        let is_curve = !matches!(self, Work::Setups { .. });
        if is_curve && count_from > 0 && (start..start + ids.len() as u64).contains(&count_from) {
            let split = (count_from - start) as usize;
            self.feed(&ids[..split]);
            match self {
                Work::All(curve) => curve.restart_counts(),
                Work::Tables { curves, .. } => curves.iter_mut().for_each(StackDistances::restart_counts),
                Work::Setups { .. } => {}
            }
            self.feed(&ids[split..]);
        } else {
            self.feed(ids);
        }
    }

    fn feed(&mut self, ids: &[u64]) {
        match self {
            Work::All(curve) => ids.iter().for_each(|&id| curve.access(id)),
            Work::Tables { layout, curves } => {
                let offsets: Vec<u64> = (0..layout.tables()).map(|t| layout.global_row(t, 0)).collect();
                for &id in ids {
                    let table = offsets.partition_point(|&o| o <= id) - 1;
                    curves[table].access(id - offsets[table]);
                }
            }
            Work::Setups { .. } => unreachable!("set-ups replay their sampled stream"),
        }
    }
}

/// The rate a set-up is replayed at: `rate`, raised by powers of two until its smallest
/// tier keeps [`MIN_SAMPLED_TIER_ROWS`] rows.
pub fn setup_rate(config: &TwoLevelConfig, rate: f64) -> f64 {
    let smallest = [config.device_rows, config.host_rows].into_iter().filter(|&r| r > 0).min().unwrap_or(u64::MAX);
    let mut rate = rate.min(1.0);
    while rate < 1.0 && (smallest as f64 * rate) < MIN_SAMPLED_TIER_ROWS as f64 {
        rate *= 2.0;
    }
    rate.min(1.0)
}

/// The rate of one table's curve: the pass's, or exact for a small table.
pub fn table_rate(rows: u64, pass_rate: f64) -> f64 {
    if rows <= EXACT_TABLE_ROWS {
        1.0
    } else {
        pass_rate
    }
}

fn stack_distances(rate: f64) -> StackDistances {
    if rate >= 1.0 {
        StackDistances::exact()
    } else {
        StackDistances::sampled(rate)
    }
}

impl PassOptions {
    /// Streams `source` once.
    pub fn run(&self, source: &mut dyn KeySource, total: Option<u64>) -> Result<PassResult, PassError> {
        let started = Instant::now();
        let mut work = vec![Work::All(stack_distances(self.sample_rate))];
        if let Some(layout) = &self.layout {
            let curves = layout.rows().iter().map(|&rows| stack_distances(table_rate(rows, self.sample_rate))).collect();
            work.push(Work::Tables { layout: layout.clone(), curves });
        }
        // Set-ups sharing a rate share the filtering; a few per share keeps threads busy.
        let mut by_rate: Vec<(u64, Vec<usize>)> = Vec::new();
        for (i, setup) in self.setups.iter().enumerate() {
            let key = setup_rate(setup, self.simulate_rate).to_bits();
            match by_rate.iter_mut().find(|(k, _)| *k == key) {
                Some((_, members)) => members.push(i),
                None => by_rate.push((key, vec![i])),
            }
        }
        let mut order = Vec::new();
        let mut streams = Vec::new();
        for (key, members) in by_rate {
            let sampler = SpatialSampler::new(f64::from_bits(key));
            let stream = streams.len();
            streams.push(SampledStream::new(sampler));
            for group in members.chunks(4) {
                let setups = group
                    .iter()
                    .map(|&i| Ok(TwoLevel::sampled(&self.setups[i], sampler)?.count_from(self.count_from).batches_of(self.batch_lookups)))
                    .collect::<Result<Vec<_>, PolicyConfigError>>()?;
                order.extend_from_slice(group);
                work.push(Work::Setups { stream, setups });
            }
        }
        let work: Vec<Mutex<Work>> = work.into_iter().map(Mutex::new).collect();

        let threads = self.threads.max(1);
        let mut remap = self.layout.is_none().then(KeyRemapper::new);
        let progress = Progress::new("planning pass", total);
        let (send, receive) = std::sync::mpsc::sync_channel::<Result<Vec<u64>, TraceError>>(4);
        let mut position = 0u64;
        let outcome: Result<(), TraceError> = std::thread::scope(|scope| {
            // The reader (and key mapper) runs ahead of the workers on its own thread.
            let reader = scope.spawn(move || {
                let mut records: Vec<TraceRecord> = Vec::with_capacity(PASS_CHUNK);
                loop {
                    let mut ids = Vec::with_capacity(PASS_CHUNK);
                    if let Err(e) = source.next_chunk(&mut records, PASS_CHUNK) {
                        let _ = send.send(Err(e));
                        return;
                    }
                    if records.is_empty() {
                        return;
                    }
                    match remap.as_mut() {
                        Some(remap) => remap.map_chunk(records.iter().map(|r| r.key), &mut ids),
                        None => ids.extend(records.iter().map(|r| r.key)),
                    }
                    if send.send(Ok(ids)).is_err() {
                        return;
                    }
                }
            });
            for ids in receive {
                let ids = ids?;
                streams.iter_mut().for_each(|s| s.fill(&ids, position));
                let streams = &streams;
                let next = AtomicUsize::new(0);
                let run = || loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(unit) = work.get(i) else { break };
                    unit.lock().expect("a worker panicked").run(&ids, position, self.count_from, streams);
                };
                std::thread::scope(|inner| {
                    for _ in 1..threads {
                        inner.spawn(run);
                    }
                    run();
                });
                position += ids.len() as u64;
                progress.advance(ids.len() as u64);
            }
            reader.join().expect("the trace reader panicked");
            Ok(())
        });
        outcome?;
        progress.finish();
        if position == 0 {
            return Err(PassError::Empty);
        }

        let mut all = None;
        let mut tables = Vec::new();
        let mut counts = Vec::new();
        for unit in work {
            match unit.into_inner().expect("a worker panicked") {
                Work::All(curve) => all = Some(curve),
                Work::Tables { layout, curves } => {
                    tables = curves
                        .into_iter()
                        .enumerate()
                        .map(|(t, curve)| TableCurve { name: format!("table {t}"), rows: layout.rows()[t], curve })
                        .collect();
                }
                Work::Setups { setups, .. } => counts.extend(setups),
            }
        }
        let all = all.expect("the all-tables curve is always computed");
        let mut setups: Vec<Option<SetupCounts>> = vec![None; self.setups.len()];
        for (i, sim) in order.into_iter().zip(counts) {
            let counted = position.saturating_sub(self.count_from);
            let counts = sim.shards_adjusted_counts(counted);
            setups[i] = Some(SetupCounts { config: self.setups[i].clone(), sample_rate: sim.sampler().rate(), counts });
        }
        Ok(PassResult {
            requests: position,
            distinct_rows: all.distinct_rows(),
            tables,
            setups: setups.into_iter().flatten().collect(),
            all,
            seconds: started.elapsed().as_secs_f64(),
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PassError {
    #[error(transparent)]
    Trace(#[from] TraceError),
    #[error("{0}")]
    Policy(#[from] PolicyConfigError),
    #[error("the workload is empty: nothing to plan")]
    Empty,
}
