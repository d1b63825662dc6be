//! Property tests: every policy against a small, obviously-correct O(n) reference model
//! on random traces, plus structural invariants for all policies.

mod common;

use std::collections::VecDeque;
use std::num::NonZeroUsize;

use common::{hits, misses, requests};
use proptest::prelude::*;
use strata_policies::*;

fn trace() -> impl Strategy<Value = (Vec<u64>, usize)> {
    (1u64..40, 1usize..24).prop_flat_map(|(universe, cap)| (prop::collection::vec(0..universe, 0..400), Just(cap)))
}

fn skewed_trace() -> impl Strategy<Value = (Vec<u64>, usize)> {
    // Squaring a uniform draw skews towards low ids, so frequencies differ.
    (2u64..60, 1usize..24).prop_flat_map(|(universe, cap)| {
        (prop::collection::vec((0..universe * universe).prop_map(move |x| (x as f64).sqrt() as u64), 0..400), Just(cap))
    })
}

// ---------------------------------------------------------------- reference models

fn lru_model(ids: &[u64], cap: usize) -> Vec<bool> {
    let mut c = lru::LruCache::new(NonZeroUsize::new(cap).unwrap());
    ids.iter()
        .map(|&id| {
            if c.get(&id).is_some() {
                true
            } else {
                c.push(id, ());
                false
            }
        })
        .collect()
}

fn fifo_model(ids: &[u64], cap: usize) -> Vec<bool> {
    let mut q: VecDeque<u64> = VecDeque::new();
    ids.iter()
        .map(|&id| {
            if q.contains(&id) {
                return true;
            }
            if q.len() == cap {
                q.pop_front();
            }
            q.push_back(id);
            false
        })
        .collect()
}

/// Queue front = oldest; eviction rotates referenced rows to the back.
fn clock_model(ids: &[u64], cap: usize, bits: u32) -> Vec<bool> {
    let max = (1u32 << bits) - 1;
    let mut q: VecDeque<(u64, u32)> = VecDeque::new();
    ids.iter()
        .map(|&id| {
            if let Some(e) = q.iter_mut().find(|e| e.0 == id) {
                e.1 = (e.1 + 1).min(max);
                return true;
            }
            if q.len() == cap {
                while q[0].1 > 0 {
                    let mut e = q.pop_front().unwrap();
                    e.1 -= 1;
                    q.push_back(e);
                }
                q.pop_front();
            }
            q.push_back((id, 0));
            false
        })
        .collect()
}

/// Index 0 = oldest; the hand moves towards newer rows and wraps to the oldest.
fn sieve_model(ids: &[u64], cap: usize) -> Vec<bool> {
    let mut v: Vec<(u64, bool)> = Vec::new();
    let mut hand: Option<usize> = None;
    ids.iter()
        .map(|&id| {
            if let Some(e) = v.iter_mut().find(|e| e.0 == id) {
                e.1 = true;
                return true;
            }
            if v.len() == cap {
                let mut i = hand.unwrap_or(0);
                while v[i].1 {
                    v[i].1 = false;
                    i = (i + 1) % v.len();
                }
                v.remove(i);
                hand = if i < v.len() { Some(i) } else { None };
            }
            v.push((id, false));
            false
        })
        .collect()
}

/// Evict the lowest count; among equal counts, the row that reached it first.
fn lfu_model(ids: &[u64], cap: usize) -> Vec<bool> {
    // (id, count, time it reached this count)
    let mut v: Vec<(u64, u64, usize)> = Vec::new();
    ids.iter()
        .enumerate()
        .map(|(t, &id)| {
            if let Some(e) = v.iter_mut().find(|e| e.0 == id) {
                e.1 += 1;
                e.2 = t;
                return true;
            }
            if v.len() == cap {
                let i = (0..v.len()).min_by_key(|&i| (v[i].1, v[i].2)).unwrap();
                v.remove(i);
            }
            v.push((id, 1, t));
            false
        })
        .collect()
}

