//! Admission policies (always, TinyLFU-style frequency threshold, probabilistic) and the
//! counting sketch they share with W-TinyLFU.

use serde::{Deserialize, Serialize};

use crate::config::PolicyConfigError;

/// How misses are admitted into a tier. Serialised with a `kind` tag, e.g.
/// `{ kind = "frequency", threshold = 2 }`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum AdmissionConfig {
    /// Admit every miss.
    #[default]
    Always,
    /// TinyLFU-style doorkeeping (Einziger, Friedman and Manes, "TinyLFU: A Highly
    /// Efficient Cache Admission Policy", ACM ToS 2017): every request is counted in a
    /// counting sketch, and a miss is admitted once its estimated count (including this
    /// request) reaches `threshold`. After `reset_interval` recorded requests all counters
    /// are halved, so old popularity fades.
    Frequency {
        /// Minimum estimated count for admission (1 admits everything).
        #[serde(default = "default_threshold")]
        threshold: u32,
        /// Number of counters in the sketch (rounded up to at least 64).
        #[serde(default = "default_counters")]
        counters: usize,
        /// Requests between halvings of all counters (0: never).
        #[serde(default = "default_reset_interval")]
        reset_interval: u64,
    },
    /// Admit each miss independently with `probability` (deterministic for a `seed`).
    Probabilistic {
        #[serde(default = "default_probability")]
        probability: f64,
        #[serde(default)]
        seed: u64,
    },
}

fn default_threshold() -> u32 {
    2
}
fn default_counters() -> usize {
    1 << 20
}
fn default_reset_interval() -> u64 {
    10 << 20
}
fn default_probability() -> f64 {
    0.5
}

/// Names accepted by [`AdmissionConfig::from_name`].
pub const ADMISSION_NAMES: &[&str] = &["always", "frequency", "probabilistic"];

impl AdmissionConfig {
    /// Parses a CLI name: `always`, `frequency[:threshold]` (alias `freq`, `tinylfu`),
    /// `probabilistic[:probability]` (alias `prob`).
    pub fn from_name(name: &str) -> Result<AdmissionConfig, PolicyConfigError> {
        let (base, param) = match name.split_once(':') {
            Some((b, p)) => (b.trim(), Some(p.trim())),
            None => (name.trim(), None),
        };
        let base = base.to_ascii_lowercase();
        let cfg = match base.as_str() {
            "always" | "all" => {
                if param.is_some() {
                    return Err(PolicyConfigError::bad(&base, "takes no parameter"));
                }
                AdmissionConfig::Always
            }
            "frequency" | "freq" | "tinylfu" => AdmissionConfig::Frequency {
                threshold: match param {
                    Some(p) => p.parse().map_err(|_| PolicyConfigError::bad(&base, format!("threshold `{p}` is not an integer")))?,
                    None => default_threshold(),
                },
                counters: default_counters(),
                reset_interval: default_reset_interval(),
            },
            "probabilistic" | "prob" => AdmissionConfig::Probabilistic {
                probability: match param {
                    Some(p) => p.parse().map_err(|_| PolicyConfigError::bad(&base, format!("probability `{p}` is not a number")))?,
                    None => default_probability(),
                },
                seed: 0,
            },
            _ => return Err(PolicyConfigError::UnknownName { name: name.to_string(), valid: ADMISSION_NAMES }),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks the parameters.
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        match self {
            AdmissionConfig::Always => Ok(()),
            AdmissionConfig::Frequency { counters, .. } => {
                if *counters == 0 || *counters > (u32::MAX as usize) {
                    Err(PolicyConfigError::bad("frequency", "counters must be in 1..=u32::MAX"))
                } else {
                    Ok(())
                }
            }
            AdmissionConfig::Probabilistic { probability, .. } => {
                if (0.0..=1.0).contains(probability) {
                    Ok(())
                } else {
                    Err(PolicyConfigError::bad("probabilistic", "probability must be in [0, 1]"))
                }
            }
        }
    }

    /// Name used in reports, e.g. `frequency(2)`.
    pub fn label(&self) -> String {
        match self {
            AdmissionConfig::Always => "always".to_string(),
            AdmissionConfig::Frequency { threshold, .. } => format!("frequency({threshold})"),
            AdmissionConfig::Probabilistic { probability, .. } => {
                format!("probabilistic({probability})")
            }
        }
    }

    /// Builds the admission filter.
    pub fn build(&self) -> Result<Admission, PolicyConfigError> {
        Admission::new(self)
    }
}

#[derive(Clone, Debug)]
enum Filter {
    Always,
    Frequency { threshold: u32, sketch: CountingSketch, reset_interval: u64, until_reset: u64 },
    Probabilistic { threshold: u64, state: u64 },
}

/// An admission filter built from an [`AdmissionConfig`]; see [`crate::replay`].
#[derive(Clone, Debug)]
pub struct Admission {
    filter: Filter,
}

impl Default for Admission {
    fn default() -> Self {
        Admission { filter: Filter::Always }
    }
}

impl Admission {
    /// Builds the filter for `config` (errors on bad parameters).
    pub fn new(config: &AdmissionConfig) -> Result<Admission, PolicyConfigError> {
        config.validate()?;
        let filter = match *config {
            AdmissionConfig::Always => Filter::Always,
            AdmissionConfig::Frequency { threshold, counters, reset_interval } => Filter::Frequency {
                threshold,
                sketch: CountingSketch::new(counters.max(64), 4),
                reset_interval,
                until_reset: reset_interval,
            },
            AdmissionConfig::Probabilistic { probability, seed } => Filter::Probabilistic {
                // Admit when a uniform u64 is below p * 2^64 (p = 1 admits everything).
                threshold: if probability >= 1.0 { u64::MAX } else { (probability * 18_446_744_073_709_551_616.0) as u64 },
                state: splitmix64(seed),
            },
        };
        Ok(Admission { filter })
    }

