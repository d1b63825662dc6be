//! `strata-policies`: eviction and admission policies over dense row ids, and the
//! trace-replay core that drives them. No I/O, no GPU, no torch: policies only decide
//! *which* rows live in a tier, never what the rows hold.
//!
//! Every policy works on dense `u64` row ids (the engine maps `(table, row)` keys to a
//! global dense index once, the simulator maps trace keys the same way), so per-row
//! metadata lives in arrays indexed by id instead of hash maps.
//!
//! Rows can be pinned ([`EvictionPolicy::pin`]): the engine pins the rows of the batch
//! being placed, so that a batch never evicts its own rows.

pub mod admission;
pub mod config;
pub mod mrc;
pub mod replay;

mod arc;
mod belady;
mod clock;
mod fifo;
mod lfu;
mod list;
mod lookahead;
mod lru;
mod pins;
mod resident;
mod s3fifo;
mod sieve;
mod static_placement;
mod tinylfu;

pub use admission::{Admission, AdmissionConfig};
pub use arc::Arc;
pub use belady::Belady;
pub use clock::Clock;
pub use config::{PolicyConfig, PolicyConfigError};
pub use fifo::Fifo;
pub use lfu::Lfu;
pub use lookahead::LookaheadBelady;
pub use lru::Lru;
pub use replay::{replay, ReplayStats};
pub use resident::Resident;
pub use s3fifo::S3Fifo;
pub use sieve::Sieve;
pub use static_placement::StaticPlacement;
pub use tinylfu::WTinyLfu;

/// `next_access` value of a request whose row is never requested again (or whose next
/// use is not known to the caller).
pub const NEVER: u64 = u64::MAX;

/// One request for a row, as a policy sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    /// Dense row id.
    pub id: u64,
    /// Virtual time: the position of this request in the stream, starting at 0.
    pub time: u64,
    /// Virtual time of the next request for the same row, or [`NEVER`]. Only the
    /// future-aware policies (Belady, lookahead Belady) read it.
    pub next_access: u64,
}

impl Request {
    /// A request whose future is unknown.
    pub fn new(id: u64, time: u64) -> Self {
        Request { id, time, next_access: NEVER }
    }
}

/// What one [`EvictionPolicy::access`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// The row was resident before the request.
    pub hit: bool,
    /// On a miss: the row was admitted and is now resident.
    pub inserted: bool,
    /// The resident row that left to make room, if any (the engine writes it back when
    /// dirty). With unit-size rows at most one row leaves per request.
    pub evicted: Option<u64>,
}

/// An eviction policy over a cache of `capacity` rows of equal size.
///
/// Operations are O(1) or amortised O(1) (O(log n) for the future-aware policies).
/// A policy never holds more than `capacity` rows.
pub trait EvictionPolicy: Send {
    /// Short name, as accepted by [`PolicyConfig::from_name`].
    fn name(&self) -> &'static str;
    /// Capacity in rows.
    fn capacity(&self) -> usize;
    /// Rows resident now.
    fn len(&self) -> usize;
    /// Whether no row is resident.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Whether `id` is resident. Does not count as an access.
    fn contains(&self, id: u64) -> bool;
    /// Serves one request: a hit updates the policy's metadata, a miss admits the row
    /// (evicting one if the cache is full). A miss that finds the cache full of pinned
    /// rows is not admitted and evicts nothing ([`Access::default`]); see
    /// [`pin`](Self::pin).
    fn access(&mut self, req: &Request) -> Access;
    /// Drops `id` if resident (no eviction is counted); returns whether it was.
    fn remove(&mut self, id: u64) -> bool;

    /// Pins `id` until [`unpin_all`](Self::unpin_all): while pinned, a resident `id` is
    /// never chosen as a victim (an id pinned before it is admitted is pinned once it
    /// is). Each policy passes over pinned rows in its own way and takes the next
    /// candidate it would have taken; when every resident row is pinned, a miss that
    /// needs room is not admitted. [`remove`](Self::remove) still drops a pinned row.
    /// O(1); with nothing pinned every policy answers exactly as it would without pins.
    fn pin(&mut self, id: u64);
    /// Unpins every pinned row. O(rows pinned).
    fn unpin_all(&mut self);

    /// Hints that `id` is requested soon, so its metadata can be fetched into cache
    /// ahead of the `access`. Does nothing unless a policy overrides it.
    #[inline]
    fn prefetch(&self, _id: u64) {}

    /// The second stage of [`prefetch`](Self::prefetch), a few requests later: `id`'s
    /// map entry is in cache by then, so the slot it names (the row's list node and
    /// metadata, a dependent load) can be fetched too. Does nothing unless overridden.
    #[inline]
    fn prefetch_slot(&self, _id: u64) {}

    /// Serves `requests` in order, counting misses and evictions into `stats`. One
    /// call per chunk keeps the per-request `access` statically dispatched (and
    /// inlined) even behind `dyn EvictionPolicy`, and lets the policy prefetch the
    /// metadata of the requests a little ahead (map entries first, then the slots they
    /// name), whose cache misses dominate otherwise.
    fn access_batch(&mut self, requests: &[Request], stats: &mut ReplayStats) {
        const AHEAD: usize = 16;
        const SLOT_AHEAD: usize = AHEAD / 2;
        stats.requests += requests.len() as u64;
        for (i, req) in requests.iter().enumerate() {
            if let Some(ahead) = requests.get(i + AHEAD) {
                self.prefetch(ahead.id);
            }
            if let Some(ahead) = requests.get(i + SLOT_AHEAD) {
                self.prefetch_slot(ahead.id);
            }
            let access = self.access(req);
            stats.misses += u64::from(!access.hit);
            stats.evictions += u64::from(access.evicted.is_some());
        }
    }
}

/// Asks the CPU to bring `slice[index]` into cache (a no-op off x86-64 or out of
/// bounds). Used to hide the cache misses of id-indexed tables on hot paths.
#[inline(always)]
pub fn prefetch_element<T>(slice: &[T], index: usize) {
    #[cfg(target_arch = "x86_64")]
    if index < slice.len() {
        // SAFETY: the pointer is inside `slice`; a prefetch never faults in any case.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(slice.as_ptr().add(index) as *const i8);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (slice, index);
}