/// ARC as specified by Megiddo & Modha with libCacheSim's choices (float p, ghosts
/// trimmed only when the cache is full). Lists are Vecs with the MRU end last.
fn arc_model(ids: &[u64], c: usize) -> Vec<bool> {
    let (mut t1, mut t2, mut b1, mut b2): (Vec<u64>, Vec<u64>, Vec<u64>, Vec<u64>) = Default::default();
    let mut p = 0.0f64;
    let pos = |l: &Vec<u64>, id: u64| l.iter().position(|&x| x == id);
    fn replace(t1: &mut Vec<u64>, t2: &mut Vec<u64>, b1: &mut Vec<u64>, b2: &mut Vec<u64>, p: f64, in_b2: bool) {
        let n1 = t1.len() as f64;
        if (!t1.is_empty() && (n1 > p || (n1 == p && in_b2))) || t2.is_empty() {
            b1.push(t1.remove(0));
        } else {
            b2.push(t2.remove(0));
        }
    }
    ids.iter()
        .map(|&id| {
            if let Some(i) = pos(&t1, id) {
                t1.remove(i);
                t2.push(id);
                return true;
            }
            if let Some(i) = pos(&t2, id) {
                t2.remove(i);
                t2.push(id);
                return true;
            }
            let full = t1.len() + t2.len() >= c;
            if let Some(i) = pos(&b1, id) {
                p = (p + (b2.len() as f64 / b1.len() as f64).max(1.0)).min(c as f64);
                b1.remove(i);
                if full {
                    replace(&mut t1, &mut t2, &mut b1, &mut b2, p, false);
                }
                t2.push(id);
            } else if let Some(i) = pos(&b2, id) {
                p = (p - (b1.len() as f64 / b2.len() as f64).max(1.0)).max(0.0);
                b2.remove(i);
                if full {
                    replace(&mut t1, &mut t2, &mut b1, &mut b2, p, true);
                }
                t2.push(id);
            } else {
                if full {
                    if t1.len() + b1.len() + 1 > c {
                        if !b1.is_empty() {
                            b1.remove(0);
                            replace(&mut t1, &mut t2, &mut b1, &mut b2, p, false);
                        } else {
                            t1.remove(0);
                        }
                    } else {
                        if t1.len() + b1.len() + t2.len() + b2.len() >= 2 * c && !b2.is_empty() {
                            b2.remove(0);
                        }
                        replace(&mut t1, &mut t2, &mut b1, &mut b2, p, false);
                    }
                }
                t1.push(id);
            }
            false
        })
        .collect()
}

/// S3-FIFO with libCacheSim's queue sizing; VecDeques with the newest at the back.
fn s3fifo_model(ids: &[u64], c: usize, small_ratio: f64, ghost_ratio: f64, thr: u32) -> Vec<bool> {
    let small_cap = ((c as f64 * small_ratio) as usize).max(1);
    let main_cap = c - small_cap.min(c);
    let ghost_cap = (c as f64 * ghost_ratio) as usize;
    let mut small: VecDeque<(u64, u32)> = VecDeque::new();
    let mut main: VecDeque<(u64, u32)> = VecDeque::new();
    let mut ghost: VecDeque<u64> = VecDeque::new();
    let mut has_evicted = false;
    ids.iter()
        .map(|&id| {
            if let Some(e) = small.iter_mut().chain(main.iter_mut()).find(|e| e.0 == id) {
                e.1 += 1;
                return true;
            }
            let ghost_hit = if let Some(i) = ghost.iter().position(|&g| g == id) {
                ghost.remove(i);
                true
            } else {
                false
            };
            while small.len() + main.len() >= c {
                has_evicted = true;
                if main.len() > main_cap || small.is_empty() {
                    while let Some((v, f)) = main.pop_front() {
                        if f >= 1 {
                            main.push_back((v, f.min(3) - 1));
                        } else {
                            break;
                        }
                    }
                } else {
                    while let Some((v, f)) = small.pop_front() {
                        if f >= thr {
                            main.push_back((v, 0));
                        } else {
                            if ghost_cap > 0 {
                                if ghost.len() >= ghost_cap {
                                    ghost.pop_front();
                                }
                                ghost.push_back(v);
                            }
                            break;
                        }
                    }
                }
            }
            if ghost_hit || (!has_evicted && small.len() >= small_cap) {
                main.push_back((id, 0));
            } else {
                small.push_back((id, 0));
            }
            false
        })
        .collect()
}

