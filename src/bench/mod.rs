//! The side-by-side benchmarks behind `strata bench`: each runs Strata next to a peer
//! or a machine limit in the same run and prints the ratio.

pub mod gather;
pub mod lookup;
pub mod simulate;
pub mod storage;
