//! capacity planning: hardware profiles of the tiers (and, measured on this machine, `strata calibrate`).

pub mod profile;
