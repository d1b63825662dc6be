//! Exact, hand-computed hit/miss counts on small fixed traces.

mod common;

use common::{hits, misses, requests};
use strata_policies::*;

/// The textbook reference string (Silberschatz et al.), 3 frames.
const REF: [u64; 20] = [7, 0, 1, 2, 0, 3, 0, 4, 2, 3, 0, 3, 2, 1, 2, 0, 1, 7, 0, 1];

#[test]
fn lru_textbook_string() {
    assert_eq!(misses(&mut Lru::new(3), &requests(&REF)), 12);
}

#[test]
fn fifo_textbook_string() {
    assert_eq!(misses(&mut Fifo::new(3), &requests(&REF)), 15);
}

#[test]
fn belady_textbook_string() {
    assert_eq!(misses(&mut Belady::new(3), &requests(&REF)), 9);
}

#[test]
fn fifo_beladys_anomaly() {
    let s = [1, 2, 3, 4, 1, 2, 5, 1, 2, 3, 4, 5];
    assert_eq!(misses(&mut Fifo::new(3), &requests(&s)), 9);
    assert_eq!(misses(&mut Fifo::new(4), &requests(&s)), 10);
}

#[test]
fn lru_evicts_least_recent() {
    let reqs = requests(&[1, 2, 3, 1, 4, 2]);
    let mut p = Lru::new(3);
    let out: Vec<Access> = reqs.iter().map(|r| p.access(r)).collect();
    assert_eq!(out[4].evicted, Some(2));
    assert!(!out[5].hit);
    assert_eq!(out[5].evicted, Some(3));
}

#[test]
fn belady_reports_the_farthest_victim() {
    // At the miss on 4 (t=3): 1 is next used at 4, 2 at 6, 3 never -> evict 3.
    let reqs = requests(&[1, 2, 3, 4, 1, 4, 2]);
    let mut p = Belady::new(3);
    let out: Vec<Access> = reqs.iter().map(|r| p.access(r)).collect();
    assert_eq!(out[3].evicted, Some(3));
    assert_eq!(out.iter().filter(|a| !a.hit).count(), 4);
}

#[test]
fn sieve_keeps_visited_rows() {
    // 1 is hit before the cache fills; SIEVE evicts 2 (unvisited) for 4, then 3 for 5.
    let reqs = requests(&[1, 2, 3, 1, 4, 5, 1]);
    let mut p = Sieve::new(3);
    let out: Vec<Access> = reqs.iter().map(|r| p.access(r)).collect();
    assert_eq!(out[4].evicted, Some(2));
    assert_eq!(out[5].evicted, Some(3));
    assert!(out[6].hit);
}

#[test]
fn clock_second_chance() {
    // 1 referenced: the hand clears it and evicts 2.
    let reqs = requests(&[1, 2, 3, 1, 4]);
    let mut p = Clock::new(3, 1);
    let out: Vec<Access> = reqs.iter().map(|r| p.access(r)).collect();
    assert_eq!(out[4].evicted, Some(2));
}

#[test]
fn lfu_evicts_least_frequent_then_oldest() {
    let reqs = requests(&[1, 1, 2, 2, 3, 4, 5]);
    let mut p = Lfu::new(3, 0);
    let out: Vec<Access> = reqs.iter().map(|r| p.access(r)).collect();
    assert_eq!(out[5].evicted, Some(3));
    assert_eq!(out[6].evicted, Some(4));
}

#[test]
fn lfu_aging_lets_new_rows_displace_stale_hot_rows() {
    // Row 1 is hit 50 times early; later rows 2 and 3 alternate. Without aging row 1
    // stays forever; with aging its count decays and it is eventually evicted.
    let mut ids = vec![1u64; 50];
    for i in 0..400 {
        ids.push(2 + (i % 2));
        ids.push(10 + i); // one-off rows
    }
    let reqs = requests(&ids);
    let mut no_aging = Lfu::new(3, 0);
    let mut aging = Lfu::new(3, 20);
    hits(&mut no_aging, &reqs);
    hits(&mut aging, &reqs);
    assert!(no_aging.contains(1));
    assert!(!aging.contains(1));
}

