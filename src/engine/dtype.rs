//! Row precision: how a table stores its embedding values (`f32`, or `f16` / `bf16` at
//! half the bytes, as FBGEMM's `weights_precision`), and the conversions between the
//! stored form and the `f32` every computation runs in.
//!
//! Every tier, the store and the wire hold a row as 32-bit words (`f32` slices,
//! [`RowLayout::words`](super::RowLayout::words) of them). An `f32` table's value words
//! are its values. A half-precision table packs two values to a word: bits, not numbers,
//! value `2k` in the low half of word `k` and `2k + 1` in the high half (on the
//! little-endian machines Strata runs on, the same bytes as an array of 16-bit values),
//! a last odd value beside zero bits. The optimizer state follows as `f32` in every
//! precision, as FBGEMM keeps its momentum. Only this module reads or writes packed
//! values; everything else moves rows as words, so half-precision rows are moved and
//! stored at half the bytes of their values without any other part knowing.
//!
//! Decoding is exact. Encoding rounds to nearest even, or stochastically (FBGEMM's
//! `stochastic_rounding`): up or down to the two nearest representable values with
//! probabilities proportional to nearness, from noise that depends only on the row and
//! the step, so a tiered table and a flat table of the same precision still agree bit
//! for bit. [`StoredUpdate`] is the one way an optimizer update reaches a stored row.

use serde::{Deserialize, Serialize};

use super::{Optimizer, RowLayout};

/// How a table stores its embedding values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Dtype {
    #[default]
    F32,
    F16,
    Bf16,
}

impl Dtype {
    /// Every dtype, in the order of their codes.
    pub const ALL: [Dtype; 3] = [Dtype::F32, Dtype::F16, Dtype::Bf16];

    /// Bytes of one stored value.
    pub fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }

    /// As configs, table files' error messages and the Python package name it.
    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::Bf16 => "bf16",
        }
    }

    /// The dtype `name` names (`f32`, `f16`, `bf16`; FBGEMM's and TorchRec's `fp32`,
    /// `fp16` too), case-insensitive.
    pub fn from_name(name: &str) -> Option<Dtype> {
        match name.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" | "float" => Some(Dtype::F32),
            "f16" | "fp16" | "float16" | "half" => Some(Dtype::F16),
            "bf16" | "bfloat16" => Some(Dtype::Bf16),
            _ => None,
        }
    }

    /// The code a table file's header records.
    pub fn code(self) -> u32 {
        self as u32
    }

    pub fn from_code(code: u32) -> Option<Dtype> {
        Dtype::ALL.get(code as usize).copied()
    }

    /// Words (4 bytes each) that `dim` values take.
    pub fn value_words(self, dim: usize) -> usize {
        (dim * self.bytes()).div_ceil(4)
    }

    /// Reads the `out.len()` values of a stored row's value words `stored` into `out`.
    pub fn decode(self, stored: &[f32], out: &mut [f32]) {
        match self {
            Dtype::F32 => out.copy_from_slice(&stored[..out.len()]),
            Dtype::F16 => out.iter_mut().zip(halves(stored)).for_each(|(v, &h)| *v = f16_to_f32(h)),
            Dtype::Bf16 => out.iter_mut().zip(halves(stored)).for_each(|(v, &h)| *v = bf16_to_f32(h)),
        }
    }

    /// Stores `values` into the value words `stored` (which must hold them), rounding
    /// as `rounding` says (stochastically from `seed`, see [`noise_seed`]); an odd last
    /// value of a half-precision row leaves zero bits beside it.
    pub fn encode(self, values: &[f32], stored: &mut [f32], rounding: Rounding, seed: u64) {
        let round = |j: usize, v: f32| match rounding {
            Rounding::Nearest => round_nearest(self, v),
            Rounding::Stochastic => round_stochastic(self, v, noise(seed, j)),
        };
        match self {
            Dtype::F32 => stored[..values.len()].copy_from_slice(values),
            // The half crate's slice conversion: F16C, eight values an instruction.
            Dtype::F16 if rounding == Rounding::Nearest => {
                use half::slice::{HalfBitsSliceExt, HalfFloatSliceExt};
                let halves = halves_mut(&mut stored[..self.value_words(values.len())]);
                let (head, tail) = halves.split_at_mut(values.len());
                head.reinterpret_cast_mut::<half::f16>().convert_from_f32_slice(values);
                tail.fill(0);
            }
            Dtype::F16 | Dtype::Bf16 => {
                let words = self.value_words(values.len());
                let halves = halves_mut(&mut stored[..words]);
                for (j, (h, &v)) in halves.iter_mut().zip(values).enumerate() {
                    *h = round(j, v);
                }
                halves[values.len()..].fill(0);
            }
        }
    }
}

