//! Data sources: the table layout, the synthetic Criteo-shaped generator and its
//! samples. (Criteo TSV files are read by `trace::CriteoTsvReader`.)

mod batches;
mod layout;
mod synthetic;

pub use batches::{Rebatch, SyntheticBatches};
pub use layout::{TableLayout, CRITEO_CARDINALITIES, CRITEO_DENSE_FEATURES, CRITEO_MULTI_HOT};
pub(crate) use synthetic::mix64;
pub use synthetic::{DriftConfig, Sample, SyntheticConfig, SyntheticConfigError, SyntheticSource, SyntheticTrace};
