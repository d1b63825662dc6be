//! Strata: a tiered-memory embedding engine for DLRM (GPU HBM, host DRAM, NVMe), and a
//! laboratory for the cache policies that place rows in those tiers.
//!
//! This library holds the engine, the data sources, traces, the policy-lab simulator,
//! the capacity planner, reports, and the DLRM model and its experiment runner (on
//! libtorch through tch, behind the `torch` feature); the `strata` command line on top of
//! it lives in `src/bin/strata/`, the policies themselves in `strata-policies`.

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