impl std::fmt::Display for Dtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How an `f32` result is written into a half-precision row (FBGEMM's
/// `stochastic_rounding`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rounding {
    /// To the nearest representable value, ties to even.
    #[default]
    Nearest,
    /// Up or down to the two nearest representable values, up with the probability
    /// the value's distance from the one below makes, from noise drawn from the row and
    /// the step ([`noise_seed`]) and the value's position.
    Stochastic,
}

/// The seed of the stochastic rounding of `row`'s update in the step whose batch starts
/// at `step_start`: it depends only on these, never on where the row lives.
pub fn noise_seed(row: u64, step_start: u64) -> u64 {
    crate::hash::mix64(row ^ crate::hash::mix64(step_start ^ 0x5354_5241_5441_5352))
}

/// Updates stored rows of one layout: `f32` rows in place; half-precision rows are
/// widened into a kept buffer, updated in `f32` by the same [`Optimizer`] call, and
/// narrowed back as `rounding` says (the state, `f32` already, is copied as it is).
#[derive(Clone, Debug)]
pub struct StoredUpdate {
    layout: RowLayout,
    rounding: Rounding,
    wide: Vec<f32>,
}

impl StoredUpdate {
    pub fn new(layout: RowLayout, rounding: Rounding) -> Self {
        let wide = if layout.dtype == Dtype::F32 { Vec::new() } else { vec![0.0; layout.dim + layout.state] };
        StoredUpdate { layout, rounding, wide }
    }

    /// Applies `row`'s summed gradient `grad` (and its
    /// [`Optimizer::gradient_sums`] value `sum`) to its stored words `stored`, in the
    /// step whose batch starts at `step_start`.
    #[inline]
    pub fn apply(&mut self, optimizer: &Optimizer, stored: &mut [f32], grad: &[f32], sum: f32, row: u64, step_start: u64) {
        let RowLayout { dim, dtype, .. } = self.layout;
        if dtype == Dtype::F32 {
            return optimizer.apply_row_with_sum(stored, grad, sum);
        }
        let values = self.layout.value_words();
        let (wide_values, wide_state) = self.wide.split_at_mut(dim);
        dtype.decode(&stored[..values], wide_values);
        wide_state.copy_from_slice(&stored[values..]);
        optimizer.apply_row_with_sum(&mut self.wide, grad, sum);
        let seed = match self.rounding {
            Rounding::Nearest => 0,
            Rounding::Stochastic => noise_seed(row, step_start),
        };
        dtype.encode(&self.wide[..dim], &mut stored[..values], self.rounding, seed);
        stored[values..].copy_from_slice(&self.wide[dim..]);
    }
}

/// The 16-bit values packed in `words`, two per word (the low half first).
#[inline(always)]
pub fn halves(words: &[f32]) -> &[u16] {
    // SAFETY: u16 needs less alignment than f32, the slice covers exactly the same
    // bytes, and every bit pattern is a valid u16. On a little-endian machine (the
    // only kind Strata builds for, see `lib.rs`), the u16 at 2k is the low half of
    // word k.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u16>(), words.len() * 2) }
}

/// [`halves`], to write.
#[inline(always)]
fn halves_mut(words: &mut [f32]) -> &mut [u16] {
    // SAFETY: as in `halves`; writing any u16 leaves every word a valid f32 bit
    // pattern (all patterns are).
    unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u16>(), words.len() * 2) }
}