    /// An admission filter that admits every miss.
    pub fn always() -> Admission {
        Admission::default()
    }

    /// Whether every miss is admitted (lets the replay loop skip [`Admission::observe`]).
    pub fn admits_everything(&self) -> bool {
        matches!(self.filter, Filter::Always)
    }

    /// Records a request for `id` (`resident`: it is a hit) and returns whether it may be
    /// served by the policy: always for a resident row, per the filter for a miss.
    pub fn observe(&mut self, id: u64, resident: bool) -> bool {
        match &mut self.filter {
            Filter::Always => true,
            Filter::Frequency { threshold, sketch, reset_interval, until_reset } => {
                let estimate = sketch.add(CountingSketch::hash(id));
                if *reset_interval != 0 {
                    *until_reset -= 1;
                    if *until_reset == 0 {
                        *until_reset = *reset_interval;
                        sketch.halve();
                    }
                }
                resident || estimate >= *threshold
            }
            Filter::Probabilistic { threshold, state } => {
                if resident {
                    return true;
                }
                *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let r = splitmix64(*state);
                *threshold == u64::MAX || r < *threshold
            }
        }
    }
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

const PRIME64_1: u64 = 0x9E37_79B1_85EB_CA87;
const PRIME64_2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const PRIME64_3: u64 = 0x1656_67B1_9E37_79F9;
const PRIME64_4: u64 = 0x85EB_CA77_C2B2_AE63;
const PRIME64_5: u64 = 0x27D4_EB2F_1656_67C5;

/// XXH64 of the 8 little-endian bytes of `key` (the hash libCacheSim's sketch uses).
#[inline]
pub(crate) fn xxh64_u64(key: u64, seed: u64) -> u64 {
    let mut h = seed.wrapping_add(PRIME64_5).wrapping_add(8);
    let k = key.wrapping_mul(PRIME64_2).rotate_left(31).wrapping_mul(PRIME64_1);
    h ^= k;
    h = h.rotate_left(27).wrapping_mul(PRIME64_1).wrapping_add(PRIME64_4);
    h ^= h >> 33;
    h = h.wrapping_mul(PRIME64_2);
    h ^= h >> 29;
    h = h.wrapping_mul(PRIME64_3);
    h ^ (h >> 32)
}

const SEED0: u64 = 0x1234_5678;
const SEED1: u64 = 0x1234_4321;

/// A counting Bloom filter / single-array count-min sketch: `hashes` counters per key,
/// picked by double hashing (`h_i = a + i * b mod counters`, with `a` and `b` 32-bit XXH64
/// values); every counter of a key is incremented on `add`, the estimate is their
/// minimum, and `halve` implements TinyLFU's reset. This is the layout of libCacheSim's
/// `minimalIncrementCBF` (used by its `WTinyLFU`), reproduced so W-TinyLFU agrees with it.
#[derive(Clone, Debug)]
pub(crate) struct CountingSketch {
    counters: Vec<u32>,
    hashes: u32,
    /// `x % counters.len()` without a division (see [`FastMod`]).
    modulo: FastMod,
}

/// The two 32-bit XXH64 values that pick a key's counters in a [`CountingSketch`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct KeyHash {
    a: u32,
    b: u32,
}

/// Exact `x % d` for 32-bit `x` by two multiplications (Lemire, Kaser and Kurz, "Faster
/// Remainder by Direct Computation", 2019): a sketch probe costs about as much as its
/// hash instead of a 20-40 cycle division.
#[derive(Clone, Copy, Debug)]
struct FastMod {
    d: u32,
    m: u64,
}

impl FastMod {
    fn new(d: u32) -> Self {
        assert!(d > 0);
        FastMod { d, m: (u64::MAX / u64::from(d)).wrapping_add(1) }
    }

