//! Strata: a tiered-memory embedding engine for DLRM (GPU HBM, host DRAM, NVMe), and a
//! laboratory for the cache policies that place rows in those tiers.
//!
//! This crate holds the data sources, traces, the policy-lab simulator, reports, the
//! DLRM model (on libtorch through tch, behind the `torch` feature) and the CLI; the
//! policies themselves live in `strata-policies`.

#[cfg(feature = "torch")]
pub mod checkpoint;
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