/// An IEEE half as `f32`, exactly, without branches (so that loops over it vectorise):
/// normal values have their exponent re-biased, subnormals are scaled by a subtraction
/// that is exact, infinities and NaNs keep their payload.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let h = h as u32;
    let sign = (h & 0x8000) << 16;
    let shifted = (h & 0x7fff) << 13;
    let exponent = h & 0x7c00;
    let normal = shifted + (112 << 23);
    let subnormal = (f32::from_bits(shifted + (113 << 23)) - f32::from_bits(113 << 23)).to_bits();
    let special = shifted | 0x7f80_0000;
    let magnitude = if exponent == 0 {
        subnormal
    } else if exponent == 0x7c00 {
        special
    } else {
        normal
    };
    f32::from_bits(magnitude | sign)
}

/// A bfloat16 as `f32`: its bits are the high half of the `f32`'s.
#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

fn round_nearest(dtype: Dtype, v: f32) -> u16 {
    match dtype {
        Dtype::F16 => half::f16::from_f32(v).to_bits(),
        Dtype::Bf16 => half::bf16::from_f32(v).to_bits(),
        Dtype::F32 => unreachable!("f32 values are stored as they are"),
    }
}

fn to_f32(dtype: Dtype, h: u16) -> f32 {
    match dtype {
        Dtype::F16 => f16_to_f32(h),
        _ => bf16_to_f32(h),
    }
}

/// `v` rounded to one of the two representable values around it: up (away from zero)
/// when `noise` (uniform over `u32`) falls below the share of the gap `v` has covered.
/// Exact values, infinities and NaNs round to nearest.
fn round_stochastic(dtype: Dtype, v: f32, noise: u32) -> u16 {
    let nearest = round_nearest(dtype, v);
    let near = to_f32(dtype, nearest);
    if near == v || !v.is_finite() {
        return nearest;
    }
    // Sign and magnitude: the bits of the value toward zero, then one step away.
    let toward_zero = if near.abs() > v.abs() { nearest - 1 } else { nearest };
    let low = to_f32(dtype, toward_zero).abs();
    let high = to_f32(dtype, toward_zero + 1).abs();
    let share = ((v.abs() - low) as f64) / ((high - low) as f64);
    if (noise as f64) < share * (u32::MAX as f64 + 1.0) {
        toward_zero + 1
    } else {
        toward_zero
    }
}

