//! Pins: every policy replays random traces in batches whose rows are pinned for the
//! batch, and never evicts a pinned row, never holds more than its capacity, keeps every
//! row of a batch that fits, and answers as before once its pins are gone.

mod common;

use std::collections::BTreeSet;

use common::requests;
use strata_policies::{Access, EvictionPolicy, PolicyConfig, Request, Resident};

/// Every policy `PolicyConfig` builds, with the parameters the other tests use.
const NAMES: &[&str] =
    &["lru", "fifo", "clock", "clock:3", "lfu", "lfu:0", "arc", "s3fifo", "sieve", "tinylfu", "belady", "lookahead:64", "static:50"];

/// Whether the policy admits every miss it can make room for (a batch whose rows fit
/// then ends with all of them resident). Not static placement (it admits only its hot
/// set once profiled); `Resident` (built apart) admits only while it has room.
fn admits_every_miss(config: &PolicyConfig) -> bool {
    !matches!(config, PolicyConfig::Static { .. })
}

/// A skewed random trace of `len` ids in `0..rows`.
fn trace(rows: u64, len: usize, seed: u64) -> Vec<u64> {
    let mut state = seed;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((state >> 11) % 1_000_000) as f64 / 1_000_000.0;
            ((rows as f64) * u * u) as u64 % rows
        })
        .collect()
}

/// Batch lengths cutting `len` requests: from 1 to a few times `capacity`, so that some
/// batches fit in the cache and some do not.
fn batch_lengths(len: usize, capacity: usize, seed: u64) -> Vec<usize> {
    let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut lengths = Vec::new();
    let mut left = len;
    while left > 0 {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let n = (1 + (state >> 33) as usize % (3 * capacity + 2)).min(left);
        lengths.push(n);
        left -= n;
    }
    lengths
}

fn build(name: &str, capacity: usize) -> (PolicyConfig, Box<dyn EvictionPolicy>) {
    let config = PolicyConfig::from_name(name).unwrap();
    let policy = config.build(capacity).unwrap();
    (config, policy)
}

/// Replays `reqs` through `policy` in batches of `lengths`, each batch's rows pinned
/// for the batch, checking every answer. Returns how many batches fit in the cache and
/// how many misses were refused.
fn replay_pinned(
    policy: &mut dyn EvictionPolicy,
    admits_every_miss: bool,
    reqs: &[Request],
    lengths: &[usize],
    what: &str,
) -> (usize, u64) {
    let capacity = policy.capacity();
    let (mut fitting, mut refused) = (0, 0);
    let mut at = 0;
    for (b, &n) in lengths.iter().enumerate() {
        let batch = &reqs[at..at + n];
        at += n;
        let pinned: BTreeSet<u64> = batch.iter().map(|r| r.id).collect();
        policy.unpin_all();
        pinned.iter().for_each(|&id| policy.pin(id));
        for req in batch {
            let access = policy.access(req);
            let what = format!("{what}, batch {b}, request at {}", req.time);
            if let Some(victim) = access.evicted {
                assert!(!pinned.contains(&victim), "{what}: evicted pinned row {victim}");
                assert!(!policy.contains(victim), "{what}: row {victim} evicted but resident");
            }
            assert!(policy.len() <= capacity, "{what}: {} rows in a cache of {capacity}", policy.len());
            assert!(!access.inserted || policy.contains(req.id), "{what}: {access:?}");
            if !access.hit && !access.inserted && admits_every_miss {
                refused += 1;
                // Refused only when every resident row is pinned (and none left).
                let resident_pinned = pinned.iter().filter(|&&id| policy.contains(id)).count();
                assert_eq!((policy.len(), resident_pinned), (capacity, capacity), "{what}: refused with room to make");
                assert_eq!(access, Access::default(), "{what}");
            }
        }
        if pinned.len() <= capacity {
            fitting += 1;
        }
        if pinned.len() <= capacity && admits_every_miss {
            let missing: Vec<u64> = pinned.iter().copied().filter(|&id| !policy.contains(id)).collect();
            assert!(missing.is_empty(), "{what}, batch {b}: rows {missing:?} of a batch that fits are not resident");
        }
    }
    (fitting, refused)
}

#[test]
fn no_policy_evicts_a_pinned_row_and_a_batch_that_fits_stays_resident() {
    for name in NAMES {
        for (capacity, rows, seed) in [(1, 20, 1), (2, 30, 2), (5, 60, 3), (16, 200, 4), (64, 500, 5)] {
            let ids = trace(rows, 6000, seed);
            let reqs = requests(&ids);
            let lengths = batch_lengths(ids.len(), capacity, seed);
            let (config, mut policy) = build(name, capacity);
            let what = format!("{name} at capacity {capacity}");
            let (fitting, refused) = replay_pinned(policy.as_mut(), admits_every_miss(&config), &reqs, &lengths, &what);
            // Both kinds of batch happened, so both checks ran.
            assert!(fitting > 0 && fitting < lengths.len(), "{what}: {fitting} of {} batches fit", lengths.len());
            if admits_every_miss(&config) && capacity > 1 {
                assert!(refused > 0, "{what}: no batch filled the cache with pinned rows");
            }
        }
    }
}

#[test]
fn resident_and_static_placement_hold_pins_by_never_evicting() {
    for capacity in [3, 40] {
        let ids = trace(100, 5000, 7);
        let reqs = requests(&ids);
        let lengths = batch_lengths(ids.len(), capacity, 7);
        let mut resident = Resident::new(capacity);
        replay_pinned(&mut resident, false, &reqs, &lengths, "resident");
        assert_eq!(resident.len(), capacity);
        let (_, mut policy) = build("static:500", capacity);
        replay_pinned(policy.as_mut(), false, &reqs, &lengths, "static");
        assert_eq!(policy.len(), capacity);
    }
}

