//! The DLRM model whose embedding tables live in the tiered engine: its configuration,
//! the tch model, its dense optimizers and its training and serving loops (with the
//! `torch` feature), publishing from training to serving replicas (`publish`), and
//! the evaluation metrics.

pub mod config;
#[cfg(feature = "torch")]
pub mod dlrm;
pub mod metrics;
#[cfg(feature = "torch")]
pub mod optimizer;
#[cfg(feature = "torch")]
pub mod publish;
#[cfg(feature = "torch")]
pub mod train;

pub use config::{DenseOptimizer, Interaction, ModelConfig, ModelConfigError, ModelDevice};
#[cfg(feature = "torch")]
pub use dlrm::{Dlrm, ModelError, TrainStep};
pub use metrics::{log_loss, roc_auc};