/// Noise for value `j` of a row from its `seed`.
fn noise(seed: u64, j: usize) -> u32 {
    (crate::hash::mix64(seed.wrapping_add(j as u64)) >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_half_decodes_as_the_half_crate_does() {
        for bits in 0..=u16::MAX {
            let (ours, theirs) = (f16_to_f32(bits), half::f16::from_bits(bits).to_f32());
            assert!(ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()), "{bits:#06x}: {ours} vs {theirs}");
            let (ours, theirs) = (bf16_to_f32(bits), half::bf16::from_bits(bits).to_f32());
            assert!(ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()), "bf16 {bits:#06x}");
        }
    }

    #[test]
    fn values_pack_two_to_a_word_low_half_first_and_round_trip_when_representable() {
        let values = [1.0f32, -2.5, 0.125, 65504.0, -0.0];
        for dtype in [Dtype::F16, Dtype::Bf16] {
            let mut stored = vec![f32::from_bits(u32::MAX); dtype.value_words(values.len()) + 1];
            assert_eq!(dtype.value_words(values.len()), 3);
            dtype.encode(&values, &mut stored, Rounding::Nearest, 0);
            assert_eq!(stored[3].to_bits(), u32::MAX, "{dtype}: nothing written past the values");
            assert_eq!(stored[2].to_bits() >> 16, 0, "{dtype}: the odd last value leaves zero bits");
            assert_eq!((stored[0].to_bits() & 0xffff) as u16, round_nearest(dtype, 1.0));
            let mut back = [0f32; 5];
            dtype.decode(&stored, &mut back);
            let expected: Vec<f32> = values.iter().map(|&v| to_f32(dtype, round_nearest(dtype, v))).collect();
            assert_eq!(back.map(f32::to_bits).to_vec(), expected.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
        }
        assert_eq!(Dtype::F16.value_words(128), 64);
        assert_eq!(Dtype::F32.value_words(128), 128);
    }

    #[test]
    fn nearest_rounding_ties_to_even() {
        // 1 + 2^-11 lies halfway between 1 and the next half, 1 + 2^-10: even is 1.
        assert_eq!(round_nearest(Dtype::F16, 1.0 + 2f32.powi(-11)), half::f16::ONE.to_bits());
        assert_eq!(round_nearest(Dtype::F16, 1.0 + 3.0 * 2f32.powi(-11)), half::f16::from_f32(1.0 + 2.0 * 2f32.powi(-10)).to_bits());
        assert_eq!(round_nearest(Dtype::Bf16, 1.0 + 2f32.powi(-8)), half::bf16::ONE.to_bits());
    }

    #[test]
    fn stochastic_rounding_picks_a_neighbour_in_proportion_to_nearness() {
        for dtype in [Dtype::F16, Dtype::Bf16] {
            for v in [1.0f32 + 0.25 * 2f32.powi(-10), -3.3, 1e-6, -7.77e-3] {
                let nearest = round_nearest(dtype, v);
                let (mut up, mut down, n) = (0u32, 0u32, 20_000u64);
                let mut neighbours = std::collections::BTreeSet::new();
                for step in 0..n {
                    let mut stored = [0f32];
                    dtype.encode(&[v], &mut stored, Rounding::Stochastic, noise_seed(7, step));
                    let h = stored[0].to_bits() as u16;
                    neighbours.insert(h);
                    if to_f32(dtype, h).abs() > v.abs() {
                        up += 1;
                    } else {
                        down += 1;
                    }
                }
                assert_eq!(neighbours.len(), 2, "{dtype} {v}: both neighbours occur: {neighbours:?}");
                assert!(neighbours.contains(&nearest));
                let (lo, hi) = neighbours.iter().map(|&h| to_f32(dtype, h).abs()).fold((f32::MAX, 0f32), |(a, b), x| (a.min(x), b.max(x)));
                let share = ((v.abs() - lo) / (hi - lo)) as f64;
                let observed = up as f64 / (up + down) as f64;
                // 20,000 draws: the standard error is at most 0.0036; 0.02 is 5.5 of them.
                assert!((observed - share).abs() < 0.02, "{dtype} {v}: up {observed:.4} of the time, expected {share:.4}");
            }
            let mut a = [0f32; 4];
            let mut b = [0f32; 4];
            let values = [0.1f32, 0.2, 0.3, 0.4];
            dtype.encode(&values, &mut a, Rounding::Stochastic, noise_seed(3, 64));
            dtype.encode(&values, &mut b, Rounding::Stochastic, noise_seed(3, 64));
            assert_eq!(a.map(f32::to_bits), b.map(f32::to_bits), "the same row and step round alike");
        }
    }

    #[test]
    fn exact_values_infinities_and_nans_round_to_nearest_stochastically_too() {
        for dtype in [Dtype::F16, Dtype::Bf16] {
            for v in [1.0f32, -0.5, 0.0, f32::INFINITY, f32::NEG_INFINITY] {
                for step in 0..100 {
                    let mut stored = [0f32];
                    dtype.encode(&[v], &mut stored, Rounding::Stochastic, noise_seed(1, step));
                    assert_eq!(stored[0].to_bits() as u16, round_nearest(dtype, v), "{dtype} {v}");
                }
            }
            let mut stored = [0f32];
            dtype.encode(&[f32::NAN], &mut stored, Rounding::Stochastic, noise_seed(1, 1));
            assert!(to_f32(dtype, stored[0].to_bits() as u16).is_nan());
        }
    }

    #[test]
    fn names_and_codes_round_trip() {
        for dtype in Dtype::ALL {
            assert_eq!(Dtype::from_name(dtype.name()), Some(dtype));
            assert_eq!(Dtype::from_code(dtype.code()), Some(dtype));
        }
        assert_eq!(Dtype::from_name("FP16"), Some(Dtype::F16));
        assert_eq!(Dtype::from_name("int8"), None);
        assert_eq!(Dtype::from_code(3), None);
    }
}