/// Accesses of `reqs`, in order.
fn answers(policy: &mut dyn EvictionPolicy, reqs: &[Request]) -> Vec<Access> {
    reqs.iter().map(|r| policy.access(r)).collect()
}

#[test]
fn pins_on_rows_that_never_come_change_nothing() {
    for name in NAMES {
        let capacity = 24;
        let reqs = requests(&trace(300, 8000, 11));
        let (_, mut plain) = build(name, capacity);
        let (_, mut pinned) = build(name, capacity);
        for (b, batch) in reqs.chunks(50).enumerate() {
            pinned.unpin_all();
            // Ids beyond the trace's: never resident, never candidates.
            (0..20).for_each(|i| pinned.pin(1000 + (b * 20 + i) as u64 % 700));
            assert_eq!(answers(pinned.as_mut(), batch), answers(plain.as_mut(), batch), "{name}, batch {b}");
        }
    }
}

#[test]
fn pins_dropped_before_any_request_leave_no_trace() {
    for name in NAMES {
        let capacity = 24;
        let reqs = requests(&trace(300, 8000, 12));
        let (_, mut plain) = build(name, capacity);
        let (_, mut pinned) = build(name, capacity);
        for (b, batch) in reqs.chunks(50).enumerate() {
            // Pin the batch's rows (resident ones too), then drop the pins unused.
            batch.iter().for_each(|r| pinned.pin(r.id));
            pinned.unpin_all();
            assert_eq!(answers(pinned.as_mut(), batch), answers(plain.as_mut(), batch), "{name}, batch {b}");
        }
    }
}

#[test]
fn after_unpin_all_every_miss_is_admitted_again() {
    for name in NAMES.iter().copied() {
        let capacity = 16;
        let (config, mut policy) = build(name, capacity);
        if !admits_every_miss(&config) {
            continue;
        }
        // A batch of more rows than the cache holds fills it with pinned rows...
        let first: Vec<u64> = (0..40).collect();
        let mut ids = first.clone();
        // ...then fresh rows, none of them pinned, each looked up once.
        ids.extend(100..160);
        let reqs = requests(&ids);
        first.iter().for_each(|&id| policy.pin(id));
        let refused = reqs[..40].iter().filter(|r| !policy.access(r).inserted).count();
        assert_eq!(refused, 40 - capacity, "{name}: the rows past the capacity are refused");
        policy.unpin_all();
        for req in &reqs[40..] {
            let access = policy.access(req);
            assert!(access.inserted && access.evicted.is_some(), "{name}, row {}: {access:?}", req.id);
        }
        assert_eq!(policy.len(), capacity);
    }
}

/// The rows evicted by requests for `ids` in turn.
fn victims(policy: &mut dyn EvictionPolicy, ids: &[u64]) -> Vec<Option<u64>> {
    requests(ids).iter().map(|r| policy.access(r).evicted).collect()
}

#[test]
fn each_policy_takes_its_next_candidate_past_the_pinned_ones() {
    // LRU: rows 1, 2, 3 in recency order, 1 and 2 pinned: 3 is the unpinned LRU row.
    let (_, mut lru) = build("lru", 3);
    victims(lru.as_mut(), &[1, 2, 3]);
    lru.pin(1);
    lru.pin(2);
    assert_eq!(victims(lru.as_mut(), &[4]), [Some(3)]);
    // The pinned rows kept their places: unpinned, 1 is the LRU row again.
    lru.unpin_all();
    assert_eq!(victims(lru.as_mut(), &[5, 6]), [Some(1), Some(2)]);

    // FIFO: a hit moves nothing; the oldest unpinned insertion goes.
    let (_, mut fifo) = build("fifo", 3);
    victims(fifo.as_mut(), &[1, 2, 3, 1]);
    fifo.pin(1);
    assert_eq!(victims(fifo.as_mut(), &[4, 5]), [Some(2), Some(3)]);
    fifo.unpin_all();
    assert_eq!(victims(fifo.as_mut(), &[6]), [Some(1)]);

    // LFU: row 1 twice, 2 and 3 once; 2 pinned: 3 is the least frequent unpinned row.
    let (_, mut lfu) = build("lfu:0", 3);
    victims(lfu.as_mut(), &[1, 1, 2, 3]);
    lfu.pin(2);
    lfu.pin(3);
    assert_eq!(victims(lfu.as_mut(), &[4]), [Some(1)], "only the more frequent row is unpinned");

    // Belady: the unpinned row used farthest ahead goes.
    let (_, mut belady) = build("belady", 2);
    let reqs = requests(&[1, 2, 3, 2, 1]);
    belady.access(&reqs[0]);
    belady.access(&reqs[1]);
    belady.pin(1);
    assert_eq!(belady.access(&reqs[2]).evicted, Some(2), "row 1 is used farthest ahead but pinned");

    // CLOCK and SIEVE pass over a pinned row and evict the next unreferenced one.
    for name in ["clock", "sieve"] {
        let (_, mut policy) = build(name, 3);
        victims(policy.as_mut(), &[1, 2, 3]);
        policy.pin(1);
        assert_eq!(victims(policy.as_mut(), &[4]), [Some(2)], "{name}");
    }

    // A pin taken before the row arrives holds once it is admitted.
    let (_, mut lru) = build("lru", 2);
    lru.pin(9);
    assert_eq!(victims(lru.as_mut(), &[9, 1, 2, 3]), [None, None, Some(1), Some(2)]);
}