/// Brute-force MIN: evict the resident row whose next use (found by scanning) is
/// farthest; returns the miss count.
fn min_model_misses(ids: &[u64], cap: usize) -> usize {
    let mut res: Vec<u64> = Vec::new();
    let mut misses = 0;
    for (t, &id) in ids.iter().enumerate() {
        if res.contains(&id) {
            continue;
        }
        misses += 1;
        if res.len() == cap {
            let next = |x: u64| ids[t + 1..].iter().position(|&y| y == x).unwrap_or(usize::MAX);
            let i = (0..res.len()).max_by_key(|&i| next(res[i])).unwrap();
            res.remove(i);
        }
        res.push(id);
    }
    misses
}

/// Brute-force lookahead Belady: LRU among rows whose next use is beyond `t + window`,
/// else the farthest known next use.
fn lookahead_model(ids: &[u64], cap: usize, window: u64) -> Vec<bool> {
    let mut res: Vec<(u64, usize)> = Vec::new(); // (id, last use)
    ids.iter()
        .enumerate()
        .map(|(t, &id)| {
            if let Some(e) = res.iter_mut().find(|e| e.0 == id) {
                e.1 = t;
                return true;
            }
            if res.len() == cap {
                let horizon = (t as u64).saturating_add(window);
                let next = |x: u64| ids[t + 1..].iter().position(|&y| y == x).map(|p| (t + 1 + p) as u64);
                let unknown = (0..res.len()).filter(|&i| next(res[i].0).is_none_or(|n| n > horizon)).min_by_key(|&i| res[i].1);
                let i = unknown.unwrap_or_else(|| (0..res.len()).max_by_key(|&i| next(res[i].0)).unwrap());
                res.remove(i);
            }
            res.push((id, t));
            false
        })
        .collect()
}

