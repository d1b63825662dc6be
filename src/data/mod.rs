//! Data sources: the table layout, the synthetic Criteo-shaped generator and its
//! samples, the files a run can train on instead (Criteo TSV through
//! `trace::CriteoTsvReader`, the MLPerf NumPy layout), and batches for the engine.

mod batches;
mod layout;
mod mlperf;
pub mod npy;
mod source;
mod synthetic;

pub use batches::{Rebatch, SyntheticBatches};
pub use layout::{TableLayout, CRITEO_CARDINALITIES, CRITEO_DENSE_FEATURES, CRITEO_MULTI_HOT};
pub use mlperf::{count_of, day_files, log_count, MlperfDay, MlperfDayWriter};
pub use source::{
    write_synthetic, BatchStream, CriteoTsvSpec, DataError, DataSource, FileFormat, MlperfNumpySpec, ReadFailure, SampleReader,
};
pub use synthetic::{DriftConfig, Sample, ScanConfig, SyntheticConfig, SyntheticConfigError, SyntheticSource, SyntheticTrace};
