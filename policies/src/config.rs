//! Serde-able policy configuration: parsing CLI names, labels, validation and building
//! a boxed [`EvictionPolicy`].

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Arc, Belady, Clock, EvictionPolicy, Fifo, Lfu, LookaheadBelady, Lru, Resident, S3Fifo, Sieve, StaticPlacement, WTinyLfu};

/// Which eviction policy to run, with its parameters. Serialised with a `kind` tag, e.g.
/// `{ kind = "lookahead_belady", window = 4096 }`; every parameter has a default. The CLI
/// names (`s3fifo`, `tinylfu`, `lookahead`) are accepted as aliases of the kinds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    Lru,
    Fifo,
    Clock {
        /// Bits of the reference counter (1..=8); 1 is classic CLOCK.
        #[serde(default = "default_clock_bits")]
        bits: u8,
    },
    Lfu {
        /// Requests between halvings of all counts: absent = 10 x capacity, 0 = no aging
        /// (plain LFU, as libCacheSim's `LFU`).
        #[serde(default)]
        aging_period: Option<u64>,
    },
    Arc,
    #[serde(alias = "s3fifo")]
    S3Fifo {
        /// Small (probationary) FIFO as a fraction of the capacity.
        #[serde(default = "default_small_ratio")]
        small_ratio: f64,
        /// Ghost FIFO size as a fraction of the capacity.
        #[serde(default = "default_ghost_ratio")]
        ghost_ratio: f64,
        /// Hits in the small queue needed to move to main instead of being evicted.
        #[serde(default = "default_move_to_main_threshold")]
        move_to_main_threshold: u32,
    },
    Sieve,
    #[serde(alias = "tinylfu", alias = "wtinylfu")]
    WTinyLfu {
        /// LRU window as a fraction of the capacity.
        #[serde(default = "default_window_ratio")]
        window_ratio: f64,
        /// Protected segment as a fraction of the main (SLRU) cache.
        #[serde(default = "default_protected_ratio")]
        protected_ratio: f64,
    },
    Belady,
    #[serde(alias = "lookahead")]
    LookaheadBelady {
        /// Requests of future visible to the policy.
        #[serde(default = "default_window")]
        window: u64,
    },
    Static {
        /// Requests counted (all misses) before the hottest rows are pinned.
        #[serde(default = "default_profile_requests")]
        profile_requests: u64,
    },
}

fn default_clock_bits() -> u8 {
    1
}
fn default_small_ratio() -> f64 {
    0.1
}
fn default_ghost_ratio() -> f64 {
    0.9
}
fn default_move_to_main_threshold() -> u32 {
    2
}
fn default_window_ratio() -> f64 {
    0.01
}
fn default_protected_ratio() -> f64 {
    0.8
}
fn default_window() -> u64 {
    4096
}
fn default_profile_requests() -> u64 {
    100_000
}

/// A bad policy name, parameter or capacity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyConfigError {
    /// The name is not one of `valid`.
    UnknownName { name: String, valid: &'static [&'static str] },
    /// A parameter is malformed or out of range.
    BadParameter { policy: String, message: String },
    /// A cache needs at least one row.
    ZeroCapacity,
}

impl PolicyConfigError {
    pub(crate) fn bad(policy: &str, message: impl Into<String>) -> Self {
        PolicyConfigError::BadParameter { policy: policy.to_string(), message: message.into() }
    }
}

impl fmt::Display for PolicyConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PolicyConfigError::UnknownName { name, valid } => {
                write!(f, "unknown policy `{name}` (valid: {})", valid.join(", "))
            }
            PolicyConfigError::BadParameter { policy, message } => write!(f, "{policy}: {message}"),
            PolicyConfigError::ZeroCapacity => write!(f, "capacity must be at least one row"),
        }
    }
}

impl std::error::Error for PolicyConfigError {}

fn parse<T: std::str::FromStr>(policy: &str, what: &str, v: &str) -> Result<T, PolicyConfigError> {
    v.parse().map_err(|_| PolicyConfigError::bad(policy, format!("invalid {what} `{v}`")))
}