fn static_model(ids: &[u64], cap: usize, profile: usize) -> Vec<bool> {
    let mut counts = std::collections::BTreeMap::<u64, u64>::new();
    for &id in ids.iter().take(profile) {
        *counts.entry(id).or_default() += 1;
    }
    let mut ranked: Vec<(u64, u64)> = counts.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let pinned: Vec<u64> = ranked.iter().take(cap).map(|e| e.0).collect();
    ids.iter().enumerate().map(|(t, id)| t >= profile && pinned.contains(id)).collect()
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn lru_matches_lru_crate((ids, cap) in trace()) {
        let reqs = requests(&ids);
        prop_assert_eq!(hits(&mut Lru::new(cap), &reqs), lru_model(&ids, cap));
    }

    #[test]
    fn fifo_matches_model((ids, cap) in trace()) {
        prop_assert_eq!(hits(&mut Fifo::new(cap), &requests(&ids)), fifo_model(&ids, cap));
    }

    #[test]
    fn clock_matches_model((ids, cap) in skewed_trace(), bits in 1u8..4) {
        prop_assert_eq!(hits(&mut Clock::new(cap, bits), &requests(&ids)), clock_model(&ids, cap, bits as u32));
    }

    #[test]
    fn sieve_matches_model((ids, cap) in trace()) {
        prop_assert_eq!(hits(&mut Sieve::new(cap), &requests(&ids)), sieve_model(&ids, cap));
    }

    #[test]
    fn lfu_without_aging_matches_model((ids, cap) in skewed_trace()) {
        prop_assert_eq!(hits(&mut Lfu::new(cap, 0), &requests(&ids)), lfu_model(&ids, cap));
    }

    #[test]
    fn arc_matches_model((ids, cap) in skewed_trace()) {
        prop_assert_eq!(hits(&mut Arc::new(cap), &requests(&ids)), arc_model(&ids, cap));
    }

    #[test]
    fn s3fifo_matches_model((ids, cap) in skewed_trace(), small in prop::sample::select(vec![0.1, 0.25, 0.5]),
                            ghost in prop::sample::select(vec![0.0, 0.5, 0.9, 2.0]), thr in 1u32..4) {
        prop_assert_eq!(hits(&mut S3Fifo::new(cap, small, ghost, thr), &requests(&ids)),
                        s3fifo_model(&ids, cap, small, ghost, thr));
    }

    #[test]
    fn belady_matches_brute_force_min((ids, cap) in trace()) {
        let reqs = requests(&ids);
        prop_assert_eq!(misses(&mut Belady::new(cap), &reqs), min_model_misses(&ids, cap));
    }

    #[test]
    fn belady_is_optimal_among_online_policies((ids, cap) in skewed_trace()) {
        let reqs = requests(&ids);
        let opt = misses(&mut Belady::new(cap), &reqs);
        for name in ["lru", "fifo", "clock", "lfu", "arc", "s3fifo", "sieve", "tinylfu"] {
            let mut p = PolicyConfig::from_name(name).unwrap().build(cap).unwrap();
            prop_assert!(misses(p.as_mut(), &reqs) >= opt, "{} beat Belady", name);
        }
    }

    #[test]
    fn lookahead_matches_brute_force((ids, cap) in trace(), window in 0u64..50) {
        prop_assert_eq!(hits(&mut LookaheadBelady::new(cap, window), &requests(&ids)),
                        lookahead_model(&ids, cap, window));
    }

    #[test]
    fn lookahead_extremes((ids, cap) in trace()) {
        let reqs = requests(&ids);
        // Window 0: exactly LRU. Window >= trace length: Belady's miss count.
        prop_assert_eq!(hits(&mut LookaheadBelady::new(cap, 0), &reqs), hits(&mut Lru::new(cap), &reqs));
        prop_assert_eq!(misses(&mut LookaheadBelady::new(cap, ids.len() as u64), &reqs),
                        misses(&mut Belady::new(cap), &reqs));
        prop_assert_eq!(misses(&mut LookaheadBelady::new(cap, u64::MAX), &reqs),
                        misses(&mut Belady::new(cap), &reqs));
    }

    #[test]
    fn static_matches_model((ids, cap) in skewed_trace(), profile in 0usize..200) {
        prop_assert_eq!(hits(&mut StaticPlacement::new(cap, profile as u64), &requests(&ids)),
                        static_model(&ids, cap, profile));
    }

    #[test]
    fn invariants_hold_for_every_policy((ids, cap) in skewed_trace(), removes in prop::collection::vec(any::<bool>(), 400)) {
        let reqs = requests(&ids);
        for name in PolicyConfig::NAMES {
            let cfg = match *name {
                // Short profiling so the pinned phase is exercised too.
                "static" => PolicyConfig::Static { profile_requests: 50 },
                "lfu" => PolicyConfig::Lfu { aging_period: Some(7) },
                n => PolicyConfig::from_name(n).unwrap(),
            };
            let mut p = cfg.build(cap).unwrap();
            let mut net: i64 = 0;
            for (i, r) in reqs.iter().enumerate() {
                let before = p.contains(r.id);
                let a = p.access(r);
                prop_assert_eq!(a.hit, before, "{}: hit must equal prior residency", name);
                prop_assert!(!(a.hit && a.inserted), "{}: a hit inserts nothing", name);
                if a.hit || a.inserted {
                    prop_assert!(p.contains(r.id), "{}: accessed row resident", name);
                }
                if let Some(v) = a.evicted {
                    prop_assert!(!p.contains(v), "{}: evicted row {} still resident", name, v);
                    prop_assert!(v != r.id || !a.inserted, "{}: evicted the inserted row", name);
                    net -= 1;
                }
                net += a.inserted as i64;
                prop_assert!(p.len() <= cap, "{}: len {} > capacity {}", name, p.len(), cap);
                if removes[i % removes.len()] && i % 5 == 0 {
                    let victim = ids[(i * 7) % ids.len()];
                    let was = p.contains(victim);
                    prop_assert_eq!(p.remove(victim), was, "{}: remove reports residency", name);
                    prop_assert!(!p.contains(victim));
                    net -= was as i64;
                }
                if *name != "static" {
                    prop_assert_eq!(net, p.len() as i64, "{}: inserted - evicted - removed == len", name);
                }
            }
        }
    }
}

#[test]
fn policies_fill_to_capacity_on_distinct_rows() {
    let ids: Vec<u64> = (0..100).collect();
    let reqs = requests(&ids);
    for name in PolicyConfig::NAMES.iter().filter(|n| **n != "static") {
        let mut p = PolicyConfig::from_name(name).unwrap().build(10).unwrap();
        for r in &reqs {
            p.access(r);
        }
        assert_eq!(p.len(), 10, "{name}");
        assert_eq!(p.capacity(), 10);
        assert_eq!(p.name(), *name);
    }
}
