//! Strata: a tiered-memory embedding engine for DLRM (GPU HBM, host DRAM, NVMe), and a
//! laboratory for the cache policies that place rows in those tiers.
//!
//! This library holds the engine, the data sources, traces, the policy-lab simulator,
//! the capacity planner, reports, and the DLRM model and its experiment runner (on
//! libtorch through tch, behind the `torch` feature); the `strata` command line on top of
//! it lives in `src/bin/strata/`, the policies themselves in `strata-policies`.

// Rows are moved as 32-bit words whose halves hold half-precision values in
// little-endian order (`engine::dtype`).
#[cfg(not(target_endian = "little"))]
compile_error!("Strata stores half-precision rows little-endian and builds for little-endian targets only");

pub mod config;
pub mod data;
pub mod engine;
#[cfg(feature = "torch")]
pub mod experiment;
pub mod hash;
pub mod interrupt;
pub mod lab;
pub mod model;
pub mod plan;
pub mod progress;
pub mod report;
pub mod sim;
pub mod trace;