#[test]
fn arc_promotes_on_second_hit() {
    let reqs = requests(&[1, 1, 2, 3, 4, 1]);
    let mut p = Arc::new(2);
    let h = hits(&mut p, &reqs);
    assert_eq!(h, vec![false, true, false, false, false, true]);
}

#[test]
fn s3fifo_one_hit_wonders_leave_quickly() {
    // Capacity 10: small queue 1 row. A scan of one-off rows must not flush the hot
    // rows 0..5 once they have been promoted to main.
    let mut ids: Vec<u64> = Vec::new();
    for _ in 0..5 {
        ids.extend(0..5);
    }
    ids.extend(100..200);
    ids.extend(0..5);
    let reqs = requests(&ids);
    let h = hits(&mut S3Fifo::new(10, 0.1, 0.9, 2), &reqs);
    assert!(h[h.len() - 5..].iter().all(|&x| x));
}

#[test]
fn static_profiles_then_pins() {
    // Profile 6 requests: counts 1:3, 2:2, 3:1. Capacity 2 pins {1, 2}.
    let ids = [1, 1, 2, 1, 2, 3, 3, 1, 2, 4, 3];
    let mut p = StaticPlacement::new(2, 6);
    let out: Vec<Access> = requests(&ids).iter().map(|r| p.access(r)).collect();
    assert!(out[..6].iter().all(|a| !a.hit && !a.inserted && a.evicted.is_none()));
    let h: Vec<bool> = out[6..].iter().map(|a| a.hit).collect();
    assert_eq!(h, vec![false, true, true, false, false]);
    assert_eq!(p.len(), 2);
    assert!(p.is_pinned());
}

#[test]
fn static_ties_go_to_lower_ids() {
    let ids = [5, 3, 4, 9, 9, 3, 4, 5];
    let mut p = StaticPlacement::new(2, 4);
    hits(&mut p, &requests(&ids));
    // Counts over the first 4: 5:1, 3:1, 4:1, 9:1 -> ids 3 and 4.
    assert!(p.contains(3) && p.contains(4) && !p.contains(5) && !p.contains(9));
}

#[test]
fn lookahead_uses_visible_future_only() {
    // Capacity 2. At t=2 (miss on 3): resident 1 (next use t=4), 2 (next use t=3).
    // Window 1: only 2's next use (t=3) is visible, so 1 is the unknown LRU -> evicted.
    // Window 2: both visible -> evict the farther, 1. Window 0: LRU -> evict 1 too.
    // Then t=3 (2) hits in every case.
    let reqs = requests(&[1, 2, 3, 2, 1]);
    for w in [0, 1, 2, 10] {
        let mut p = LookaheadBelady::new(2, w);
        let out: Vec<Access> = reqs.iter().map(|r| p.access(r)).collect();
        assert_eq!(out[2].evicted, Some(1), "window {w}");
        assert!(out[3].hit);
    }
    // Capacity 2, trace 1 2 1 3 2: at t=3 (miss on 3), 1 is the MRU (never used again),
    // 2 the LRU (next use t=4). Window 0 (LRU) evicts 2; window 1 sees 2's next use, so
    // 1 is the only unknown and goes.
    let reqs = requests(&[1, 2, 1, 3, 2]);
    assert_eq!(misses(&mut LookaheadBelady::new(2, 0), &reqs), 4);
    assert_eq!(misses(&mut LookaheadBelady::new(2, 1), &reqs), 3);
}

#[test]
fn replay_counts_with_and_without_admission() {
    let reqs = requests(&[1, 2, 1, 3, 1, 2]);
    let mut p = Lru::new(2);
    let mut stats = ReplayStats::default();
    replay(&mut p, &mut Admission::always(), &reqs, &mut stats);
    assert_eq!((stats.requests, stats.misses, stats.evictions), (6, 4, 2));

    // Frequency threshold 2: a row is admitted on its second request.
    let mut p = Lru::new(2);
    let mut adm = AdmissionConfig::Frequency { threshold: 2, counters: 1024, reset_interval: 0 }.build().unwrap();
    let mut stats = ReplayStats::default();
    replay(&mut p, &mut adm, &reqs, &mut stats);
    // 1 miss(not admitted), 2 miss, 1 miss(admitted), 3 miss, 1 hit, 2 miss(admitted)
    assert_eq!(stats.misses, 5);
    assert!(p.contains(1) && p.contains(2) && !p.contains(3));
}
