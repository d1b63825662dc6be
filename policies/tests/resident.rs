//! A tier that holds every row: each policy that says it evicts only when full answers
//! every request (hit, admitted, evicted) exactly as `Resident` does when its capacity
//! covers every row, so the engine may give such a tier `Resident` in its place; the
//! two that do not say so (W-TinyLFU, static placement) keep their own.

mod common;

use common::requests;
use strata_policies::{EvictionPolicy, PolicyConfig, Resident};

/// Ids 0..rows in a Zipf-like order with repeats, every id at least once.
fn trace(rows: u64, len: usize, seed: u64) -> Vec<u64> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        state >> 11
    };
    let mut ids: Vec<u64> = (0..len)
        .map(|_| {
            let u = (next() % 1_000_000) as f64 / 1_000_000.0;
            ((rows as f64) * u * u * u) as u64 % rows
        })
        .collect();
    ids.extend(0..rows);
    ids
}

fn policies() -> Vec<PolicyConfig> {
    ["lru", "fifo", "clock", "clock:3", "lfu", "arc", "s3fifo", "sieve", "tinylfu", "belady", "lookahead:64", "static:50"]
        .iter()
        .map(|name| PolicyConfig::from_name(name).unwrap())
        .collect()
}

#[test]
fn policies_that_evict_only_when_full_answer_as_resident_at_full_capacity() {
    for (rows, seed) in [(1, 1), (37, 2), (500, 7), (2000, 9)] {
        every_policy_answers_as_resident(rows, &requests(&trace(rows, 20_000, seed)));
    }
}

fn every_policy_answers_as_resident(rows: u64, reqs: &[strata_policies::Request]) {
    for config in policies().into_iter().filter(PolicyConfig::evicts_only_when_full) {
        for capacity in [rows as usize, rows as usize + 64] {
            let mut policy = config.build(capacity).unwrap();
            let mut resident = Resident::new(capacity);
            for (i, req) in reqs.iter().enumerate() {
                assert_eq!(policy.access(req), resident.access(req), "{} at capacity {capacity}, request {i}", config.label());
            }
            assert_eq!(policy.len(), rows as usize);
            // What the engine builds for such a tier.
            assert_eq!(config.build_for_rows(capacity, rows).unwrap().name(), "resident");
        }
        // Below every row it keeps the policy.
        if rows > 1 {
            assert_eq!(config.build_for_rows(rows as usize - 1, rows).unwrap().name(), config.name());
        }
    }
}

#[test]
fn policies_that_do_not_say_so_keep_their_own_answers() {
    let rows = 500;
    let reqs = requests(&trace(rows, 20_000, 7));
    for config in policies().into_iter().filter(|c| !c.evicts_only_when_full()) {
        assert_eq!(config.build_for_rows(rows as usize, rows).unwrap().name(), config.name());
    }
    // Static placement admits only its hot set: it answers otherwise. (W-TinyLFU's
    // segments can evict on a hit through their rounding, rarely: it keeps its own too.)
    let config = PolicyConfig::from_name("static:50").unwrap();
    let mut policy = config.build(rows as usize).unwrap();
    let mut resident = Resident::new(rows as usize);
    assert!(reqs.iter().any(|req| policy.access(req) != resident.access(req)));
}

#[test]
fn resident_admits_until_full_and_forgets_removed_rows() {
    let mut resident = Resident::new(2);
    let req = |id| strata_policies::Request::new(id, 0);
    assert!(resident.access(&req(1000)).inserted);
    assert!(resident.access(&req(1000)).hit);
    assert!(resident.access(&req(3)).inserted);
    let full = resident.access(&req(4));
    assert!(!full.hit && !full.inserted && full.evicted.is_none(), "full: refused, nothing evicted");
    assert!(resident.remove(1000) && !resident.remove(1000));
    assert_eq!((resident.len(), resident.contains(3), resident.contains(1000)), (1, true, false));
    assert!(resident.access(&req(4)).inserted);
}