impl PolicyConfig {
    /// CLI names accepted by [`PolicyConfig::from_name`].
    pub const NAMES: &'static [&'static str] =
        &["lru", "fifo", "clock", "lfu", "arc", "s3fifo", "sieve", "tinylfu", "belady", "lookahead", "static"];

    /// Parses a CLI name with an optional `:parameter` for policies that have one main
    /// parameter: `clock:BITS`, `lfu:AGING_PERIOD` (0 = no aging), `s3fifo:SMALL_RATIO`,
    /// `tinylfu:WINDOW_RATIO`, `lookahead:WINDOW`, `static:PROFILE_REQUESTS`.
    pub fn from_name(name: &str) -> Result<PolicyConfig, PolicyConfigError> {
        let (base, param) = match name.split_once(':') {
            Some((b, p)) => (b.trim(), Some(p.trim())),
            None => (name.trim(), None),
        };
        let base = base.to_ascii_lowercase();
        let b = base.as_str();
        let no_param = |cfg: PolicyConfig| match param {
            None => Ok(cfg),
            Some(_) => Err(PolicyConfigError::bad(b, "takes no parameter")),
        };
        let cfg = match b {
            "lru" => no_param(PolicyConfig::Lru)?,
            "fifo" => no_param(PolicyConfig::Fifo)?,
            "arc" => no_param(PolicyConfig::Arc)?,
            "sieve" => no_param(PolicyConfig::Sieve)?,
            "belady" | "min" => no_param(PolicyConfig::Belady)?,
            "clock" => {
                PolicyConfig::Clock { bits: param.map(|p| parse(b, "bit count", p)).transpose()?.unwrap_or_else(default_clock_bits) }
            }
            "lfu" => PolicyConfig::Lfu { aging_period: param.map(|p| parse(b, "aging period", p)).transpose()? },
            "s3fifo" | "s3_fifo" => PolicyConfig::S3Fifo {
                small_ratio: param.map(|p| parse(b, "small ratio", p)).transpose()?.unwrap_or_else(default_small_ratio),
                ghost_ratio: default_ghost_ratio(),
                move_to_main_threshold: default_move_to_main_threshold(),
            },
            "tinylfu" | "wtinylfu" | "w_tiny_lfu" => PolicyConfig::WTinyLfu {
                window_ratio: param.map(|p| parse(b, "window ratio", p)).transpose()?.unwrap_or_else(default_window_ratio),
                protected_ratio: default_protected_ratio(),
            },
            "lookahead" | "lookahead_belady" => {
                PolicyConfig::LookaheadBelady { window: param.map(|p| parse(b, "window", p)).transpose()?.unwrap_or_else(default_window) }
            }
            "static" => PolicyConfig::Static {
                profile_requests: param.map(|p| parse(b, "profile request count", p)).transpose()?.unwrap_or_else(default_profile_requests),
            },
            _ => return Err(PolicyConfigError::UnknownName { name: name.to_string(), valid: Self::NAMES }),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The CLI name of this policy.
    pub fn name(&self) -> &'static str {
        match self {
            PolicyConfig::Lru => "lru",
            PolicyConfig::Fifo => "fifo",
            PolicyConfig::Clock { .. } => "clock",
            PolicyConfig::Lfu { .. } => "lfu",
            PolicyConfig::Arc => "arc",
            PolicyConfig::S3Fifo { .. } => "s3fifo",
            PolicyConfig::Sieve => "sieve",
            PolicyConfig::WTinyLfu { .. } => "tinylfu",
            PolicyConfig::Belady => "belady",
            PolicyConfig::LookaheadBelady { .. } => "lookahead",
            PolicyConfig::Static { .. } => "static",
        }
    }

    /// The name used in reports: the CLI name, with non-default parameters in
    /// parentheses (always for `lookahead(W)` and `static(P)`).
    pub fn label(&self) -> String {
        match *self {
            PolicyConfig::Clock { bits } if bits != default_clock_bits() => {
                format!("clock({bits})")
            }
            PolicyConfig::Lfu { aging_period: Some(0) } => "lfu(no-aging)".to_string(),
            PolicyConfig::Lfu { aging_period: Some(p) } => format!("lfu(aging={p})"),
            PolicyConfig::S3Fifo { small_ratio, ghost_ratio, move_to_main_threshold }
                if small_ratio != default_small_ratio()
                    || ghost_ratio != default_ghost_ratio()
                    || move_to_main_threshold != default_move_to_main_threshold() =>
            {
                format!("s3fifo({small_ratio},{ghost_ratio},{move_to_main_threshold})")
            }
            PolicyConfig::WTinyLfu { window_ratio, protected_ratio }
                if window_ratio != default_window_ratio() || protected_ratio != default_protected_ratio() =>
            {
                format!("tinylfu({window_ratio},{protected_ratio})")
            }
            PolicyConfig::LookaheadBelady { window } => format!("lookahead({window})"),
            PolicyConfig::Static { profile_requests } => format!("static({profile_requests})"),
            _ => self.name().to_string(),
        }
    }

    /// Whether the policy reads [`crate::Request::next_access`] (the Belady family).
    pub fn needs_future(&self) -> bool {
        matches!(self, PolicyConfig::Belady | PolicyConfig::LookaheadBelady { .. })
    }

    /// Checks the parameters (capacity-independent).
    pub fn validate(&self) -> Result<(), PolicyConfigError> {
        let ratio = |policy: &str, what: &str, v: f64, max_inclusive: bool| {
            let ok = v.is_finite() && v >= 0.0 && if max_inclusive { v <= 1.0 } else { v < 1.0 };
            if ok {
                Ok(())
            } else {
                let range = if max_inclusive { "[0, 1]" } else { "[0, 1)" };
                Err(PolicyConfigError::bad(policy, format!("{what} must be in {range}, got {v}")))
            }
        };
        match *self {
            PolicyConfig::Clock { bits } if !(1..=8).contains(&bits) => {
                Err(PolicyConfigError::bad("clock", format!("bits must be in 1..=8, got {bits}")))
            }
            PolicyConfig::S3Fifo { small_ratio, ghost_ratio, .. } => {
                ratio("s3fifo", "small_ratio", small_ratio, false)?;
                if !(0.0..=16.0).contains(&ghost_ratio) {
                    return Err(PolicyConfigError::bad("s3fifo", format!("ghost_ratio must be in [0, 16], got {ghost_ratio}")));
                }
                Ok(())
            }
            PolicyConfig::WTinyLfu { window_ratio, protected_ratio } => {
                ratio("tinylfu", "window_ratio", window_ratio, false)?;
                ratio("tinylfu", "protected_ratio", protected_ratio, true)
            }
            _ => Ok(()),
        }
    }

    /// Whether the policy admits every row it misses while it has room and evicts only
    /// when full (and never on a hit): at a capacity of every row of the table it then
    /// never evicts, and answers every request as [`Resident`] does (tests/resident.rs).
    /// Not W-TinyLFU (a hit may evict through its segments' rounding) nor static
    /// placement (it admits only its hot set).
    pub fn evicts_only_when_full(&self) -> bool {
        !matches!(self, PolicyConfig::WTinyLfu { .. } | PolicyConfig::Static { .. })
    }

    /// Builds the policy for a cache of `capacity` rows of a table of `rows` rows: a
    /// [`Resident`] when the cache holds every row and the policy evicts only when full
    /// (the same answers, no eviction order kept), else [`PolicyConfig::build`]'s.
    pub fn build_for_rows(&self, capacity: usize, rows: u64) -> Result<Box<dyn EvictionPolicy>, PolicyConfigError> {
        if capacity as u64 >= rows && self.evicts_only_when_full() && capacity > 0 {
            self.validate()?;
            return Ok(Box::new(Resident::new(capacity)));
        }
        self.build(capacity)
    }

    /// Builds the policy for a cache of `capacity` rows.
    pub fn build(&self, capacity: usize) -> Result<Box<dyn EvictionPolicy>, PolicyConfigError> {
        if capacity == 0 {
            return Err(PolicyConfigError::ZeroCapacity);
        }
        if capacity >= u32::MAX as usize / 4 {
            return Err(PolicyConfigError::bad(self.name(), format!("capacity {capacity} is too large")));
        }
        self.validate()?;
        Ok(match *self {
            PolicyConfig::Lru => Box::new(Lru::new(capacity)),
            PolicyConfig::Fifo => Box::new(Fifo::new(capacity)),
            PolicyConfig::Clock { bits } => Box::new(Clock::new(capacity, bits)),
            PolicyConfig::Lfu { aging_period } => {
                let period = aging_period.unwrap_or((capacity as u64).saturating_mul(10));
                Box::new(Lfu::new(capacity, period))
            }
            PolicyConfig::Arc => Box::new(Arc::new(capacity)),
            PolicyConfig::S3Fifo { small_ratio, ghost_ratio, move_to_main_threshold } => {
                Box::new(S3Fifo::new(capacity, small_ratio, ghost_ratio, move_to_main_threshold))
            }
            PolicyConfig::Sieve => Box::new(Sieve::new(capacity)),
            PolicyConfig::WTinyLfu { window_ratio, protected_ratio } => Box::new(WTinyLfu::new(capacity, window_ratio, protected_ratio)),
            PolicyConfig::Belady => Box::new(Belady::new(capacity)),
            PolicyConfig::LookaheadBelady { window } => Box::new(LookaheadBelady::new(capacity, window)),
            PolicyConfig::Static { profile_requests } => Box::new(StaticPlacement::new(capacity, profile_requests)),
        })
    }
}