    #[inline(always)]
    fn rem(self, x: u32) -> u32 {
        let low = self.m.wrapping_mul(u64::from(x));
        ((u128::from(low) * u128::from(self.d)) >> 64) as u32
    }
}

impl CountingSketch {
    pub(crate) fn new(counters: usize, hashes: u32) -> Self {
        assert!(counters > 0 && counters <= u32::MAX as usize && hashes > 0);
        CountingSketch { counters: vec![0; counters], hashes, modulo: FastMod::new(counters as u32) }
    }

    /// Sized like libCacheSim's sketch for `entries` keys at false-positive rate `error`.
    pub(crate) fn for_entries(entries: usize, error: f64) -> Self {
        let bpe = -error.ln() / 0.480_453_013_918_201;
        let hashes = (std::f64::consts::LN_2 * bpe).ceil() as u32;
        let mut counters = ((bpe * entries as f64).ceil()).min(i32::MAX as f64) as usize;
        if counters < hashes as usize {
            counters = 2 * hashes as usize;
        }
        CountingSketch::new(counters, hashes)
    }

    /// `key`'s two hashes, which pick its counters: a policy that keeps them with a
    /// resident row probes for it without hashing again.
    #[inline(always)]
    pub(crate) fn hash(key: u64) -> KeyHash {
        KeyHash { a: xxh64_u64(key, SEED0) as u32, b: xxh64_u64(key, SEED1) as u32 }
    }

    /// The counter indices of a key hashed to `h`, in probe order.
    #[inline(always)]
    fn probes(&self, h: KeyHash) -> impl Iterator<Item = usize> {
        let modulo = self.modulo;
        (0..self.hashes).map(move |i| modulo.rem(h.a.wrapping_add(i.wrapping_mul(h.b))) as usize)
    }

    /// The estimated count of the key hashed to `h`.
    #[inline]
    pub(crate) fn estimate(&self, h: KeyHash) -> u32 {
        self.probes(h).map(|x| self.counters[x]).min().unwrap_or(u32::MAX)
    }

    /// Counts one occurrence of the key hashed to `h`; returns the new estimate.
    #[inline]
    pub(crate) fn add(&mut self, h: KeyHash) -> u32 {
        let mut min = u32::MAX;
        for x in self.probes(h) {
            let c = &mut self.counters[x];
            *c = c.saturating_add(1);
            min = min.min(*c);
        }
        min
    }

    /// Counts one occurrence of the key hashed to `h`; returns its estimate from before
    /// the count, the
    /// same as [`estimate`](Self::estimate) just before: a counter probed twice is read
    /// the second time after its first increment, so its smallest read is still its old
    /// value. One pass over the counters instead of two.
    #[inline]
    pub(crate) fn add_returning_previous(&mut self, h: KeyHash) -> u32 {
        let mut min = u32::MAX;
        for x in self.probes(h) {
            let c = &mut self.counters[x];
            min = min.min(*c);
            *c = c.saturating_add(1);
        }
        min
    }

    /// Starts fetching the counters of the key hashed to `h` into cache: the sketch outgrows the CPU caches
    /// long before the policy's lists do, and its probes are scattered.
    #[inline]
    pub(crate) fn prefetch(&self, h: KeyHash) {
        for x in self.probes(h) {
            crate::prefetch_element(&self.counters, x);
        }
    }

    /// Halves every counter.
    pub(crate) fn halve(&mut self) {
        for c in &mut self.counters {
            *c >>= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xxh64_known_value() {
        // XXH64 of eight zero bytes with seed 0 (reference value from the xxHash suite).
        assert_eq!(xxh64_u64(0, 0), 0x34C9_6ACD_CADB_1BBB);
    }

    #[test]
    fn fast_modulo_is_the_remainder() {
        let mut x = 0x9E37_79B9u32;
        for d in [1u32, 2, 3, 7, 10, 1000, 1_462_813, 0x7FFF_FFFF, u32::MAX] {
            let m = FastMod::new(d);
            for probe in [0, 1, d - 1, d.wrapping_add(1), u32::MAX, u32::MAX - 1] {
                assert_eq!(m.rem(probe), probe % d, "{probe} % {d}");
            }
            for _ in 0..10_000 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                assert_eq!(m.rem(x), x % d, "{x} % {d}");
            }
        }
    }

    #[test]
    fn sketch_counts() {
        let mut s = CountingSketch::for_entries(1000, 0.001);
        assert_eq!(s.hashes, 10);
        for _ in 0..5 {
            s.add(CountingSketch::hash(42));
        }
        assert_eq!(s.estimate(CountingSketch::hash(42)), 5);
        s.halve();
        assert_eq!(s.estimate(CountingSketch::hash(42)), 2);
        // A sketch small enough that keys share counters and probe some twice.
        let mut small = CountingSketch::new(7, 5);
        for key in 0..200u64 {
            let key = CountingSketch::hash(key % 23);
            let before = small.estimate(key);
            let mut copy = small.clone();
            copy.add(key);
            assert_eq!(small.add_returning_previous(key), before, "key {key:?}");
            assert_eq!(small.counters, copy.counters, "key {key:?}");
        }
    }
}
