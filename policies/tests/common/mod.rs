//! Helpers shared by the integration tests: building request streams with correct
//! `next_access` values.

#![allow(dead_code)]

use strata_policies::{Request, NEVER};

/// Requests for `ids` at times 0.., with `next_access` filled in.
pub fn requests(ids: &[u64]) -> Vec<Request> {
    let mut next = vec![NEVER; ids.len()];
    let mut last: std::collections::HashMap<u64, usize> = std::collections::HashMap::new();
    for (i, &id) in ids.iter().enumerate().rev() {
        if let Some(&j) = last.get(&id) {
            next[i] = j as u64;
        }
        last.insert(id, i);
    }
    ids.iter().enumerate().map(|(i, &id)| Request { id, time: i as u64, next_access: next[i] }).collect()
}

/// Hit/miss sequence of a policy over `reqs`.
pub fn hits(policy: &mut dyn strata_policies::EvictionPolicy, reqs: &[Request]) -> Vec<bool> {
    reqs.iter().map(|r| policy.access(r).hit).collect()
}

pub fn misses(policy: &mut dyn strata_policies::EvictionPolicy, reqs: &[Request]) -> usize {
    hits(policy, reqs).iter().filter(|h| !**h).count()
}
